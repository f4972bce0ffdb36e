# -*- test-case-name: tests.ops.test_clientmetrics -*-
"""
The client side's metrics: open client connections, connections closed at
once past C{--max-connections}, and requests refused before they were
handled (framing errors, limits, deadlines), by status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["clientMetrics"]


def clientMetrics(site: Any) -> Iterator[Metric]:
    """
    The metrics of C{site} (a L{revproxy.http.server.ProxySite}), or none
    for L{None}.
    """
    if site is None:
        return
    yield GaugeMetricFamily(
        "revproxy_client_connections", "Open client connections.", value=len(site.channels)
    )
    yield CounterMetricFamily(
        "revproxy_client_connections_refused",
        "Client connections closed at once because --max-connections were open.",
        value=site.connectionsRefused,
    )
    refused = CounterMetricFamily(
        "revproxy_requests_refused",
        "Requests refused before they were handled (malformed, too large, too slow), by status.",
        labels=["code"],
    )
    for code, n in sorted(site.refused.items()):
        refused.add_metric([str(code)], n)
    yield refused
