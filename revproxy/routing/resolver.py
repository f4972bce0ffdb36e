# -*- test-case-name: tests.routing.test_routes -*-
"""
The route resolver: the service that owns the current route table and
answers, for each request, which route its host takes.

The table is immutable and swapped whole (L{RouteResolver.replace},
L{RouteResolver.apply}), so a request always sees one consistent table.
Route sources, the static C{--route} options today and the etcd sync next,
feed the resolver through these two methods.

Observers (L{RouteObserver}, e.g. the registry of upstream runtime state)
hear of every swap as the routes that left and the routes that came: for a
table made from the current one by L{RouteTable.withChanges}, only the
changed hosts are looked at, so an etcd event costs the same with ten or
ten thousand hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from twisted.application.service import Service
from twisted.logger import Logger

from revproxy.routing.address import Upstream
from revproxy.routing.balancing import Policy, roundRobin
from revproxy.routing.table import HostRoute, RouteLookup, RouteTable

__all__ = [
    "RouteResolver",
    "RouteObserver",
    "NoRouteTable",
    "ChangeLog",
    "describeChange",
    "logRouteChange",
]

log = Logger()

#: Told of each host whose upstreams changed: the host, the change as
#: L{describeChange} words it, and its cause (or L{None}).
ChangeLog = Callable[[str, str, "str | None"], None]


def describeChange(before: Sequence[Upstream], after: Sequence[Upstream]) -> str:
    """
    The change from C{before} to C{after} in words: C{+U} for each upstream
    added, C{-U} for each removed, C{~U(weight N)} for a new weight; empty
    if they list the same upstreams with the same weights.
    """
    words = [f"+{u}" for u in after if u not in before]
    words += [f"-{u}" for u in before if u not in after]
    weights = {u: u.weight for u in before}
    words += [
        f"~{u}(weight {u.weight})"
        for u in after
        if u in weights and weights[u] != u.weight
    ]
    return " ".join(words)


def logRouteChange(host: str, change: str, cause: str | None) -> None:
    """
    Log one applied route change at info:
    C{route blog.example.com: +127.0.0.1:4001 -127.0.0.1:4000 (revision 42)}.
    """
    if cause is None:
        log.info("route {host}: {change}", host=host, change=change)
    else:
        log.info(
            "route {host}: {change} ({cause})", host=host, change=change, cause=cause
        )


class NoRouteTable(Exception):
    """
    No route table has been loaded yet.
    """


class RouteObserver(Protocol):
    """
    Told of every change of the routes a L{RouteResolver} serves.
    """

    def routesChanged(
        self, removed: Sequence[HostRoute], added: Sequence[HostRoute]
    ) -> None:
        """
        The routes in C{removed} are no longer served, those in C{added} are
        served from now on; routes that stay are in neither.
        """


class RouteResolver(Service):
    """
    Holds the current L{RouteTable}.

    @ivar table: the current table, or L{None} before the first one is
        loaded.
    @ivar balancer: the balancing policy of each new host route.
    """

    name = "route-resolver"

    def __init__(
        self,
        table: RouteLookup | None = None,
        balancer: Policy = roundRobin,
    ) -> None:
        self.table = table
        self.balancer = balancer
        self._routeObservers: list[RouteObserver] = []
        self.changeLog: ChangeLog = logRouteChange

    @property
    def observers(self) -> tuple[RouteObserver, ...]:
        """
        The observers told of every route change, in the order added.
        """
        return tuple(self._routeObservers)

    def addObserver(self, observer: RouteObserver) -> None:
        """
        Tell C{observer} of every route change from now on, starting with
        the routes of the current table as added.
        """
        self._routeObservers.append(observer)
        table = self.table
        if table is not None:
            routes = list(table.routes.values())
            if routes:
                observer.routesChanged((), routes)
            _observe(table, [observer])

    def resolve(self, host: bytes) -> HostRoute | None:
        """
        The route for a normalized request host, or L{None} if no route
        matches.

        @raise NoRouteTable: if no table is loaded yet.
        """
        table = self.table
        if table is None:
            raise NoRouteTable()
        return table.lookup(host)

    def replace(self, table: RouteLookup) -> None:
        """
        Serve C{table} from now on.
        """
        old = self.table
        self.table = table
        if self._routeObservers and table is not old:
            _observe(table, self._routeObservers)
        if old is None:
            log.info("route table loaded: {hosts} hosts", hosts=len(table))
        if self._routeObservers:
            self._notify(old, table)

    def _notify(self, old: RouteLookup | None, new: RouteLookup) -> None:
        removed: list[HostRoute] = []
        added: list[HostRoute] = []
        newRoutes = new.routes
        if old is None:
            added.extend(newRoutes.values())
        else:
            oldRoutes = old.routes
            hosts = new.changedFrom(old)
            if hosts is None:
                # Not derived from the current table: compare them whole.
                for host, route in oldRoutes.items():
                    if newRoutes.get(host) is not route:
                        removed.append(route)
                for host, route in newRoutes.items():
                    if oldRoutes.get(host) is not route:
                        added.append(route)
            else:
                for host in hosts:
                    before = oldRoutes.get(host)
                    after = newRoutes.get(host)
                    if before is not after:
                        if before is not None:
                            removed.append(before)
                        if after is not None:
                            added.append(after)
        if removed or added:
            for observer in self._routeObservers:
                observer.routesChanged(removed, added)

    def apply(
        self,
        changes: Mapping[str, Sequence[Upstream] | None],
        cause: str | None = None,
    ) -> RouteTable:
        """
        Swap in a table with C{changes} applied (see
        L{RouteTable.withChanges}) and return it.  Each host whose upstreams
        really change is told to L{changeLog} once, with C{cause} (e.g.
        C{"revision 42"}).
        """
        current = self.table if isinstance(self.table, RouteTable) else RouteTable()
        table = current.withChanges(changes, self.balancer)
        if self.table is not None:
            before = current.routes
            for host, upstreams in changes.items():
                old = before.get(host)
                change = describeChange(
                    old.upstreams if old is not None else (), upstreams or ()
                )
                if change:
                    self.changeLog(host, change, cause)
        self.replace(table)
        return table


def _observe(table: RouteLookup, observers: Sequence[RouteObserver]) -> None:
    """
    Let a table that makes routes as it is asked (one with an C{observe}
    method) tell C{observers} of the routes it makes and drops.
    """
    observe = getattr(table, "observe", None)
    if observe is not None:
        for observer in observers:
            observe(observer)
