# -*- test-case-name: tests.routing.test_converter -*-
"""
A route source that is a function: the library user's own host converter,
as Go's reverse proxies let one plug in C{hostConverter(host) -> upstream}.

L{HostConverterTable} stands where a L{RouteTable} stands in a
L{revproxy.routing.resolver.RouteResolver}: the proxy asks it for the route
of each request's host, and it asks the function.  The function gets the
normalized host (lower-cased, without port or trailing dot) as text and
returns an upstream (an L{Upstream} or its text form), several of them, or
L{None} for no route (the client gets 404).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Union

from revproxy.routing.address import Upstream, parseUpstream
from revproxy.routing.balancing import Policy, roundRobin
from revproxy.routing.table import HostRoute, RouteLookup

if TYPE_CHECKING:
    from revproxy.routing.resolver import RouteObserver

__all__ = ["HostConverter", "HostConverterTable"]

UpstreamSpec = Union[Upstream, str]
HostConverter = Callable[[str], Union[UpstreamSpec, Sequence[UpstreamSpec], None]]
"""A function from a request's host to its upstream(s), or L{None}."""


class HostConverterTable:
    """
    A route table whose routes come from a function, asked for each request.

    The routes it makes are kept by their upstreams, so that hosts the
    function sends to the same upstreams share one route (and one balancing
    turn), and a round robin over several upstreams alternates.  At most
    C{maxRoutes} routes are kept; past that the oldest are dropped.  Route
    observers (the registry of upstream runtime state), which a resolver
    hands to the table with L{observe}, hear of each route made and dropped.

    @param converter: the host converter.
    @param policy: the balancing policy of the routes it makes.
    """

    def __init__(
        self,
        converter: HostConverter,
        policy: Policy = roundRobin,
        maxRoutes: int = 10_000,
    ) -> None:
        self._converter = converter
        self._policy = policy
        self._maxRoutes = maxRoutes
        self._routes: dict[tuple[Upstream, ...], HostRoute] = {}
        self._parsed: dict[str, Upstream] = {}
        self._routeObservers: list[RouteObserver] = []

    def observe(self, observer: RouteObserver) -> None:
        """
        Tell C{observer} of every route this table makes or drops from now
        on, starting with those it holds.
        """
        if observer not in self._routeObservers:
            self._routeObservers.append(observer)
            if self._routes:
                observer.routesChanged((), list(self._routes.values()))

    def _upstream(self, spec: UpstreamSpec) -> Upstream:
        if isinstance(spec, Upstream):
            return spec
        upstream = self._parsed.get(spec)
        if upstream is None:
            if len(self._parsed) >= self._maxRoutes:
                self._parsed.clear()
            upstream = self._parsed[spec] = parseUpstream(spec)
        return upstream

    def lookup(self, host: bytes) -> HostRoute | None:
        """
        The route for a normalized request host, as the converter says.

        @raise revproxy.routing.address.RouteError: if the converter returns
            text that is not an upstream address.
        """
        result = self._converter(host.decode("ascii", "replace"))
        if result is None:
            return None
        if isinstance(result, (Upstream, str)):
            upstreams: tuple[Upstream, ...] = (self._upstream(result),)
        else:
            upstreams = tuple(self._upstream(spec) for spec in result)
            if not upstreams:
                return None
        route = self._routes.get(upstreams)
        if route is None:
            dropped: tuple[HostRoute, ...] = ()
            if len(self._routes) >= self._maxRoutes:
                # Oldest first: dicts keep insertion order.
                dropped = (self._routes.pop(next(iter(self._routes))),)
            route = self._routes[upstreams] = HostRoute(
                "<converter>", upstreams, self._policy
            )
            for observer in self._routeObservers:
                observer.routesChanged(dropped, (route,))
        return route

    @property
    def routes(self) -> Mapping[str, HostRoute]:
        """
        No host is known in advance: the converter answers per request.
        """
        return {}

    def changedFrom(self, table: RouteLookup) -> Collection[str] | None:
        """
        Unknown: the routes come from the function.
        """
        return None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<HostConverterTable of {self._converter!r}>"

