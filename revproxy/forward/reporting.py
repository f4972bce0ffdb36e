# -*- test-case-name: tests.forward.test_resource -*-
"""
What forwarding reports each request to: the access log and the request
metrics.  They are small interfaces defined here, so that L{revproxy.forward}
does not depend on L{revproxy.ops}, which implements them
(L{revproxy.ops.accesslog.AccessLogger},
L{revproxy.ops.metrics.ProxyMetrics}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.web.server import Request

from revproxy.routing import Upstream

__all__ = ["AccessLog", "RequestMetrics", "TunnelLog"]

AccessLog = Callable[[Request, int, "Upstream | None", float], None]
"""Called once per request: the request, the status sent, the upstream it
went to (L{None} if it was not routed) and the seconds it took."""


TunnelLog = Callable[[Request, Upstream, float, int, int], None]
"""Called once per tunnel as it ends: its upgrade request, its upstream, the
seconds from the request's arrival to the end, and the bytes relayed from the
client to the upstream and from the upstream to the client."""


class RequestMetrics(Protocol):
    """
    Counts requests as they end.
    """

    def requestEnded(self, host: str, status: int, upstream: str, seconds: float) -> None:
        """
        A request ended: C{host} is its route's host pattern and
        C{upstream} the name of its upstream (both C{""} if it was not
        routed), C{status} the status sent, C{seconds} how long it took.
        """
