"""
The pure core of routing: upstream addresses and host patterns
(L{revproxy.routing.address}), the etcd key and value codec of a route
(L{revproxy.routing.codec}), the immutable route table and its host lookup
(L{revproxy.routing.table}), balancing policies
(L{revproxy.routing.balancing}) and the L{RouteResolver} service that holds
the current table (L{revproxy.routing.resolver}).

Nothing here does I/O or knows a reactor: everything is frozen data and
plain functions, with randomness passed in.
"""

from revproxy.routing.address import (
    RouteError,
    Upstream,
    normalizeRequestHost,
    parseHostPattern,
    parseRoute,
    parseUpstream,
)
from revproxy.routing.codec import parseRouteKey, routeKey, routeValue
from revproxy.routing.table import HostRoute, RouteTable

__all__ = [
    "HostRoute",
    "RouteError",
    "RouteTable",
    "Upstream",
    "normalizeRequestHost",
    "parseHostPattern",
    "parseRoute",
    "parseRouteKey",
    "parseUpstream",
    "routeKey",
    "routeValue",
]
