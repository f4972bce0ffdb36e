"""
Tests for L{revproxy.ops.clientmetrics}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.clientmetrics import clientMetrics
from tests.http.test_channel import _harness


class ClientMetricsTests(SynchronousTestCase):
    def test_metrics(self) -> None:
        """
        Open connections, connections refused and requests refused by
        status are reported.
        """
        h = _harness(maxConnections=1)
        h.client(b"GET / HTTP/1.2\r\nHost: a.com\r\n\r\n")
        h.site.buildProtocol(None)
        metrics = {m.name: m for m in clientMetrics(h.site)}
        self.assertEqual(metrics["revproxy_client_connections"].samples[0].value, 1)
        self.assertEqual(metrics["revproxy_client_connections_refused"].samples[0].value, 1)
        [sample] = metrics["revproxy_requests_refused"].samples
        self.assertEqual((sample.labels, sample.value), ({"code": "505"}, 1))

    def test_noSite(self) -> None:
        """
        Without a site there is nothing to report.
        """
        self.assertEqual(list(clientMetrics(None)), [])
