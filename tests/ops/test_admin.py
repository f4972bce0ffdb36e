"""
Tests for L{revproxy.ops.admin} and L{revproxy.ops.metrics}: the admin endpoint,
driven in memory through C{treq.testing.StubTreq}.
"""

from __future__ import annotations

import json
import random

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.admin import AdminResource, ProxyCollector
from revproxy.etcd.memory import MemoryRouteStore
from revproxy.ops.metrics import BUCKETS, ProxyMetrics
from revproxy.routing.resolver import RouteResolver
from revproxy.etcd.sync import EtcdRouteSync
from tests.forward.test_resource import OK, ProxyHarness, _get


class AdminHarness:
    def __init__(self, withSync: bool = False) -> None:
        self.proxy = ProxyHarness({"a.com": ["10.0.0.1:80", "10.0.0.2:80"]})
        self.metrics = ProxyMetrics()
        self.proxy.resource.metrics = self.metrics
        self.clock = Clock()
        self.sync = None
        resolver = self.proxy.resolver
        if withSync:
            self.store = MemoryRouteStore()
            self.store.put(b"/hosts/e.com/10.0.0.3:80", b'{"weight": 2}')
            resolver = RouteResolver()
            self.sync = EtcdRouteSync(
                self.store, resolver, "/hosts/", self.clock,
                rng=random.Random(0), backoffInitial=1, backoffMax=1,
            )
        self.resolver = resolver
        self.admin = AdminResource(
            resolver,
            ProxyCollector(self.metrics, self.proxy.resource, self.proxy.pool, self.sync),
            self.proxy.pool,
            self.clock,
            self.sync,
            graceSeconds=30,
        )
        self.treq = StubTreq(self.admin)

    def get(self, path: str, case: SynchronousTestCase) -> tuple[int, bytes, str]:
        response = case.successResultOf(self.treq.get("http://admin" + path))
        body = case.successResultOf(response.content())
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
        return response.code, body, ctype


class HealthTests(SynchronousTestCase):
    def test_healthz(self) -> None:
        """
        /healthz answers 200 while the process runs.
        """
        code, body, _ = AdminHarness().get("/healthz", self)
        self.assertEqual((code, body), (200, b"ok\n"))

    def test_readyStatic(self) -> None:
        """
        With static routes the node is ready; with no table it is not.
        """
        h = AdminHarness()
        self.assertEqual(h.get("/readyz", self)[0], 200)
        h.proxy.resolver.table = None
        code, body, _ = h.get("/readyz", self)
        self.assertEqual(code, 503)
        self.assertIn(b"no route table", body)

    def test_readyEtcd(self) -> None:
        """
        With etcd: not ready before the first load, ready while the watch is
        live, still ready within the grace period after losing it, then not.
        """
        h = AdminHarness(withSync=True)
        self.assertEqual(h.get("/readyz", self)[0], 503)
        h.sync.startService()  # type: ignore[union-attr]
        self.assertEqual(h.get("/readyz", self)[0], 200)
        h.store.unavailable = True
        h.store.disconnect()
        h.clock.advance(29)
        self.assertEqual(h.get("/readyz", self)[0], 200)
        h.clock.advance(2)
        self.assertEqual(h.get("/readyz", self)[0], 503)
        h.store.unavailable = False
        h.clock.advance(1)
        self.assertEqual(h.get("/readyz", self)[0], 200)
        h.sync.stopService()  # type: ignore[union-attr]


class RoutesTests(SynchronousTestCase):
    def test_static(self) -> None:
        """
        /routes lists every host's upstreams with weight and in-flight
        requests.
        """
        h = AdminHarness()
        h.proxy.client(_get())
        h.proxy.upstream("10.0.0.1:80")
        code, body, ctype = h.get("/routes", self)
        self.assertEqual((code, ctype), (200, "application/json"))
        data = json.loads(body)
        self.assertEqual(data["source"], "static")
        self.assertEqual(
            data["hosts"]["a.com"],
            [
                {"upstream": "10.0.0.1:80", "weight": 1, "inflight": 1},
                {"upstream": "10.0.0.2:80", "weight": 1, "inflight": 0},
            ],
        )

    def test_etcd(self) -> None:
        """
        With etcd, /routes shows each upstream's key, the revision,
        liveness, contact age and skipped keys.
        """
        h = AdminHarness(withSync=True)
        h.store.put(b"/hosts/bad", b"")
        h.sync.startService()  # type: ignore[union-attr]
        h.clock.advance(2)
        data = json.loads(h.get("/routes", self)[1])
        self.assertEqual(data["hosts"]["e.com"][0]["weight"], 2)
        self.assertEqual(data["hosts"]["e.com"][0]["key"], "/hosts/e.com/10.0.0.3:80")
        info = data["etcd"]
        self.assertEqual(info["revision"], h.store.revision)
        self.assertTrue(info["live"])
        self.assertEqual(info["seconds_since_contact"], 2)
        self.assertEqual(info["skipped_keys"], ["/hosts/bad"])
        h.sync.stopService()  # type: ignore[union-attr]


