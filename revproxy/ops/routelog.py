# -*- test-case-name: tests.ops.test_routelog -*-
"""
The route-change log: one info line per host whose upstreams change, as
L{revproxy.routing.resolver.logRouteChange} words it, at most C{burst} lines
a second; a larger burst (a re-list of thousands of hosts, an import) is
summed up in one line at the end of its second.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from revproxy.routing.resolver import logRouteChange

__all__ = ["RouteChangeLog"]

log = Logger()


class RouteChangeLog:
    """
    A L{revproxy.routing.resolver.ChangeLog} that limits itself to C{burst}
    lines per C{interval} seconds and sums up the rest.
    """

    def __init__(
        self, clock: IReactorTime, burst: int = 20, interval: float = 1.0
    ) -> None:
        self._clock = clock
        self.burst = burst
        self.interval = interval
        self._windowStart = -interval
        self._logged = 0
        self._suppressed = 0
        self._lastCause: str | None = None
        self._flush: IDelayedCall | None = None

    def __call__(self, host: str, change: str, cause: str | None) -> None:
        now = self._clock.seconds()
        if now - self._windowStart >= self.interval and self._flush is None:
            self._windowStart = now
            self._logged = 0
        if self._logged < self.burst:
            self._logged += 1
            logRouteChange(host, change, cause)
            return
        self._suppressed += 1
        self._lastCause = cause
        if self._flush is None:
            delay = max(0.0, self._windowStart + self.interval - now)
            self._flush = self._clock.callLater(delay, self._summary)

    def _summary(self) -> None:
        self._flush = None
        count, self._suppressed = self._suppressed, 0
        cause = f" (up to {self._lastCause})" if self._lastCause else ""
        log.info(
            "route changes: {count} more hosts changed in the last "
            "{interval:g}s{cause}",
            count=count,
            interval=self.interval,
            cause=cause,
        )
        self._windowStart = self._clock.seconds()
        self._logged = 0

    def stop(self) -> None:
        """
        Log the pending summary now (the proxy is stopping).
        """
        if self._flush is not None:
            self._flush.cancel()
            self._summary()
