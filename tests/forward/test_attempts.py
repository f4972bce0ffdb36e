"""
Tests for L{revproxy.forward.attempts}: retries on another upstream,
passive ejection as requests see it, the retry window, and 503 with
C{Retry-After} for a host with no usable upstream.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import parseUpstream
from revproxy.upstream.state import PassiveHealth, UpstreamState, UpstreamStates
from tests.forward.test_resource import OK, ProxyHarness, _get, _headers

TWO = {"a.com": ["10.0.0.1:1", "10.0.0.2:2"]}


def _state(h: ProxyHarness, upstream: str) -> UpstreamState:
    state = h.resource.states.get(parseUpstream(upstream))
    assert state is not None
    return state


def _post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def _harness(routes: dict[str, list[str]] = TWO, **kwargs: object) -> ProxyHarness:
    rules = PassiveHealth(
        maxFails=int(kwargs.pop("maxFails", 3)),  # type: ignore[call-overload]
        maxEjectedPercent=float(kwargs.pop("maxEjectedPercent", 50)),  # type: ignore[arg-type]
    )
    states = UpstreamStates(rules=rules)
    h = ProxyHarness(routes, states=states, **kwargs)
    h.resolver.addObserver(states)
    return h


class RetryTests(SynchronousTestCase):
    def test_resetRetriedElsewhere(self) -> None:
        """
        A POST whose upstream resets before any response byte goes to the
        host's other upstream with its body, and the client gets its answer.
        """
        h = _harness()
        _, client = h.client(_post(b"hello"))
        _, first = h.upstream("10.0.0.1:1")
        first.reportLost()
        conn, second = h.upstream("10.0.0.2:2")
        self.assertTrue(second.value().endswith(b"\r\n\r\nhello"))
        conn.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(h.resource.retryCounts, {"reset": 1})
        self.flushLoggedErrors()

    def test_largeBodyNotRetried(self) -> None:
        """
        A body larger than the retry buffer is not sent twice: 502.
        """
        h = _harness(retryBuffer=3)
        _, client = h.client(_post(b"hello"))
        _, first = h.upstream("10.0.0.1:1")
        first.reportLost()
        self.assertFalse(h.endpoint("10.0.0.2:2").pending)
        self.assertIn(b"HTTP/1.1 502 ", client.value())

    def test_retriesBound(self) -> None:
        """
        C{retries} bounds the attempts: with 0, a refused connection is the
        request's only attempt.
        """
        h = _harness(retries=0)
        _, client = h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        self.assertFalse(h.endpoint("10.0.0.2:2").pending)
        self.assertIn(b"HTTP/1.1 502 ", client.value())

    def test_attemptsLogged(self) -> None:
        """
        Every retry is logged with the upstream it tries.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = _harness()
        h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        retries = [e for e in events if "attempt" in e]
        self.assertEqual(len(retries), 1)
        self.assertEqual(retries[0]["upstream"], "10.0.0.2:2")
        self.assertEqual(retries[0]["failed"], "10.0.0.1:1")


