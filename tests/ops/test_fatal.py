"""
Tests for L{revproxy.ops.fatal}: one line, the reactor stopped, exit 1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.fatal import exitOnError


class _Reactor:
    def __init__(self, running: bool) -> None:
        self.running = running
        self.stopped = 0
        self.whenRunning: list[Any] = []

    def stop(self) -> None:
        if not self.running:
            raise ReactorNotRunning()
        self.stopped += 1

    def callWhenRunning(self, f: Any) -> None:
        self.whenRunning.append(f)


class ExitOnErrorTests(SynchronousTestCase):
    def test_oneLineStopExit1(self) -> None:
        """The first error logs one line, stops the reactor and exits 1 at exit; later ones are ignored."""
        lines: list[str] = []

        def observer(event: LogEvent) -> None:
            if event.get("log_namespace", "").startswith("revproxy."):
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        registered: list[Any] = []
        exits: list[int] = []
        reactor = _Reactor(running=True)
        fatal = exitOnError(reactor, registered.append, exits.append)
        fatal("revproxy: broken")
        fatal("revproxy: again")
        self.assertEqual(lines, ["revproxy: broken"])
        self.assertEqual(reactor.stopped, 1)
        [handler] = registered
        handler()
        self.assertEqual(exits, [1])

    def test_notRunningYet(self) -> None:
        """Before the reactor runs, it is stopped as soon as it does."""
        reactor = _Reactor(running=False)
        exitOnError(reactor, lambda f: None, lambda c: None)("revproxy: x")
        self.assertEqual(len(reactor.whenRunning), 1)
