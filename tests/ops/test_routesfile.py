"""
Tests for L{revproxy.ops.routesfile}: routes from a file, reloaded when it
changes, a bad file keeping the last good table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.routesfile import RoutesFile, readRoutesFile
from revproxy.routing import RouteTable, parseUpstream
from revproxy.routing.documents import DocumentError
from revproxy.routing.resolver import RouteResolver

U0 = parseUpstream("127.0.0.1:4000")
U1 = parseUpstream("127.0.0.1:4001")


class RoutesFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="revproxy-test-")
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        self.path = Path(directory) / "routes.json"
        self.write('{"a": ["127.0.0.1:4000"], "b": ["127.0.0.1:4000"]}')
        self.resolver = RouteResolver(RouteTable.fromMapping(readRoutesFile(self.path)))
        self.clock = Clock()
        self.source = RoutesFile(self.path, self.resolver, self.clock)
        self.lines: list[str] = []

        def observer(event: LogEvent) -> None:
            if event.get("log_namespace", "").startswith("revproxy."):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def write(self, text: str) -> None:
        self.path.write_text(text)
        # A distinct modification time, as a later write would have.
        st = os.stat(self.path)
        later = st.st_mtime_ns + 1_000_000_000 * (1 + getattr(self, "_writes", 0))
        self._writes = getattr(self, "_writes", 0) + 1
        os.utime(self.path, ns=(later, later))

    def test_changeAppliedPerHost(self) -> None:
        """A changed file is applied within a second as a per-host diff; unchanged hosts keep their route."""
        self.source.startService()
        routeB = self.resolver.table.routes["b"]  # type: ignore[union-attr]
        self.write('{"a": ["127.0.0.1:4001"], "b": ["127.0.0.1:4000"]}')
        self.clock.advance(1)
        table = self.resolver.table
        assert table is not None
        self.assertEqual(table.routes["a"].upstreams, (U1,))
        self.assertIs(table.routes["b"], routeB)
        self.assertEqual(
            self.lines,
            [f"route a: +127.0.0.1:4001 -127.0.0.1:4000 (routes file {self.path})"],
        )
        self.source.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badFileKeepsTable(self) -> None:
        """A bad file keeps the last good table and logs one line with the error and its line, once."""
        self.source.startService()
        before = self.resolver.table
        self.write('{\n  "a": ["127.0.0.1:4000"],\n  "b": ["nope"]\n}')
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertIs(self.resolver.table, before)
        self.assertEqual(len(self.lines), 1, self.lines)
        self.assertIn("host 'b'", self.lines[0])
        self.assertIn("(line 3)", self.lines[0])
        self.assertIn("keeping the last good routes", self.lines[0])
        self.source.stopService()

    def test_removedHostAndMissingFile(self) -> None:
        """A host left out of the file goes; a file that vanishes keeps the table."""
        self.write('{"a": ["127.0.0.1:4000"]}')
        self.assertEqual(self.source.reload(), f"routes file {self.path} reloaded: 1 hosts changed")
        table = self.resolver.table
        assert table is not None
        self.assertEqual(sorted(table.routes), ["a"])
        self.path.unlink()
        self.assertIn("not reloaded", self.source.reload())
        self.assertIs(self.resolver.table, table)

    def test_unreadable(self) -> None:
        """readRoutesFile of a missing file raises a DocumentError naming it."""
        e = self.assertRaises(DocumentError, readRoutesFile, self.path.parent / "nope.json")
        self.assertIn("nope.json: cannot read", str(e))
