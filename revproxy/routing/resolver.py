# -*- test-case-name: tests.routing.test_routes -*-
"""
The route resolver: the service that owns the current route table and
answers, for each request, which route its host takes.

The table is immutable and swapped whole (L{RouteResolver.replace},
L{RouteResolver.apply}), so a request always sees one consistent table.
Route sources, the static C{--route} options today and the etcd sync next,
feed the resolver through these two methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.application.service import Service
from twisted.logger import Logger

from revproxy.routing.balancing import RoundRobin
from revproxy.routing.address import Upstream
from revproxy.routing.table import BalancerFactory, HostRoute, RouteTable

__all__ = ["RouteResolver", "NoRouteTable"]

log = Logger()


class NoRouteTable(Exception):
    """
    No route table has been loaded yet.
    """


class RouteResolver(Service):
    """
    Holds the current L{RouteTable}.

    @ivar table: the current table, or L{None} before the first one is
        loaded.
    @ivar balancer: makes the balancer of each new host route.
    """

    name = "route-resolver"

    def __init__(
        self,
        table: RouteTable | None = None,
        balancer: BalancerFactory = RoundRobin,
    ) -> None:
        self.table = table
        self.balancer = balancer

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

    def replace(self, table: RouteTable) -> None:
        """
        Serve C{table} from now on.
        """
        first = self.table is None
        self.table = table
        if first:
            log.info("route table loaded: {hosts} hosts", hosts=len(table))

    def apply(self, changes: Mapping[str, Sequence[Upstream] | None]) -> RouteTable:
        """
        Swap in a table with C{changes} applied (see
        L{RouteTable.with_changes}) and return it.
        """
        current = self.table if self.table is not None else RouteTable()
        table = current.withChanges(changes, self.balancer)
        self.replace(table)
        return table
