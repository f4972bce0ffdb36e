"""
Tests for L{revproxy.forward.exchange}: the runtime state each exchange
keeps up to date, and the retry seam; the forwarding behaviour itself is
tested through the resource in L{tests.forward.test_resource}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import parseUpstream
from revproxy.upstream.state import DOWN, UNKNOWN, UP, UpstreamState
from tests.forward.test_resource import OK, ProxyHarness, _get, _headers

T = TypeVar("T")


def _state(h: ProxyHarness, upstream: str = "10.0.0.1:80") -> UpstreamState:
    state = h.resource.states.get(parseUpstream(upstream))
    assert state is not None
    return state


class NoFailover:
    """
    A retry policy that never tries again.
    """

    def failover(self, upstreams: Sequence[T], tried: Sequence[T]) -> Sequence[T]:
        return []

    def retryOnFreshConnection(
        self, method: bytes, reusedConnection: bool, responseBytes: bool
    ) -> bool:
        return False


class InflightTests(SynchronousTestCase):
    def test_success(self) -> None:
        """
        The upstream's in-flight count is 1 while the request is forwarded
        and 0 after its response; the upstream is then up.
        """
        h = ProxyHarness()
        state = _state(h)
        h.client(_get())
        self.assertEqual(state.inflight, 1)
        conn, _ = h.upstream()
        self.assertEqual(state.inflight, 1)
        self.assertEqual(state.health, UNKNOWN)
        conn.dataReceived(OK)
        self.assertEqual(state.inflight, 0)
        self.assertEqual(state.health, UP)

    def test_upstreamFailure(self) -> None:
        """
        A failed response ends the in-flight count and records a failure on
        the injected clock.
        """
        h = ProxyHarness()
        state = _state(h)
        h.client(_get())
        conn, _ = h.upstream()
        h.reactor.advance(7)
        conn.dataReceived(b"garbage\r\n\r\n")
        self.assertEqual(state.inflight, 0)
        self.assertEqual((state.consecutiveFailures, state.lastFailure), (1, 7.0))
        self.assertEqual(state.health, DOWN)

    def test_failureMidBody(self) -> None:
        """
        An upstream that fails during the response is counted as failed and
        no longer in flight.
        """
        h = ProxyHarness()
        state = _state(h)
        h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        upstream.reportLost()
        self.assertEqual(state.inflight, 0)
        self.assertEqual(state.consecutiveFailures, 1)

    def test_timeout(self) -> None:
        """
        A response timeout ends the in-flight count and records a failure.
        """
        h = ProxyHarness(timeout=5)
        state = _state(h)
        h.client(_get())
        h.upstream()
        h.reactor.advance(5)
        self.assertEqual(state.inflight, 0)
        self.assertEqual(state.consecutiveFailures, 1)

    def test_clientDisconnect(self) -> None:
        """
        A client that goes away ends the in-flight count without marking
        the upstream failed.
        """
        h = ProxyHarness()
        state = _state(h)
        channel, _ = h.client(_get())
        h.upstream()
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual(state.inflight, 0)
        self.assertEqual(state.consecutiveFailures, 0)

    def test_clientDisconnectWhileConnecting(self) -> None:
        """
        A client that goes away while the connection is being made ends the
        in-flight counts without marking any upstream failed.
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]})
        first, second = _state(h, "10.0.0.1:1"), _state(h, "10.0.0.2:2")
        channel, _ = h.client(_get())
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual((first.inflight, second.inflight), (0, 0))
        self.assertEqual((first.consecutiveFailures, second.consecutiveFailures), (0, 0))

    def test_failover(self) -> None:
        """
        A refused connection moves the request, and its in-flight count, to
        the next upstream, and records the refusal.
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]})
        first, second = _state(h, "10.0.0.1:1"), _state(h, "10.0.0.2:2")
        h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        self.assertEqual((first.inflight, second.inflight), (0, 1))
        self.assertEqual(first.consecutiveFailures, 1)
        conn, _ = h.upstream("10.0.0.2:2")
        conn.dataReceived(OK)
        self.assertEqual((first.inflight, second.inflight), (0, 0))
        self.assertEqual(second.health, UP)

    def test_staleRetryIsNoFailure(self) -> None:
        """
        A retry on a fresh connection after a stale pooled one keeps the
        request in flight once and records no failure.
        """
        h = ProxyHarness()
        state = _state(h)
        channel, _ = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(OK)
        channel.dataReceived(_get())  # type: ignore[attr-defined]
        upstream.reportLost()
        self.assertEqual(state.inflight, 1)
        conn2, _ = h.upstream()
        conn2.dataReceived(OK)
        self.assertEqual(state.inflight, 0)
        self.assertEqual(state.consecutiveFailures, 0)

    def test_sharedUpstream(self) -> None:
        """
        Two hosts routing to one upstream count their requests on one state.
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:80"], "b.com": ["10.0.0.1:80"]})
        h.client(_get(b"a.com"))
        h.client(_get(b"b.com"))
        self.assertEqual(_state(h).inflight, 2)


class RetrySeamTests(SynchronousTestCase):
    def test_policyDecidesFailover(self) -> None:
        """
        The resource's retry policy decides whether a refused request goes
        to another upstream.
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]})
        h.resource.retry = NoFailover()
        _, client = h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        line, _, _ = _headers(client.value())
        self.assertEqual(line, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(h.endpoint("10.0.0.2:2").pending, [])

    def test_policyDecidesStaleRetry(self) -> None:
        """
        The resource's retry policy decides whether a request on a stale
        pooled connection is sent again.
        """
        h = ProxyHarness()
        h.resource.retry = NoFailover()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(OK)
        channel.dataReceived(_get())  # type: ignore[attr-defined]
        upstream.reportLost()
        self.assertEqual(h.endpoint().pending, [])
        self.assertIn(b"HTTP/1.1 502 ", client.value())


class ConnectFailureTests(SynchronousTestCase):
    def test_readable(self) -> None:
        """A connect failure reads as its reason, never the address's repr."""
        from twisted.internet.address import IPv4Address
        from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
        from twisted.python.failure import Failure

        from revproxy.forward.exchange import connectFailure

        address = IPv4Address("TCP", "127.0.0.1", 4000)
        self.assertEqual(
            connectFailure(Failure(ConnectingCancelledError(address))),
            "no connection within the connect timeout",
        )
        text = connectFailure(Failure(ConnectionRefusedError(address)))
        self.assertEqual(text, "Connection was refused by other side")
        self.assertEqual(
            connectFailure(Failure(ConnectionRefusedError("111: Connection refused"))),
            "Connection was refused by other side: 111: Connection refused",
        )
