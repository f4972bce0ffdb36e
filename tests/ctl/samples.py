"""
Upstreams and route states shared by the tests of revproxyctl.
"""

from __future__ import annotations

from revproxy.ctl.plans import RouteState, readState
from revproxy.routing import Upstream, parseUpstream

U1 = parseUpstream("127.0.0.1:4000")
U2 = parseUpstream("127.0.0.1:4001")
U3 = parseUpstream("https://backend:8443/base")


def state(*items: tuple[str, bytes], prefix: str = "/hosts/") -> RouteState:
    return readState(
        7, [(k.encode(), v, i + 1) for i, (k, v) in enumerate(items)], prefix
    )


def weighted(u: Upstream, weight: int) -> Upstream:
    return parseUpstream(str(u), weight)
