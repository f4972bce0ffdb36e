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
(L{revproxy.forward.exchange}) writes it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from revproxy.routing.address import Upstream
from revproxy.routing.table import HostRoute

__all__ = ["UpstreamState", "HostState", "UpstreamStates", "UNKNOWN", "UP", "DOWN"]

UNKNOWN = "unknown"
UP = "up"
DOWN = "down"


class UpstreamState:
    """
    The runtime state of one upstream.

    @ivar upstream: the upstream (the first configuration seen for its
        identity; weights may differ between hosts).
    @ivar inflight: requests assigned to the upstream and not yet ended.
    @ivar lastFailure: when it last failed (seconds on the proxy's clock),
        or 0.0.
    @ivar consecutiveFailures: failures since the last success.
    @ivar ejectedUntil: until when it is ejected from balancing; 0.0 for
        never (nothing ejects yet: room for outlier detection).
    @ivar health: L{UNKNOWN} until a request ends, then L{UP} or L{DOWN}.
    """

    __slots__ = (
        "upstream",
        "inflight",
        "lastFailure",
        "consecutiveFailures",
        "ejectedUntil",
        "health",
        "_references",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.inflight = 0
        self.lastFailure = 0.0
        self.consecutiveFailures = 0
        self.ejectedUntil = 0.0
        self.health = UNKNOWN
        self._references = 0

    def succeeded(self) -> None:
        """
        A response came back whole.
        """
        self.consecutiveFailures = 0
        self.health = UP

    def failed(self, now: float) -> None:
        """
        A connection could not be made, or the upstream failed to answer.
        """
        self.lastFailure = now
        self.consecutiveFailures += 1
        self.health = DOWN

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

    __slots__ = ("route", "states", "turn", "_policy", "_rng")

    def __init__(
        self, route: HostRoute, states: tuple[UpstreamState, ...], rng: random.Random
    ) -> None:
        self.route = route
        self.states = states
        self.turn = 0
        self._policy = route.policy
        self._rng = rng

    def pick(self) -> UpstreamState:
        """
        Choose the upstream for the next request among all of the route's.
        """
        turn = self.turn
        self.turn = turn + 1
        return self._policy(self.states, turn, self._rng)

    def pickFrom(self, candidates: Sequence[UpstreamState]) -> UpstreamState:
        """
        Choose among C{candidates} (not empty), e.g. the upstreams left
        after a failure; the pick takes a turn like any other.
        """
        turn = self.turn
        self.turn = turn + 1
        return self._policy(candidates, turn, self._rng)


class UpstreamStates:
    """
    The registry of runtime state: an L{UpstreamState} per upstream in some
    route, a L{HostState} per route.  It is a
    L{revproxy.routing.resolver.RouteObserver}; each change costs time in
    proportion to the routes that changed.

    @param rng: the random source of the balancing policies.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
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
                state = upstreams[upstream] = UpstreamState(upstream)
            state._references += 1
            states.append(state)
        host = self._hosts[route] = HostState(route, tuple(states), self._rng)
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
