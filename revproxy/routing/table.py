# -*- test-case-name: tests.routing.test_routes -*-
"""
The route table: an immutable mapping of host patterns to their upstreams,
and the host lookup the proxy does for every request.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from immutables import Map

from revproxy.routing.address import RouteError, Upstream
from revproxy.routing.balancing import Policy, policyNamed, roundRobin

__all__ = ["HostRoute", "RouteTable", "RouteLookup", "hostPolicy"]


@dataclass(frozen=True, slots=True, eq=False)
class HostRoute:
    """
    The upstreams of one host pattern, with the policy that spreads requests
    over them.  Routes compare (and hash) by identity: the runtime state of
    a host (L{revproxy.upstream.state.HostState}) is keyed by its route
    object, which a table keeps for as long as the host's upstreams do not
    change.
    """

    host: str
    upstreams: tuple[Upstream, ...]
    policy: Policy = roundRobin

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise RouteError(f"route for {self.host!r} has no upstream")

    def sameUpstreams(self, other: Sequence[Upstream]) -> bool:
        """
        Whether C{other} lists the same upstreams, weights, health check
        settings and policy names included, in the same order.
        """
        return len(other) == len(self.upstreams) and all(
            a == b
            and a.weight == b.weight
            and a.health == b.health
            and a.balance == b.balance
            for a, b in zip(self.upstreams, other)
        )


def hostPolicy(upstreams: Sequence[Upstream], default: Policy) -> Policy:
    """
    The policy of a host with C{upstreams}: the one named by the first
    upstream (in route order, i.e. etcd key order) that names one, else
    C{default}.
    """
    for u in upstreams:
        if u.balance is not None:
            return policyNamed(u.balance)
    return default


class RouteLookup(Protocol):
    """
    What a L{revproxy.routing.resolver.RouteResolver} serves: the route of
    each request's host.  L{RouteTable} is one; a table whose routes come
    from a function (L{revproxy.routing.converter.HostConverterTable}) is
    another.
    """

    @property
    def routes(self) -> Mapping[str, HostRoute]:
        """
        The routes known in advance, by host pattern.
        """

    def lookup(self, host: bytes) -> HostRoute | None:
        """
        The route of a normalized request host, or L{None}.
        """

    def changedFrom(self, table: RouteLookup) -> Collection[str] | None:
        """
        The hosts whose routes differ from C{table}'s, if known; else
        L{None}.
        """

    def __len__(self) -> int:
        """
        How many routes are known in advance.
        """


class RouteTable:
    """
    An immutable mapping of host patterns to L{HostRoute}s, with the lookup
    that the proxy does for every request.

    Tables are never changed in place: L{RouteTable.with_changes} returns a
    new table, reusing the L{HostRoute} (and so the runtime state keyed by
    it) of every host that did not change.  The maps inside are persistent hash tries
    (C{immutables.Map}), so a new table with a few changed hosts costs
    O(changes x log n), not a copy of all n hosts: the etcd sync applies one
    event in time independent of the size of the table.
    """

    __slots__ = ("_routes", "_exact", "_wildcards", "_default", "_base", "_changed", "__weakref__")

    _routes: Map[str, HostRoute]
    _exact: Map[bytes, HostRoute]
    _wildcards: Map[bytes, HostRoute]
    _default: HostRoute | None
    _base: weakref.ref[RouteTable] | None
    _changed: tuple[str, ...]

    def __init__(self, routes: Iterable[HostRoute] = ()) -> None:
        self._routes = Map()
        self._exact = Map()
        self._wildcards = Map()
        self._default = None
        self._base = None
        self._changed = ()
        self._update({r.host: r for r in routes})

    def _update(self, changes: Mapping[str, HostRoute | None]) -> None:
        with self._routes.mutate() as routes, self._exact.mutate() as exact, \
                self._wildcards.mutate() as wildcards:
            for host, route in changes.items():
                if host == "*":
                    self._default = route
                    index = None
                elif host.startswith("*."):
                    # Keyed by the suffix with its leading dot: ".example.com".
                    index, key = wildcards, host[1:].encode("ascii")
                else:
                    index, key = exact, host.encode("ascii")
                if route is None:
                    routes.pop(host, None)
                    if index is not None:
                        index.pop(key, None)
                else:
                    routes[host] = route
                    if index is not None:
                        index[key] = route
            self._routes = routes.finish()
            self._exact = exact.finish()
            self._wildcards = wildcards.finish()

    @classmethod
    def fromMapping(
        cls,
        routes: Mapping[str, Sequence[Upstream]],
        balancer: Policy = roundRobin,
    ) -> RouteTable:
        """
        Build a table from host patterns (already validated) and their
        upstreams, each host balanced by the policy C{balancer}.
        """
        return cls(
            HostRoute(host, tuple(ups), hostPolicy(ups, balancer))
            for host, ups in routes.items()
        )

    def withChanges(
        self,
        changes: Mapping[str, Sequence[Upstream] | None],
        balancer: Policy = roundRobin,
    ) -> RouteTable:
        """
        Return a new table with the hosts in C{changes} replaced: a host
        mapped to upstreams gets them (keeping its route object if they did
        not change), a host mapped to L{None} or to no upstream is removed.
        New routes are balanced by the policy C{balancer}.
        """
        routes: dict[str, HostRoute | None] = {}
        for host, ups in changes.items():
            old = self._routes.get(host)
            if not ups:
                if old is not None:
                    routes[host] = None
            elif old is None or not old.sameUpstreams(ups):
                routes[host] = HostRoute(host, tuple(ups), hostPolicy(ups, balancer))
        new = RouteTable.__new__(RouteTable)
        new._routes = self._routes
        new._exact = self._exact
        new._wildcards = self._wildcards
        new._default = self._default
        new._base = weakref.ref(self)
        new._changed = tuple(routes)
        if routes:
            new._update(routes)
        return new

    def changedFrom(self, table: RouteLookup) -> Collection[str] | None:
        """
        The host patterns whose routes differ between C{table} and this
        table, if this table was made from C{table} by L{withChanges}; else
        L{None} (the tables must then be compared whole).  This is what lets
        a route observer follow a change in time proportional to the
        changed hosts, not to the size of the table.
        """
        base = self._base
        if base is None or base() is not table:
            return None
        return self._changed

    def lookup(self, host: bytes) -> HostRoute | None:
        """
        Find the route for a normalized request host: the exact host first,
        then the longest matching C{*.suffix} wildcard, then the C{*}
        default route.
        """
        route = self._exact.get(host)
        if route is not None:
            return route
        if self._wildcards:
            dot = host.find(b".")
            while dot >= 0:
                route = self._wildcards.get(host[dot:])
                if route is not None:
                    return route
                dot = host.find(b".", dot + 1)
        return self._default

    @property
    def routes(self) -> Mapping[str, HostRoute]:
        """
        Every route, by host pattern.
        """
        return self._routes

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"<RouteTable with {len(self._routes)} hosts>"
