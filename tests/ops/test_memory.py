"""
Tests for L{revproxy.ops.memory}.
"""

from __future__ import annotations

import platform

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.memory import tuneMalloc


class TuneMallocTests(SynchronousTestCase):
    def test_glibc(self) -> None:
        """
        On glibc the thresholds are set, as often as asked.
        """
        if platform.libc_ver()[0] != "glibc":
            raise self.skipTest("not glibc")
        self.assertTrue(tuneMalloc())
        self.assertTrue(tuneMalloc())
