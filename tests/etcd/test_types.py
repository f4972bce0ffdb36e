"""
Tests for L{revproxy.etcd.types}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.types import prefixRangeEnd


class PrefixRangeEndTests(SynchronousTestCase):
    """
    Tests for L{prefixRangeEnd}.
    """

    def test_range_end(self) -> None:
        """
        The range end increments the last byte below 0xff, dropping 0xff bytes
        (txaioetcd's KeySet gets 0xff wrong).
        """
        self.assertEqual(prefixRangeEnd(b"/hosts/"), b"/hosts0")
        self.assertEqual(prefixRangeEnd(b"a\xff"), b"b")
        self.assertRaises(ValueError, prefixRangeEnd, b"")
        self.assertRaises(ValueError, prefixRangeEnd, b"\xff\xff")
