"""
Tests for L{revproxy.upstream.health}: active checks on in-memory
connections and a fake clock.
"""

from __future__ import annotations

import random
from collections import defaultdict

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import RouteTable, Upstream, parseUpstream
from revproxy.routing.address import HealthCheck
from revproxy.routing.resolver import RouteResolver
from revproxy.upstream.health import HealthChecker, HealthSettings
from revproxy.upstream.pool import UpstreamPool
from revproxy.upstream.state import UpstreamStates
from tests.fakes import FakeEndpoint

UP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
DOWN = b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"


class Harness:
    def __init__(self, upstreams: list[Upstream], startDown: bool = False,
                 path: str | None = "/health") -> None:
        self.reactor = MemoryReactorClock()
        self.endpoints: dict[tuple[str, str, int], FakeEndpoint] = defaultdict(FakeEndpoint)
        self.pool = UpstreamPool(self.reactor, endpointFactory=lambda u: self.endpoints[u.key])
        self.pool.startService()
        self.resolver = RouteResolver(RouteTable.fromMapping({"a.com": upstreams}))
        self.states = UpstreamStates(startDown=startDown)
        self.resolver.addObserver(self.states)
        self.checker = HealthChecker(
            self.reactor, self.pool, self.states,
            HealthSettings(path=path, interval=5, timeout=2, rise=2, fall=3),
            random.Random(0),
        )
        self.resolver.addObserver(self.checker)
        self.checker.startService()

    def answer(self, upstream: str, response: bytes) -> bytes:
        """
        Run the next check of C{upstream} and answer it; return the request.
        """
        endpoint = self.endpoints[parseUpstream(upstream).key]
        while not endpoint.pending:
            self.reactor.advance(0.5)
        conn, transport = endpoint.succeed()
        conn.dataReceived(response)  # type: ignore[attr-defined]
        return transport.value()


U = parseUpstream("10.0.0.1:1")


class HealthCheckTests(SynchronousTestCase):
    def test_request(self) -> None:
        """
        A check is GET PATH with the upstream's Host, on a connection of its
        own that is closed afterwards and never pooled.
        """
        h = Harness([U])
        sent = h.answer("10.0.0.1:1", UP)
        self.assertTrue(sent.startswith(b"GET /health HTTP/1.1\r\nHost: 10.0.0.1:1\r\n"))
        self.assertEqual(h.pool.idleCount(), 0)

    def test_fallAndRise(self) -> None:
        """
        fall failed checks mark the upstream down; rise passes mark it up.
        """
        h = Harness([U])
        state = h.states.get(U)
        assert state is not None
        for i in range(3):
            self.assertFalse(state.down)
            h.answer("10.0.0.1:1", DOWN)
        self.assertTrue(state.down)
        h.answer("10.0.0.1:1", UP)
        self.assertTrue(state.down)
        h.answer("10.0.0.1:1", UP)
        self.assertFalse(state.down)
        self.assertEqual(h.checker.results, {"fail": 3, "pass": 2})
        self.assertTrue(state.lastCheckPassed)

    def test_interval(self) -> None:
        """
        Checks come every interval, within 10% jitter.
        """
        h = Harness([U])
        h.answer("10.0.0.1:1", UP)
        start = h.reactor.seconds()
        h.answer("10.0.0.1:1", UP)
        self.assertTrue(4.5 - 0.5 <= h.reactor.seconds() - start <= 5.5 + 0.5)

    def test_timeout(self) -> None:
        """
        A check that gets no answer within the timeout fails, and its
        connection is aborted.
        """
        h = Harness([U])
        endpoint = h.endpoints[U.key]
        while not endpoint.pending:
            h.reactor.advance(0.5)
        _, transport = endpoint.succeed()
        h.reactor.advance(2)
        self.assertTrue(transport.aborted)
        self.assertEqual(h.checker.results, {"fail": 1})

    def test_refused(self) -> None:
        """
        A refused connection is a failed check.
        """
        h = Harness([U])
        endpoint = h.endpoints[U.key]
        while not endpoint.pending:
            h.reactor.advance(0.5)
        endpoint.fail()
        self.assertEqual(h.checker.results, {"fail": 1})

    def test_startDown(self) -> None:
        """
        With start-down a new upstream is down until its first pass.
        """
        h = Harness([U], startDown=True)
        state = h.states.get(U)
        assert state is not None
        self.assertTrue(state.down)
        h.answer("10.0.0.1:1", UP)
        self.assertFalse(state.down)

    def test_followsRoutes(self) -> None:
        """
        Checks start for upstreams that appear and stop for those that
        leave every route; an upstream that stays keeps its check.
        """
        h = Harness([U])
        kept = h.checker.check(U)
        other = parseUpstream("10.0.0.2:2")
        h.resolver.apply({"a.com": [U, other]})
        self.assertIs(h.checker.check(U), kept)
        self.assertIsNotNone(h.checker.check(other))
        h.resolver.apply({"a.com": [other]})
        self.assertIsNone(h.checker.check(U))
        h.checker.stopService()
        h.pool.stopService()
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_override(self) -> None:
        """
        An upstream's value overrides the path and interval; without a
        --health-path, only upstreams that name a path are checked.
        """
        custom = Upstream("http", "10.0.0.3", 3, health=HealthCheck(path="/ready", interval=1))
        h = Harness([U, custom], path=None)
        self.assertIsNone(h.checker.check(U))
        sent = h.answer("10.0.0.3:3", UP)
        self.assertTrue(sent.startswith(b"GET /ready "))
        check = h.checker.check(custom)
        assert check is not None
        self.assertEqual(check.settings.interval, 1)

    def test_stopLeavesNothing(self) -> None:
        """
        Stopping the checker cancels every timer and check in flight.
        """
        h = Harness([U])
        endpoint = h.endpoints[U.key]
        while not endpoint.pending:
            h.reactor.advance(0.5)
        h.checker.stopService()
        h.pool.stopService()
        self.assertEqual(h.reactor.getDelayedCalls(), [])
