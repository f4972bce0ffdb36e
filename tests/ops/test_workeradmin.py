"""
Tests for L{revproxy.ops.workeradmin}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.workeradmin import sumMetrics

ONE = """\
# HELP revproxy_requests_total Requests.
# TYPE revproxy_requests_total counter
revproxy_requests_total{code="2xx",host="a",upstream="u"} 3.0
revproxy_requests_total{code="5xx",host="a",upstream="u"} 1.0
# HELP revproxy_etcd_revision The last etcd revision applied.
# TYPE revproxy_etcd_revision gauge
revproxy_etcd_revision 12.0
# HELP revproxy_upstream_response_seconds T.
# TYPE revproxy_upstream_response_seconds histogram
revproxy_upstream_response_seconds_bucket{le="0.1",upstream="u"} 2.0
revproxy_upstream_response_seconds_bucket{le="+Inf",upstream="u"} 4.0
revproxy_upstream_response_seconds_sum{upstream="u"} 0.5
revproxy_upstream_response_seconds_count{upstream="u"} 4.0
"""

TWO = """\
# HELP revproxy_requests_total Requests.
# TYPE revproxy_requests_total counter
revproxy_requests_total{code="2xx",host="a",upstream="u"} 5.0
# HELP revproxy_etcd_revision The last etcd revision applied.
# TYPE revproxy_etcd_revision gauge
revproxy_etcd_revision 11.0
# HELP revproxy_upstream_response_seconds T.
# TYPE revproxy_upstream_response_seconds histogram
revproxy_upstream_response_seconds_bucket{le="0.1",upstream="u"} 1.0
revproxy_upstream_response_seconds_bucket{le="+Inf",upstream="u"} 5.0
revproxy_upstream_response_seconds_sum{upstream="u"} 1.0
revproxy_upstream_response_seconds_count{upstream="u"} 5.0
"""


class SumTests(SynchronousTestCase):
    def test_sum(self) -> None:
        """
        Counters and histograms are summed label set by label set; the etcd
        revision is the lowest; each worker's requests are counted.
        """
        metrics, requests = sumMetrics({1: ONE, 2: TWO})
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for m in metrics for s in m.samples
        }
        self.assertEqual(samples[("revproxy_requests_total", (("code", "2xx"), ("host", "a"), ("upstream", "u")))], 8.0)
        self.assertEqual(samples[("revproxy_requests_total", (("code", "5xx"), ("host", "a"), ("upstream", "u")))], 1.0)
        self.assertEqual(samples[("revproxy_etcd_revision", ())], 11.0)
        self.assertEqual(samples[("revproxy_upstream_response_seconds_bucket", (("le", "+Inf"), ("upstream", "u")))], 9.0)
        self.assertEqual(samples[("revproxy_upstream_response_seconds_sum", (("upstream", "u"),))], 1.5)
        self.assertEqual(requests, {1: 4.0, 2: 5.0})
