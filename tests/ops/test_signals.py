"""
Tests for L{revproxy.ops.signals}: SIGHUP reloads, logs one line and never
stops the proxy.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.signals import HangupService, reopenLogFiles


class _Reactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[Any] = []

    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:
        self.fromThread.append(lambda: f(*a, **kw))


class HangupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handlers: dict[int, Any] = {signal.SIGHUP: "previous"}

        def install(signum: int, handler: Any) -> Any:
            previous = self.handlers.get(signum)
            self.handlers[signum] = handler
            return previous

        self.install = install
        self.lines: list[str] = []

        def observer(event: LogEvent) -> None:
            if event.get("log_namespace", "").startswith("revproxy."):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_installsAndRestores(self) -> None:
        """The service handles SIGHUP while running and puts the previous handler back."""
        service = HangupService(_Reactor(), [], self.install)
        service.startService()
        self.assertNotEqual(self.handlers[signal.SIGHUP], "previous")
        service.stopService()
        self.assertEqual(self.handlers[signal.SIGHUP], "previous")

    def test_reloadOneLine(self) -> None:
        """A SIGHUP runs every reloader on the reactor and logs one line saying what they did."""
        reactor = _Reactor()
        service = HangupService(
            reactor, [lambda: "routes file f reloaded: 1 hosts changed", lambda: "x"], self.install
        )
        service.startService()
        self.handlers[signal.SIGHUP](signal.SIGHUP, None)
        self.assertEqual(self.lines, [])  # nothing in the signal handler itself
        [call] = reactor.fromThread
        call()
        self.assertEqual(
            self.lines,
            ["SIGHUP: routes file f reloaded: 1 hosts changed; x; still serving every connection"],
        )
        self.assertEqual(service.reloads, 1)
        service.stopService()

    def test_failingReloader(self) -> None:
        """A reloader that raises is logged; the others still run."""
        def boom() -> str:
            raise RuntimeError("boom")

        service = HangupService(_Reactor(), [boom, lambda: "done"], self.install)
        service.reload()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("done", self.lines[-1])

    def test_reopenLogFiles(self) -> None:
        """The log-file reloader reopens each file and names it."""
        class File:
            path = "/var/log/revproxy.log"
            reopened = 0

            def reopen(self) -> None:
                self.reopened += 1

        f = File()
        self.assertEqual(reopenLogFiles(lambda: [f])(), "reopened log file /var/log/revproxy.log")
        self.assertEqual(f.reopened, 1)
        self.assertEqual(reopenLogFiles(lambda: [])(), "")

    def test_nothingToDo(self) -> None:
        """Reloaders with nothing to do leave the line saying so."""
        service = HangupService(_Reactor(), [lambda: ""], self.install)
        service.reload()
        self.assertEqual(self.lines, ["SIGHUP: nothing to reload; still serving every connection"])
