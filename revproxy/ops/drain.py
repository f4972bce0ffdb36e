# -*- test-case-name: tests.ops.test_drain -*-
"""
Draining: on shutdown, let the requests in flight finish, for at most the
drain timeout, and deliver their responses before the process exits.
"""

from __future__ import annotations


from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from revproxy._compat import clearExitSignal
from revproxy.forward.resource import RoutingProxyResource
from revproxy.http.server import ProxySite

__all__ = ["DrainService"]

log = Logger()


class DrainService(Service):
    """
    A service whose C{stopService} fires once the proxy has no request in
    flight and every client connection has been closed gracefully (its
    buffered response written), or once C{timeout} seconds have passed,
    whichever comes first.  The listeners stop accepting at the same time
    (they are its siblings in the same L{MultiService}), and twistd exits
    once the drain is over.

    A drained shutdown on C{SIGTERM} is a clean exit: the process exits 0,
    not by re-raising the signal as twistd otherwise does, because that is
    what supervisor and systemd units expect of a graceful stop.
    """

    name = "drain"

    def __init__(
        self,
        resource: RoutingProxyResource,
        site: ProxySite,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        self._resource = resource
        self._site = site
        self._clock = clock
        self.timeout = timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d: Deferred[None] = Deferred()
        timer: IDelayedCall | None = None

        def done(_: object = None) -> None:
            if d.called:
                return
            if timer is not None and timer.active():
                timer.cancel()
            clearExitSignal(self._clock)
            d.callback(None)

        def timedOut() -> None:
            tunnels = self._resource.tunnels.closeAll()
            if tunnels:
                log.warn("drain timeout: {tunnels} tunnels closed", tunnels=tunnels)
            if self._resource.inflight:
                log.warn(
                    "drain timeout: {inflight} requests still in flight are cut off",
                    inflight=self._resource.inflight,
                )
            else:
                log.warn("drain timeout: client connections did not close in time")
            done()

        def idle() -> None:
            if d.called:
                return
            if waited:
                log.info("drained: no request in flight")
            # Then open tunnels (counted apart from requests) may end.
            self._resource.tunnels.whenEmpty(closeConnections)

        def closeConnections() -> None:
            self._site.closeConnections().addCallback(done)

        inflight = self._resource.inflight
        waited = inflight > 0
        if waited:
            log.info(
                "draining: waiting for {inflight} requests, at most {timeout} seconds",
                inflight=inflight,
                timeout=self.timeout,
            )
        timer = self._clock.callLater(self.timeout, timedOut)
        self._resource.whenIdle(idle)
        return d
