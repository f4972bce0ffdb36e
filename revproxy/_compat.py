# -*- test-case-name: tests.test_compat -*-
"""
Every use of a private name of Twisted, treq or txaioetcd, in one place.

A private name can change in any release of the library that owns it.
Each one used here is used for a reason given beside it, where no public
API does the job, and each is pinned by a test in C{tests.test_compat}
that fails when the library changes it, so that an upgrade breaks one
named test instead of the proxy.  Nothing else in revproxy imports or
touches a private name of another project: C{tests.test_layout} checks.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver, LogPublisher
from twisted.python.failure import Failure

__all__ = [
    "clearExitSignal",
    "publisherObservers",
    "waitingProcessMonitor",
]


# --------------------------------------------------------------------------
# Twisted
#
# (Each helper below says which private name it touches and why.)


def clearExitSignal(reactor: Any) -> None:
    """
    Make twistd exit 0 after a drained C{SIGTERM} instead of re-raising the
    signal.

    Private name: C{_exitSignal}, where Twisted's reactors record the signal
    that stopped them (C{twisted.internet.base._ISupportsExitSignalCapturing})
    and which twistd's runner reads after the reactor stops, to kill itself
    with the same signal.  No public API says "this stop was clean"; a
    supervisor or systemd unit expects exit status 0 from a graceful stop.
    Reactors and clocks without the attribute are left alone.
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


def publisherObservers(publisher: LogPublisher) -> list[ILogObserver]:
    """
    The observers of C{publisher}, in order.

    Private name: C{LogPublisher._observers}.  L{LogPublisher} has no public
    way to list its observers, and twistd's own text observer is not
    reachable from a plugin; C{--log-format json} must remove it to replace
    it.
    """
    observers: list[ILogObserver] = list(publisher._observers)
    return observers


def waitingProcessMonitor() -> type[Any]:
    """
    A subclass of L{ProcessMonitor} whose C{stopService} fires once every
    child has exited (the stock one returns before they have), and which
    tells its C{exitObservers} of each exit.

    Private name: C{ProcessMonitor._monitoredProcessExited}, the method the
    monitor's process protocols call when a child exits.  It is the only
    place that learns of an exit; no public hook exists.

    Made on first use: importing C{twisted.runner.procmon} imports the
    global reactor (its constructor's default), which only the composition
    root may pick.
    """
    global _WaitingProcessMonitor
    if _WaitingProcessMonitor is not None:
        return _WaitingProcessMonitor
    from twisted.runner.procmon import ProcessMonitor

    class WaitingProcessMonitor(ProcessMonitor):  # type: ignore[misc]
        def __init__(self, reactor: Any) -> None:
            super().__init__(reactor)
            self._exitWaiters: list[Deferred[None]] = []
            self.exitObservers: list[Callable[[str, Failure | None], None]] = []

        def _monitoredProcessExited(
            self, name: str, reason: Failure | None = None
        ) -> None:
            super()._monitoredProcessExited(name, reason)
            for observer in list(self.exitObservers):
                observer(name, reason)
            if not self.protocols and self._exitWaiters:
                waiters, self._exitWaiters = self._exitWaiters, []
                for d in waiters:
                    d.callback(None)

        def stopService(self) -> Deferred[None]:  # type: ignore[override]
            super().stopService()
            if not self.protocols:
                return succeed(None)
            d: Deferred[None] = Deferred()
            self._exitWaiters.append(d)
            return d

    _WaitingProcessMonitor = WaitingProcessMonitor
    return WaitingProcessMonitor


_WaitingProcessMonitor: type[Any] | None = None


# --------------------------------------------------------------------------
# txaioetcd and treq
#
# txaioetcd 18.10.2 is the etcd library the project is built on.  Its
# request types and response parsers are sound, its client and watch are not
# (see revproxy.etcd.client); the private names it keeps its request
# assemblers and parsers under are reached through the helpers below.