class EjectionTests(SynchronousTestCase):
    def test_ejectedAfterMaxFails(self) -> None:
        """
        After max-fails failures an upstream is ejected: requests go to the
        other upstream without trying it.
        """
        h = _harness()
        dead = _state(h, "10.0.0.1:1")
        conn = None
        refused = 0
        for _ in range(10):
            h.client(_get())
            if h.endpoint("10.0.0.1:1").pending:
                h.endpoint("10.0.0.1:1").fail()
                refused += 1
            if h.endpoint("10.0.0.2:2").pending:
                conn, _ = h.upstream("10.0.0.2:2")
            assert conn is not None
            conn.dataReceived(OK)
        self.assertEqual(refused, 3)
        self.assertGreater(dead.ejectedUntil, 0)
        self.flushLoggedErrors()

    def test_probeRestores(self) -> None:
        """
        After the ejection time one request goes to the ejected upstream as
        a probe; while it is in flight no other does; its success restores
        the upstream.
        """
        h = _harness(maxEjectedPercent=100)
        dead = _state(h, "10.0.0.1:1")
        for _ in range(3):
            dead.failed(h.reactor.seconds())
        h.reactor.advance(11)
        h.client(_get())
        h.client(_get())
        h.client(_get())
        self.assertEqual(len(h.endpoint("10.0.0.1:1").pending), 1)
        self.assertTrue(dead.probing)
        conn, _ = h.upstream("10.0.0.1:1")
        conn.dataReceived(OK)
        self.assertEqual(dead.ejectedUntil, 0.0)
        self.assertFalse(dead.probing)

    def test_failOn5xx(self) -> None:
        """
        With failOn5xx a 503 from an upstream counts as its failure, and
        the response still reaches the client.
        """
        h = _harness(failOn5xx=True)
        state = _state(h, "10.0.0.1:1")
        _, client = h.client(_get())
        conn, _ = h.upstream("10.0.0.1:1")
        conn.dataReceived(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(state.consecutiveFailures, 1)
        self.assertEqual(state.inflight, 0)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 Busy"))


class UnavailableTests(SynchronousTestCase):
    def test_allEjected503(self) -> None:
        """
        A known host whose upstreams are all out of rotation answers 503
        with Retry-After, and tries no upstream.
        """
        h = _harness(maxEjectedPercent=100)
        for u in ("10.0.0.1:1", "10.0.0.2:2"):
            s = _state(h, u)
            for _ in range(3):
                s.failed(h.reactor.seconds())
        _, client = h.client(_get())
        line, headers, body = _headers(client.value())
        self.assertEqual(line, b"HTTP/1.1 503 Service Unavailable")
        self.assertIn((b"retry-after", b"10"), headers)
        self.assertEqual(body, b"no usable upstream for this host\n")
        self.assertFalse(h.endpoint("10.0.0.1:1").pending)

    def test_allFailing503(self) -> None:
        """
        Once every upstream has failed max-fails times in a row (the panic
        rule keeps some in rotation), a request whose attempts all fail gets
        503, not 502.
        """
        h = _harness(maxFails=1)
        statuses = []
        for _ in range(2):
            _, client = h.client(_get())
            for u in ("10.0.0.1:1", "10.0.0.2:2"):
                if h.endpoint(u).pending:
                    h.endpoint(u).fail()
            statuses.append(client.value().split(b"\r\n")[0])
        self.assertEqual(statuses[-1], b"HTTP/1.1 503 Service Unavailable")
        self.flushLoggedErrors()

    def test_unknownHost404(self) -> None:
        """
        An unknown host stays 404.
        """
        h = _harness()
        _, client = h.client(_get(b"b.com"))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 404 "))


class WindowTests(SynchronousTestCase):
    def test_heldUntilBack(self) -> None:
        """
        With a retry window, a request that finds every upstream refusing
        is tried again after a short backoff and succeeds when one is back.
        """
        h = _harness({"a.com": ["10.0.0.1:1"]}, retryWindow=5.0)
        _, client = h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.05)
        h.endpoint("10.0.0.1:1").fail()
        h.reactor.advance(0.1)
        conn, _ = h.upstream("10.0.0.1:1")
        conn.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(h.resource.retryCounts, {"window": 2})
        self.flushLoggedErrors()

    def test_windowEnds(self) -> None:
        """
        Past the window the request gets its error, and no timer is left.
        """
        h = _harness({"a.com": ["10.0.0.1:1"]}, retryWindow=1.0)
        _, client = h.client(_get())
        for _ in range(100):
            if h.endpoint("10.0.0.1:1").pending:
                h.endpoint("10.0.0.1:1").fail()
            h.reactor.advance(0.05)
            if client.value():
                break
        self.assertTrue(client.value().startswith(b"HTTP/1.1 50"))
        self.assertLessEqual(h.reactor.seconds(), 1.1)
        self.flushLoggedErrors()

    def test_clientGoneCancelsHold(self) -> None:
        """
        A client that goes away while its request is held leaves no timer.
        """
        h = _harness({"a.com": ["10.0.0.1:1"]}, retryWindow=5.0)
        channel, _ = h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        channel.connectionLost(None)  # type: ignore[attr-defined]
        self.assertEqual(h.resource.inflight, 0)
        self.flushLoggedErrors()


class ClientGoneTests(SynchronousTestCase):
    def test_noRetryForGoneClient(self) -> None:
        """
        A client that goes away while its connection attempt is pending
        cancels it, and the request is not tried on another upstream.
        """
        h = _harness()
        channel, _ = h.client(_get())
        channel.connectionLost(None)  # type: ignore[attr-defined]
        self.assertFalse(h.endpoint("10.0.0.2:2").pending)
        self.assertEqual(h.resource.retryCounts, {})
        self.assertEqual(_state(h, "10.0.0.1:1").inflight, 0)
        self.assertEqual(h.resource.inflight, 0)


class WindowBudgetTests(SynchronousTestCase):
    def test_budgetSpentIsNotHeld(self) -> None:
        """
        A request that spent its retries while the host still has untried
        upstreams is answered, not held, even with a retry window.
        """
        h = _harness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]}, retries=0, retryWindow=5.0)
        _, client = h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        self.assertIn(b"HTTP/1.1 502 ", client.value())
        self.flushLoggedErrors()
