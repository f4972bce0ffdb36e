"""
Tests for L{revproxy.ctl.main}: the composition root.
"""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ctl.main import main


class MainTests(SynchronousTestCase):
    def test_usageError(self) -> None:
        """A bad argument exits 2 with one line on stderr, before any I/O."""
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)
        e = self.assertRaises(SystemExit, main, ["add", "bad host", "h:1"])
        self.assertEqual(e.code, 2)
        self.assertEqual(err.getvalue(), "revproxyctl: invalid host 'bad host'\n")

    def test_badImportFile(self) -> None:
        """An invalid import document exits 2 before etcd is contacted."""
        err = io.StringIO()
        sys = __import__("sys")
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdin", io.StringIO('{"h": ["nope"]}'))
        e = self.assertRaises(SystemExit, main, ["--etcd", "http://127.0.0.1:1", "import", "-"])
        self.assertEqual(e.code, 2)
        self.assertIn("<stdin>: host 'h', upstream #1", err.getvalue())
