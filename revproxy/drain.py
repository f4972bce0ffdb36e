# -*- test-case-name: tests.test_drain -*-
"""
Draining: on shutdown, let the requests in flight finish, for at most the
drain timeout.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from revproxy.proxy import RoutingProxyResource

__all__ = ["DrainService"]

log = Logger()


class DrainService(Service):
    """
    A service whose C{stopService} fires once the proxy has no request in
    flight or C{timeout} seconds have passed, whichever comes first.  The
    listeners stop accepting at the same time (they are its siblings in the
    same L{MultiService}), so twistd exits once the drain is over.
    """

    name = "drain"

    def __init__(
        self, resource: RoutingProxyResource, clock: IReactorTime, timeout: float
    ) -> None:
        self._resource = resource
        self._clock = clock
        self.timeout = timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d: Deferred[None] = Deferred()
        inflight = self._resource.inflight
        if inflight == 0:
            d.callback(None)
            return d
        log.info(
            "draining: waiting for {inflight} requests, at most {timeout} seconds",
            inflight=inflight,
            timeout=self.timeout,
        )

        def timedOut() -> None:
            if not d.called:
                log.warn(
                    "drain timeout: {inflight} requests still in flight",
                    inflight=self._resource.inflight,
                )
                d.callback(None)

        timer = self._clock.callLater(self.timeout, timedOut)

        def idle() -> None:
            if not d.called:
                timer.cancel()
                log.info("drained: no request in flight")
                d.callback(None)

        self._resource.whenIdle(idle)
        return d
