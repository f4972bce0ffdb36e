# -*- test-case-name: tests.upstream.test_health -*-
"""
Active health checks (C{--health-path}, or an upstream's etcd value that
names a health path): every upstream in some route is
checked with C{GET PATH} every interval (with jitter), on a connection of
its own made with the pool's endpoint settings (connect timeout, TLS
verification) and never shared with a client's request.

C{rise} passes in a row mark a down upstream up, C{fall} failures in a row
mark an up one down; a 2xx or 3xx status is a pass.  An upstream's etcd
value may override the settings (C{{"health": {"path": "/ready",
"interval": 2}}}).  L{HealthChecker} is a route observer added after the
L{revproxy.upstream.state.UpstreamStates} registry: checks start as
upstreams appear in routes and stop when they leave every route; an
upstream that stays keeps its check and its state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from revproxy.routing.address import HealthCheck, Upstream
from revproxy.routing.table import HostRoute
from revproxy.upstream.connection import UpstreamConnection
from revproxy.upstream.pool import UpstreamPool
from revproxy.upstream.state import UpstreamState, UpstreamStates

__all__ = ["HealthChecker", "HealthSettings"]

log = Logger()


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """
    The settings of one upstream's check: the proxy's options with the
    upstream's overrides applied.
    """

    path: str | None = None
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3

    def overriddenBy(self, health: HealthCheck | None) -> HealthSettings:
        """
        These settings with the fields C{health} sets replaced.
        """
        if health is None:
            return self
        return HealthSettings(
            path=health.path or self.path,
            interval=health.interval or self.interval,
            timeout=health.timeout or self.timeout,
            rise=health.rise or self.rise,
            fall=health.fall or self.fall,
        )


class _Check:
    """
    The periodic check of one upstream; it is the response receiver of its
    check connection.
    """

    def __init__(
        self,
        checker: HealthChecker,
        upstream: Upstream,
        state: UpstreamState,
        settings: HealthSettings,
    ) -> None:
        self.checker = checker
        self.upstream = upstream
        self.state = state
        self.settings = settings
        self.passes = 0
        self.fails = 0
        self.initial = state.down
        self._timer: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._cancel: Callable[[], None] | None = None
        self._conn: UpstreamConnection | None = None
        self._code = 0

    def schedule(self, first: bool = False) -> None:
        interval = self.settings.interval
        rng = self.checker.rng
        delay = rng.uniform(0, interval) if first else interval * rng.uniform(0.9, 1.1)
        self._timer = self.checker.clock.callLater(delay, self.run)

    def run(self) -> None:
        self._timer = None
        try:
            self._code = 0
            self._deadline = self.checker.clock.callLater(
                self.settings.timeout, self.timedOut
            )
            self._cancel = self.checker.pool.dedicatedConnection(
                self.upstream, self.connected, self.connectFailed
            )
        except Exception:
            log.failure("health check of {upstream} failed to start", upstream=str(self.upstream))
            self.verdict(False, "the check could not start")

    def connected(self, conn: UpstreamConnection) -> None:
        self._cancel = None
        if self._deadline is None:
            conn.abort()
            return
        self._conn = conn
        base = self.upstream.basePath.rstrip(b"/")
        head = b"".join([
            b"GET ", base, (self.settings.path or "/").encode("ascii"),
            b" HTTP/1.1\r\nHost: ",
            self.upstream.authority.encode("idna"),
            b"\r\nUser-Agent: revproxy-health-check\r\nConnection: close\r\n\r\n",
        ])
        conn.send(head, None, self, False)

    def connectFailed(self, reason: Failure) -> None:
        self._cancel = None
        if self._deadline is not None:
            self.verdict(False, reason.getErrorMessage())

    def timedOut(self) -> None:
        self._deadline = None
        self._abort()
        self.verdict(False, f"no answer within {self.settings.timeout} seconds")

    # ResponseReceiver

    def responseStarted(
        self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], bodyLength: int
    ) -> None:
        self._code = code
        self._abort()
        self.verdict(200 <= code < 400, f"status {code}")

    def bodyReceived(self, data: bytes) -> None:
        pass

    def awaitingBody(self) -> None:
        pass

    def responseEnded(self) -> None:
        pass

    def switchedProtocols(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """
        Never called: a check asks for no upgrade, so its connection takes
        no 101 (it fails as malformed instead).
        """
        self._abort()

    def requestBodyFailed(self, status: int, message: bytes) -> None:
        """
        Never called: a check sends no body.
        """

    def exchangeFailed(self, reason: Failure, responseBytes: bool) -> None:
        self._conn = None
        if self._code == 0 and self._deadline is not None:
            self.verdict(False, reason.getErrorMessage())

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def verdict(self, passed: bool, why: str) -> None:
        """
        Record one check's result and schedule the next.
        """
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        checker = self.checker
        state = self.state
        state.lastCheck = checker.clock.seconds()
        state.lastCheckPassed = passed
        result = "pass" if passed else "fail"
        checker.results[result] = checker.results.get(result, 0) + 1
        if passed:
            self.passes += 1
            self.fails = 0
            if state.down and (self.initial or self.passes >= self.settings.rise):
                state.down = False
                log.info("health: upstream {upstream} is up ({why})",
                         upstream=str(self.upstream), why=why)
            self.initial = False
        else:
            self.fails += 1
            self.passes = 0
            if not state.down and self.fails >= self.settings.fall:
                state.down = True
                log.warn("health: upstream {upstream} is down ({why})",
                         upstream=str(self.upstream), why=why)
        if checker.running and checker._checks.get(self.upstream) is self:
            self.schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._abort()


class HealthChecker(Service):
    """
    Runs one periodic check per upstream in some route.

    @param defaults: the settings of C{--health-path} and friends.
    @ivar results: checks so far, by result (C{pass}, C{fail}).
    """

    name = "health-checks"

    def __init__(
        self,
        clock: IReactorTime,
        pool: UpstreamPool,
        states: UpstreamStates,
        defaults: HealthSettings,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.pool = pool
        self.states = states
        self.defaults = defaults
        self.rng = rng if rng is not None else random.Random()
        self.results: dict[str, int] = {}
        self._checks: dict[Upstream, _Check] = {}

    def routesChanged(
        self, removed: Sequence[HostRoute], added: Sequence[HostRoute]
    ) -> None:
        """
        Start the checks of upstreams new to the routes, apply changed
        overrides, and stop the checks of upstreams left in no route.
        """
        checks = self._checks
        for route in added:
            for upstream in route.upstreams:
                settings = self.defaults.overriddenBy(upstream.health)
                check = checks.get(upstream)
                if check is not None:
                    if settings.path is None:
                        # The override that asked for checks is gone.
                        del checks[upstream]
                        check.stop()
                        check.state.down = False
                    else:
                        check.settings = settings
                    continue
                if settings.path is None:
                    continue
                state = self.states.get(upstream)
                if state is None:
                    continue
                check = checks[upstream] = _Check(self, upstream, state, settings)
                if self.running:
                    check.schedule(first=True)
        for route in removed:
            for upstream in route.upstreams:
                check = checks.get(upstream)
                if check is not None and self.states.get(upstream) is not check.state:
                    del checks[upstream]
                    check.stop()

    def check(self, upstream: Upstream) -> _Check | None:
        """
        The check of C{upstream}, if it has one.
        """
        return self._checks.get(upstream)

    def startService(self) -> None:
        super().startService()
        for check in self._checks.values():
            check.schedule(first=True)

    def stopService(self) -> None:
        super().stopService()
        for check in self._checks.values():
            check.stop()
