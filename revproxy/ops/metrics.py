# -*- test-case-name: tests.ops.test_admin -*-
"""
Metrics: plain counters on the hot path, turned into Prometheus metrics only
when they are scraped.

Each request costs a tuple, a dict update and, for forwarded requests, one
bisect into the duration buckets: no locks, no label lookups, no objects of
prometheus_client on the data path (this module does not even import it).
L{revproxy.ops.admin.ProxyCollector} reads the counters, the in-flight count,
the upstream pool and the etcd sync at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["ProxyMetrics", "BUCKETS"]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds, in seconds, of the upstream response time histogram."""

_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class ProxyMetrics:
    """
    The counters the proxy updates for every request: the
    L{revproxy.forward.reporting.RequestMetrics} of the proxy resource.

    @ivar requests: request counts by (host pattern, status class,
        upstream); host and upstream are C{""} for requests that were not
        routed.
    @ivar durations: per upstream, counts per bucket of L{BUCKETS} (and one
        more for larger values) of the time from the request's arrival to
        the end of the upstream's response.
    @ivar durationSums: per upstream, the sum of those times.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[str, list[int]] = {}
        self.durationSums: dict[str, float] = {}

    def requestEnded(self, host: str, status: int, upstream: str, seconds: float) -> None:
        """
        Count one request.
        """
        key = (host, _CLASSES[status // 100] if 100 <= status < 600 else "other", upstream)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        if upstream:
            counts = self.durations.get(upstream)
            if counts is None:
                counts = self.durations[upstream] = [0] * (len(BUCKETS) + 1)
                self.durationSums[upstream] = 0.0
            counts[bisect_left(BUCKETS, seconds)] += 1
            self.durationSums[upstream] += seconds
