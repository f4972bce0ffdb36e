"""
revproxy: a reverse proxy and HTTP load balancer on Twisted, with routes in
etcd; also a library for serving one from a Twisted program of one's own.

What a library user needs is importable from here:

  - L{RoutingProxyResource}, the C{twisted.web.proxy}-derived resource that
    routes each request by its Host, and L{ProxySite}, the site to serve it
    with;
  - L{RouteResolver}, which holds the routes the resource asks for, and the
    route sources: a static L{RouteTable} (with L{parseRoute},
    L{parseUpstream}, L{Upstream}, L{HostRoute}, L{RouteError}), a
    L{HostConverterTable} over a function of one's own, and
    L{etcdRouteService} (routes in etcd, followed live) with its
    L{EtcdRouteSync};
  - L{UpstreamPool}, the pooled connections to the upstreams, and
    L{UpstreamStates}, their runtime state;
  - L{makeService} and L{Options}: the whole C{twistd revproxy} service.

Each name is imported when first used, so C{import revproxy} stays cheap
and the pure core (L{revproxy.routing}) can be used without the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "RoutingProxyResource": "revproxy.forward.resource",
    "ProxySite": "revproxy.http.server",
    "RouteResolver": "revproxy.routing.resolver",
    "RouteTable": "revproxy.routing.table",
    "HostRoute": "revproxy.routing.table",
    "HostConverterTable": "revproxy.routing.converter",
    "Upstream": "revproxy.routing.address",
    "RouteError": "revproxy.routing.address",
    "parseRoute": "revproxy.routing.address",
    "parseUpstream": "revproxy.routing.address",
    "UpstreamPool": "revproxy.upstream.pool",
    "UpstreamStates": "revproxy.upstream.state",
    "EtcdRouteSync": "revproxy.etcd.sync",
    "etcdRouteService": "revproxy.etcd.http",
    "makeService": "revproxy.tap",
    "Options": "revproxy.tap",
}

__all__ = [
    "EtcdRouteSync",
    "HostConverterTable",
    "HostRoute",
    "Options",
    "ProxySite",
    "RouteError",
    "RouteResolver",
    "RouteTable",
    "RoutingProxyResource",
    "Upstream",
    "UpstreamPool",
    "UpstreamStates",
    "etcdRouteService",
    "makeService",
    "parseRoute",
    "parseUpstream",
]

if TYPE_CHECKING:
    from revproxy.etcd.http import etcdRouteService
    from revproxy.etcd.sync import EtcdRouteSync
    from revproxy.forward.resource import RoutingProxyResource
    from revproxy.http.server import ProxySite
    from revproxy.routing.address import RouteError, Upstream, parseRoute, parseUpstream
    from revproxy.routing.converter import HostConverterTable
    from revproxy.routing.resolver import RouteResolver
    from revproxy.routing.table import HostRoute, RouteTable
    from revproxy.tap import Options, makeService
    from revproxy.upstream.pool import UpstreamPool
    from revproxy.upstream.state import UpstreamStates


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'revproxy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