class MetricsTests(SynchronousTestCase):
    def test_requestsAndHistogram(self) -> None:
        """
        /metrics counts requests by host, status class and upstream, with
        the response-time histogram, in-flight requests and pool sizes.
        """
        h = AdminHarness()
        h.proxy.client(_get())
        conn, _ = h.proxy.upstream("10.0.0.1:80")
        h.proxy.reactor.advance(0.003)
        conn.dataReceived(OK)
        h.proxy.client(_get(b"nope.com"))
        code, body, ctype = h.get("/metrics", self)
        self.assertEqual(code, 200)
        self.assertTrue(ctype.startswith("text/plain"))
        text = body.decode()
        for line in [
            'revproxy_requests_total{code="2xx",host="a.com",upstream="10.0.0.1:80"} 1.0',
            'revproxy_requests_total{code="4xx",host="",upstream=""} 1.0',
            'revproxy_upstream_response_seconds_bucket{le="0.0025",upstream="10.0.0.1:80"} 0.0',
            'revproxy_upstream_response_seconds_bucket{le="0.005",upstream="10.0.0.1:80"} 1.0',
            'revproxy_upstream_response_seconds_bucket{le="+Inf",upstream="10.0.0.1:80"} 1.0',
            "revproxy_inflight_requests 0.0",
            'revproxy_upstream_connections{state="idle",upstream="10.0.0.1:80"} 1.0',
            "revproxy_upstream_connections_opened_total 1.0",
        ]:
            self.assertIn(line, text)
        self.assertNotIn("revproxy_etcd", text)

    def test_etcdMetrics(self) -> None:
        """
        With etcd, /metrics has the applied revision, reconnects, resyncs
        and skipped keys.
        """
        h = AdminHarness(withSync=True)
        h.sync.startService()  # type: ignore[union-attr]
        h.store.disconnect()
        h.clock.advance(1)
        text = h.get("/metrics", self)[1].decode()
        self.assertIn(f"revproxy_etcd_revision {float(h.store.revision)}", text)
        self.assertIn("revproxy_etcd_reconnects_total 1.0", text)
        self.assertIn("revproxy_etcd_resyncs_total 0.0", text)
        self.assertIn("revproxy_etcd_skipped_keys 0.0", text)
        self.assertIn("revproxy_etcd_watch_live 1.0", text)
        h.sync.stopService()  # type: ignore[union-attr]

    def test_buckets(self) -> None:
        """
        Each duration lands in the first bucket whose bound it does not
        exceed.
        """
        m = ProxyMetrics()
        m.requestEnded("h", 200, "u", BUCKETS[0])
        m.requestEnded("h", 503, "u", 1000.0)
        m.requestEnded("h", 700, "", 0.0)
        self.assertEqual(m.durations["u"][0], 1)
        self.assertEqual(m.durations["u"][-1], 1)
        self.assertEqual(m.requests[("h", "5xx", "u")], 1)
        self.assertEqual(m.requests[("h", "other", "")], 1)


class TunnelMetricsTests(SynchronousTestCase):
    def test_tunnelMetrics(self) -> None:
        """
        /metrics counts open and draining tunnels by host and the bytes
        tunnels relayed by direction.
        """
        from revproxy.routing import parseUpstream
        from tests.forward.test_tunnel import TunnelHarness

        h = AdminHarness()
        tunnels = TunnelHarness()
        h.proxy.resource.tunnels = tunnels.tunnels
        tunnels.open()
        tunnels.resolver.apply({"a.com": [parseUpstream("10.0.0.9:80")]})
        tunnels.tunnels.bytesUpstream = 7
        _, body, _ = h.get("/metrics", self)
        text = body.decode()
        self.assertIn('revproxy_tunnels_open{host="a.com"} 1.0', text)
        self.assertIn('revproxy_tunnels_draining{host="a.com"} 1.0', text)
        self.assertIn('revproxy_tunnel_bytes_total{direction="upstream"} 7.0', text)
        self.assertIn('revproxy_tunnel_bytes_total{direction="downstream"} 0.0', text)
