# -*- test-case-name: tests.upstream.test_state -*-
"""
Runtime state of the live upstreams, apart from their configuration.

An L{UpstreamState} per upstream in use (in-flight requests, failures,
ejection, health), one per upstream identity (scheme, host, port and base
path: what L{Upstream} compares) however many hosts route to it; and a
L{HostState} per host route: its upstreams' states in route order and its
balancing turn.  L{UpstreamStates} holds both.  It observes the
L{revproxy.routing.resolver.RouteResolver}: the state of an upstream that
stays in some route is kept across route changes, that of an upstream no
longer in any route is forgotten, and a host whose route object is kept
(its upstreams did not change) keeps its turn, so round robin goes on
alternating where it was.

Balancing policies read an L{UpstreamState} through
L{revproxy.routing.balancing.UpstreamLoad}; the exchange
(L{revproxy.forward.exchange}) writes it, and so do the active health
checks (L{revproxy.upstream.health}).

Passive health (L{PassiveHealth}): C{maxFails} failures within
C{failWindow} seconds eject an upstream for C{ejectTime} seconds, doubled
for each consecutive ejection up to C{maxEjectTime}; after that one request
goes through as a probe, and its success restores the upstream.  Never more
than C{maxEjectedPercent} of a host's upstreams are held out at once
(L{revproxy.routing.balancing.usable}).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence

from revproxy.routing.address import Upstream
from revproxy.routing.balancing import usable
from revproxy.routing.table import HostRoute

__all__ = [
    "UpstreamState",
    "HostState",
    "UpstreamStates",
    "PassiveHealth",
    "UNKNOWN",
    "UP",
    "DOWN",
]

UNKNOWN = "unknown"
UP = "up"
DOWN = "down"


class PassiveHealth:
    """
    The passive health rules (C{--max-fails}, C{--fail-window},
    C{--eject-time}, C{--max-ejected-percent}) and the ejection counts
    they produced.

    @ivar ejections: ejections so far, by upstream name.
    """

    def __init__(
        self,
        maxFails: int = 3,
        failWindow: float = 10.0,
        ejectTime: float = 10.0,
        maxEjectTime: float = 300.0,
        maxEjectedPercent: float = 50.0,
    ) -> None:
        self.maxFails = maxFails
        self.failWindow = failWindow
        self.ejectTime = ejectTime
        self.maxEjectTime = maxEjectTime
        self.maxEjectedPercent = maxEjectedPercent
        self.ejections: dict[str, int] = {}


class UpstreamState:
    """
    The runtime state of one upstream.

    @ivar upstream: the upstream (the first configuration seen for its
        identity; weights may differ between hosts).
    @ivar inflight: requests assigned to the upstream and not yet ended.
    @ivar lastFailure: when it last failed (seconds on the proxy's clock),
        or 0.0.
    @ivar consecutiveFailures: failures since the last success.
    @ivar ejectedUntil: until when it is ejected from balancing; 0.0 when
        it is not ejected.  Past that time (and until a request succeeds)
        it is on probation: one request at a time goes to it.
    @ivar ejections: consecutive ejections (the next one lasts twice as
        long), reset by a success.
    @ivar probing: whether the probe request of its probation is in
        flight.
    @ivar health: L{UNKNOWN} until a request ends, then L{UP} or L{DOWN}
        as the last request went.
    @ivar down: whether active health checks hold it out of rotation.
    @ivar lastCheck: when the last active check ended, or 0.0.
    @ivar lastCheckPassed: whether it passed.
    """

    __slots__ = (
        "upstream",
        "inflight",
        "lastFailure",
        "consecutiveFailures",
        "ejectedUntil",
        "ejections",
        "probing",
        "health",
        "down",
        "lastCheck",
        "lastCheckPassed",
        "_rules",
        "_failures",
        "_references",
    )

    def __init__(self, upstream: Upstream, rules: PassiveHealth | None = None) -> None:
        if rules is None:
            rules = PassiveHealth()
        self.upstream = upstream
        self.inflight = 0
        self.lastFailure = 0.0
        self.consecutiveFailures = 0
        self.ejectedUntil = 0.0
        self.ejections = 0
        self.probing = False
        self.health = UNKNOWN
        self.down = False
        self.lastCheck = 0.0
        self.lastCheckPassed = False
        self._rules = rules
        self._failures: deque[float] = deque(maxlen=max(rules.maxFails, 1))
        self._references = 0

    def succeeded(self) -> None:
        """
        A response came back whole: a probe's success restores an ejected
        upstream.
        """
        self.consecutiveFailures = 0
        self.health = UP
        if self.ejectedUntil:
            self.ejectedUntil = 0.0
            self.ejections = 0
            self.probing = False
            self._failures.clear()

    def failed(self, now: float) -> bool:
        """
        A connection could not be made, or the upstream failed to answer.
        Return whether that ejected it.
        """
        self.lastFailure = now
        self.consecutiveFailures += 1
        self.health = DOWN
        rules = self._rules
        if rules.maxFails <= 0:
            return False
        if self.ejectedUntil:
            # A failure on probation (or while held out): eject again.
            self.probing = False
            if self.ejectedUntil > now:
                return False
            return self._eject(now)
        failures = self._failures
        failures.append(now)
        if len(failures) >= rules.maxFails and now - failures[0] <= rules.failWindow:
            return self._eject(now)
        return False

    def _eject(self, now: float) -> bool:
        rules = self._rules
        self._failures.clear()
        self.ejections += 1
        seconds = min(rules.ejectTime * 2 ** (self.ejections - 1), rules.maxEjectTime)
        self.ejectedUntil = now + seconds
        name = self.upstream.name
        rules.ejections[name] = rules.ejections.get(name, 0) + 1
        return True

    def available(self, now: float) -> bool:
        """
        Whether it is up and neither ejected nor being probed.
        """
        until = self.ejectedUntil
        return not self.down and (until == 0.0 or (until <= now and not self.probing))

    def __repr__(self) -> str:
        return (
            f"<UpstreamState {self.upstream} inflight={self.inflight} "
            f"health={self.health} failures={self.consecutiveFailures}>"
        )


class HostState:
    """
    The runtime state of one host route: its upstreams' states, in the
    route's order, and the balancing turn.

    @ivar route: the route.
    @ivar states: one L{UpstreamState} per upstream of the route.
    @ivar turn: how many picks the host has made.
    """

    __slots__ = ("route", "states", "turn", "_policy", "_rng", "_maxEjectedPercent")

    def __init__(
        self,
        route: HostRoute,
        states: tuple[UpstreamState, ...],
        rng: random.Random,
        maxEjectedPercent: float = 50.0,
    ) -> None:
        self.route = route
        self.states = states
        self.turn = 0
        self._policy = route.policy
        self._rng = rng
        self._maxEjectedPercent = maxEjectedPercent

    def usable(self, now: float) -> Sequence[UpstreamState]:
        """
        The upstreams a request may go to now (see
        L{revproxy.routing.balancing.usable}); the route's own tuple when
        all are (no allocation on the common path).
        """
        for state in self.states:
            if state.down or state.ejectedUntil:
                return usable(self.states, now, self._maxEjectedPercent)
        return self.states

    def pick(self, now: float = 0.0, key: int = 0) -> UpstreamState | None:
        """
        Choose the upstream for the next request among the route's usable
        ones, or L{None} if none is.
        """
        candidates = self.usable(now)
        if not candidates:
            return None
        return self.pickFrom(candidates, now, key)

    def pickFrom(
        self, candidates: Sequence[UpstreamState], now: float = 0.0, key: int = 0
    ) -> UpstreamState:
        """
        Choose among C{candidates} (not empty), e.g. the upstreams left
        after a failure; the pick takes a turn like any other.  An upstream
        on probation after an ejection gets this request as its probe.
        """
        turn = self.turn
        self.turn = turn + 1
        state = self._policy(candidates, turn, self._rng, key)
        if state.ejectedUntil and state.ejectedUntil <= now:
            state.probing = True
        return state

    def retryAfter(self, now: float) -> int:
        """
        Seconds a client should wait before trying this host again: until
        the first ejection ends, at least 1.
        """
        ends = [s.ejectedUntil - now for s in self.states if s.ejectedUntil > now]
        return max(1, int(min(ends) + 0.999)) if ends else 1

    def allFailing(self, now: float, maxFails: int) -> bool:
        """
        Whether every upstream is down, ejected or has failed at least
        C{maxFails} times in a row (when C{maxFails} is not 0): the host has
        no usable upstream.
        """
        return all(
            s.down
            or s.ejectedUntil > now
            or (maxFails > 0 and s.consecutiveFailures >= maxFails)
            for s in self.states
        )


class UpstreamStates:
    """
    The registry of runtime state: an L{UpstreamState} per upstream in some
    route, a L{HostState} per route.  It is a
    L{revproxy.routing.resolver.RouteObserver}; each change costs time in
    proportion to the routes that changed.

    @param rng: the random source of the balancing policies.
    @param rules: the passive health rules.
    @param startDown: whether a new upstream starts down (held out until
        an active check passes).
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        rules: PassiveHealth | None = None,
        startDown: bool = False,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self.rules = rules if rules is not None else PassiveHealth()
        self.startDown = startDown
        self._upstreams: dict[Upstream, UpstreamState] = {}
        self._hosts: dict[HostRoute, HostState] = {}

    def forRoute(self, route: HostRoute) -> HostState:
        """
        The runtime state of C{route}, made now if the registry has not
        heard of the route.
        """
        state = self._hosts.get(route)
        if state is None:
            state = self._add(route)
        return state

    def get(self, upstream: Upstream) -> UpstreamState | None:
        """
        The state of C{upstream}, or L{None} if no route has it.
        """
        return self._upstreams.get(upstream)

    def hostState(self, route: HostRoute) -> HostState | None:
        """
        The runtime state of C{route}, if the registry has it.
        """
        return self._hosts.get(route)

    def __iter__(self) -> Iterator[UpstreamState]:
        return iter(list(self._upstreams.values()))

    def __len__(self) -> int:
        return len(self._upstreams)

    def routesChanged(
        self, removed: Sequence[HostRoute], added: Sequence[HostRoute]
    ) -> None:
        """
        Make the state of the routes in C{added}, then forget those in
        C{removed} and every upstream left in no route.
        """
        for route in added:
            if route not in self._hosts:
                self._add(route)
        for route in removed:
            self._remove(route)

    def _add(self, route: HostRoute) -> HostState:
        upstreams = self._upstreams
        states = []
        for upstream in route.upstreams:
            state = upstreams.get(upstream)
            if state is None:
                state = upstreams[upstream] = UpstreamState(upstream, self.rules)
                state.down = self.startDown
            state._references += 1
            states.append(state)
        host = self._hosts[route] = HostState(
            route, tuple(states), self._rng, self.rules.maxEjectedPercent
        )
        return host

    def _remove(self, route: HostRoute) -> None:
        host = self._hosts.pop(route, None)
        if host is None:
            return
        upstreams = self._upstreams
        for state in host.states:
            state._references -= 1
            if state._references == 0:
                # An exchange still in flight keeps its own reference and
                # ends its accounting on the object it holds.
                upstreams.pop(state.upstream, None)
