"""
Tests for L{revproxy.ops.upstreams}: the upstream states of C{/routes}, the
explanation of C{/routes/<host>} and the health metrics, through the admin
endpoint in memory.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import parseUpstream
from tests.ops.test_admin import AdminHarness


def _admin() -> AdminHarness:
    h = AdminHarness()
    h.admin._states = h.proxy.resource.states
    return h


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class RoutesStateTests(SynchronousTestCase):
    def test_states(self) -> None:
        """
        /routes shows each upstream's state, failures, ejection and in-flight
        requests.
        """
        h = _admin()
        state = h.proxy.resource.states.get(parseUpstream("10.0.0.1:80"))
        assert state is not None
        for _ in range(3):
            state.failed(h.clock.seconds())
        code, body, _ = h.get("/routes", self)
        entries = {e["upstream"]: e for e in json.loads(body)["hosts"]["a.com"]}
        self.assertEqual(entries["10.0.0.1:80"]["state"], "ejected")
        self.assertEqual(entries["10.0.0.1:80"]["consecutive_failures"], 3)
        self.assertEqual(entries["10.0.0.1:80"]["ejected_for"], 10.0)
        self.assertEqual(entries["10.0.0.2:80"]["state"], "up")
        self.assertIsNone(entries["10.0.0.2:80"]["last_check"])
        self.assertEqual(entries["10.0.0.2:80"]["requests_in_flight"], 0)

    def test_explain(self) -> None:
        """
        /routes/<host> names the matched pattern, the policy, and why each
        upstream is or is not eligible.
        """
        h = _admin()
        state = h.proxy.resource.states.get(parseUpstream("10.0.0.1:80"))
        assert state is not None
        for _ in range(3):
            state.failed(h.clock.seconds())
        code, body, ctype = h.get("/routes/a.com", self)
        self.assertEqual((code, ctype), (200, "application/json"))
        data = json.loads(body)
        self.assertEqual(data["pattern"], "a.com")
        self.assertEqual(data["policy"], "round-robin")
        self.assertEqual(data["usable"], 1)
        first, second = data["upstreams"]
        self.assertFalse(first["eligible"])
        self.assertIn("ejected for 10.0s more after 3 consecutive failures", first["why"])
        self.assertTrue(second["eligible"])
        self.assertEqual(second["why"], "up")

    def test_explainUnknown(self) -> None:
        """
        /routes/<host> for a host with no route is a 404 with a JSON error.
        """
        code, body, _ = _admin().get("/routes/b.org", self)
        self.assertEqual(code, 404)
        self.assertEqual(json.loads(body), {"error": "no route for host b.org"})


class HealthMetricsTests(SynchronousTestCase):
    def test_metrics(self) -> None:
        """
        /metrics has revproxy_upstream_healthy, the ejections, retries and
        health checks counters.
        """
        h = _admin()
        state = h.proxy.resource.states.get(parseUpstream("10.0.0.1:80"))
        assert state is not None
        for _ in range(3):
            state.failed(h.proxy.reactor.seconds())
        h.proxy.resource.retried("connect")
        _, body, _ = h.get("/metrics", self)
        s = _samples(body)
        self.assertEqual(s[("revproxy_upstream_healthy", (("upstream", "10.0.0.1:80"),))], 0)
        self.assertEqual(s[("revproxy_upstream_healthy", (("upstream", "10.0.0.2:80"),))], 1)
        self.assertEqual(
            s[("revproxy_upstream_ejections_total", (("upstream", "10.0.0.1:80"),))], 1
        )
        self.assertEqual(s[("revproxy_retries_total", (("reason", "connect"),))], 1)
        self.assertEqual(s[("revproxy_retries_total", (("reason", "reset"),))], 0)
        self.assertEqual(s[("revproxy_health_checks_total", (("result", "pass"),))], 0)
