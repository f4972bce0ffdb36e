"""
Tests for L{revproxy.ops.routelog} and the route-change lines of
L{revproxy.routing.resolver}: one line per changed host, bursts summed up.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.routelog import RouteChangeLog
from revproxy.routing import RouteTable, parseUpstream
from revproxy.routing.resolver import RouteResolver, describeChange

U0 = parseUpstream("127.0.0.1:4000")
U1 = parseUpstream("127.0.0.1:4001")


class Captured(SynchronousTestCase):
    def capture(self) -> list[str]:
        lines: list[str] = []

        def observer(event: LogEvent) -> None:
            if event.get("log_namespace", "").startswith("revproxy."):
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return lines


class DescribeTests(SynchronousTestCase):
    def test_words(self) -> None:
        """A change is worded as added, removed and re-weighted upstreams."""
        self.assertEqual(describeChange((U0,), (U1,)), "+127.0.0.1:4001 -127.0.0.1:4000")
        heavy = parseUpstream("127.0.0.1:4000", 3)
        self.assertEqual(describeChange((U0,), (heavy,)), "~127.0.0.1:4000(weight 3)")
        self.assertEqual(describeChange((U0, U1), (U1, U0)), "")


class ResolverLogTests(Captured):
    def test_oneLinePerHost(self) -> None:
        """Applying a change logs one line per host whose upstreams changed, with its cause."""
        resolver = RouteResolver(RouteTable.fromMapping({"blog.example.com": (U0,), "a": (U0,)}))
        lines = self.capture()
        resolver.apply(
            {"blog.example.com": (U1,), "a": (U0,), "new": (U0,), "gone": None},
            cause="revision 42",
        )
        self.assertEqual(
            lines,
            [
                "route blog.example.com: +127.0.0.1:4001 -127.0.0.1:4000 (revision 42)",
                "route new: +127.0.0.1:4000 (revision 42)",
            ],
        )

    def test_removedHost(self) -> None:
        """A host that goes is logged with its upstreams removed."""
        resolver = RouteResolver(RouteTable.fromMapping({"a": (U0,)}))
        lines = self.capture()
        resolver.apply({"a": None})
        self.assertEqual(lines, ["route a: -127.0.0.1:4000"])

    def test_firstTableNotPerHost(self) -> None:
        """The first table is logged as loaded, not host by host."""
        resolver = RouteResolver()
        lines = self.capture()
        resolver.apply({"a": (U0,)}, cause="revision 1")
        self.assertEqual(lines, ["route table loaded: 1 hosts"])


class RateLimitTests(Captured):
    def test_burstSummed(self) -> None:
        """Beyond the burst, changes are summed up in one line at the end of the second."""
        clock = Clock()
        changeLog = RouteChangeLog(clock, burst=2)
        lines = self.capture()
        for i in range(1000):
            changeLog(f"h{i}", "+127.0.0.1:4000", f"revision {i}")
        self.assertEqual(len(lines), 2)
        clock.advance(1)
        self.assertEqual(
            lines[2:],
            ["route changes: 998 more hosts changed in the last 1s (up to revision 999)"],
        )
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(5)
        changeLog("x", "+127.0.0.1:4000", None)
        self.assertEqual(lines[3:], ["route x: +127.0.0.1:4000"])

    def test_stopFlushes(self) -> None:
        """Stopping logs the pending summary at once and leaves no timer."""
        clock = Clock()
        changeLog = RouteChangeLog(clock, burst=0)
        lines = self.capture()
        changeLog("a", "+127.0.0.1:4000", None)
        changeLog.stop()
        self.assertEqual(len(lines), 1)
        self.assertEqual(clock.getDelayedCalls(), [])
