# -*- test-case-name: tests.forward.test_attempts -*-
"""
The exchange's attempts: which upstream a request goes to after a failure,
how long it may wait for one, and the answer when none is left.

A request is retried on another usable upstream of its host when it failed
before any response byte arrived and the proxy can send it again: nothing
was sent (a failed connection), or its body is empty or within
C{--retry-buffer}.  C{--retries} bounds the attempts, each logged with its
upstream.  With C{--retry-window}, a request that finds no upstream left
waits up to that long from its arrival, trying the host again after a short
backoff.  A host with no usable upstream, or none that could be connected
to, answers 503 with C{Retry-After}; a request whose attempts failed in
another way (a reset, a malformed answer) on a host with usable upstreams
left answers 502.

L{Attempts} is the part of L{revproxy.forward.exchange.Exchange} that does
this; the exchange holds the state it reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.server import Request

from revproxy.deadline import Deadline
from revproxy.routing import HostRoute, Upstream
from revproxy.upstream.state import HostState, UpstreamState

if TYPE_CHECKING:
    from revproxy.forward.bodies import Body
    from revproxy.forward.resource import RoutingProxyResource

__all__ = ["Attempts"]

log = Logger()


class Attempts:
    """
    The retry and hold phase of an exchange.
    """

    __slots__ = (
        "_state", "_upstream", "_probe", "_attempts", "_tried", "_holds", "_timer", "_deadline"
    )

    _resource: RoutingProxyResource
    _request: Request
    _host: HostState
    _route: HostRoute
    _state: UpstreamState | None
    _upstream: Upstream | None
    _tried: list[UpstreamState] | None
    _timer: IDelayedCall | None
    _deadline: Deadline | None
    _body: Body
    _done: bool
    _start: float
    _key: int
    _attempts: int
    _probe: bool
    _holds: int

    def connect(self, fresh: bool) -> None:
        raise NotImplementedError()

    def pick(self) -> None:
        raise NotImplementedError()

    def fail(self, code: int, message: bytes) -> None:
        raise NotImplementedError()

    def use(self, state: UpstreamState) -> None:
        """
        Send the request to C{state}'s upstream.
        """
        self._state = state
        self._upstream = state.upstream
        self._probe = state.probing
        self._attempts += 1
        state.inflight += 1
        self.connect(fresh=False)

    def release(self, state: UpstreamState) -> None:
        """
        The request is done with C{state}'s upstream.
        """
        state.inflight -= 1
        if self._probe:
            self._probe = False
            state.probing = False

    def retryElsewhere(self, state: UpstreamState, reason: str) -> bool:
        """
        After a failure that left the request replayable: send it to
        another usable upstream not yet tried, within the C{--retries}
        budget, or hold it (C{--retry-window}) if no usable upstream is left
        untried.  Return whether the request goes on.
        """
        tried = self._tried
        if tried is None:
            tried = self._tried = []
        tried.append(state)
        resource = self._resource
        now = resource.reactor.seconds()
        left = resource.retry.failover(self._host.usable(now), tried)
        if not left:
            return self.hold(now)
        if self._attempts > resource.retries:
            return False
        nextState = self._host.pickFrom(left, now, self._key)
        resource.retried(reason)
        log.info(
            "retrying {method} for {host} on upstream {upstream} "
            "(attempt {attempt}, after {reason} on {failed})",
            method=self._request.method.decode("latin-1"),
            host=self._route.host,
            upstream=str(nextState.upstream),
            attempt=self._attempts + 1,
            reason=reason,
            failed=str(state.upstream),
        )
        self.use(nextState)
        return True

    def stopTimer(self) -> None:
        """
        Stop waiting: for a usable upstream (a hold), or for the response
        head (the response timeout, the connection's deadline).
        """
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            deadline.expired = None
            deadline.cancel()

    def hold(self, now: float) -> bool:
        """
        No upstream is left to try: if the C{--retry-window} has time left,
        try the host again after a short backoff (50 ms, doubling up to
        0.5 s) and return True.
        """
        resource = self._resource
        left = self._start + resource.retryWindow - now
        if left <= 0:
            return False
        delay = min(0.05 * 2**self._holds, 0.5, left)
        self._holds += 1
        self._tried = None
        self._attempts = 0
        self._timer = resource.reactor.callLater(delay, self._held)
        return True

    def _held(self) -> None:
        self._timer = None
        if self._done:
            return
        self._resource.retried("window")
        self.pick()

    def noUpstream(self, now: float) -> None:
        """
        The host has no usable upstream: hold the request, or answer 503
        with C{Retry-After}.
        """
        if not self.hold(now):
            self.unavailable(now)

    def unavailable(self, now: float) -> None:
        """
        Answer 503 with C{Retry-After}: the host has no usable upstream.
        """
        self._request.responseHeaders.setRawHeaders(
            b"retry-after", [b"%d" % (self._host.retryAfter(now),)]
        )
        self.fail(503, b"no usable upstream for this host")

    def gaveUp(self, message: bytes, unreachable: bool = False) -> None:
        """
        Every attempt failed: 503 if the host now has no usable upstream, or
        if C{unreachable} (no upstream of the host left untried could be
        connected to: the host is down, not broken), else 502.
        """
        now = self._resource.reactor.seconds()
        tried = self._tried or []
        if unreachable and all(s in tried for s in self._host.usable(now)):
            self.unavailable(now)
        elif self._host.allFailing(now, self._resource.states.rules.maxFails):
            self.unavailable(now)
        else:
            self.fail(502, message)
