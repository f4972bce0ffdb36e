"""
Tests for L{revproxy.forward.resource}: the routing proxy resource, driven through a
real L{twisted.web.server.Site} on in-memory transports, with no sockets and
no real time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.proxy import ReverseProxyResource

from revproxy.routing.converter import HostConverterTable
from revproxy.forward.resource import RoutingProxyResource
from revproxy.routing.resolver import RouteResolver
from revproxy.routing import RouteTable, parseUpstream
from revproxy.http.server import ProxySite
from revproxy.upstream.connection import UpstreamConnection
from revproxy.upstream.pool import UpstreamPool
from tests.fakes import AbortableTransport, FakeEndpoint

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: upstream-date\r\n\r\nhello"


class ProxyHarness:
    """
    A proxy with in-memory upstream endpoints and client connections.
    """

    def __init__(
        self,
        routes: Mapping[str, Sequence[str]] | None = None,
        timeout: float = 60.0,
        **resourceArgs: Any,
    ) -> None:
        if routes is None:
            routes = {"a.com": ["10.0.0.1:80"]}
        self.reactor = MemoryReactorClock()
        self.endpoints: dict[tuple[str, str, int], FakeEndpoint] = defaultdict(
            FakeEndpoint
        )
        self.pool = UpstreamPool(
            self.reactor, endpointFactory=lambda u: self.endpoints[u.key]
        )
        self.pool.startService()
        self.resolver = RouteResolver(
            RouteTable.fromMapping(
                {h: [parseUpstream(u) for u in ups] for h, ups in routes.items()}
            )
        )
        self.logged: list[tuple[object, ...]] = []
        self.resource = RoutingProxyResource(
            self.resolver,
            self.pool,
            self.reactor,
            responseTimeout=timeout,
            accessLog=lambda *a: self.logged.append(a),
            **resourceArgs,
        )
        self.site = ProxySite(self.resource, reactor=self.reactor)

    def endpoint(self, upstream: str = "10.0.0.1:80") -> FakeEndpoint:
        return self.endpoints[parseUpstream(upstream).key]

    def client(self, data: bytes = b"") -> tuple[object, StringTransport]:
        """
        Connect a client and send C{data}.
        """
        addr = IPv4Address("TCP", "192.0.2.7", 5555)
        channel = self.site.buildProtocol(addr)
        transport = StringTransport(
            peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 3000)
        )
        channel.makeConnection(transport)  # type: ignore[union-attr]
        if data:
            channel.dataReceived(data)  # type: ignore[union-attr]
        return channel, transport

    def upstream(
        self, upstream: str = "10.0.0.1:80"
    ) -> tuple[UpstreamConnection, AbortableTransport]:
        """
        Complete the next pending connection to C{upstream}.
        """
        proto, transport = self.endpoint(upstream).succeed()
        return proto, transport  # type: ignore[return-value]


def _get(host: bytes = b"a.com", path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"


def _headers(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip()))
    return lines[0], headers, body


def _proxyTimers(h: ProxyHarness) -> list[object]:
    """
    The pending timers of the proxy's own objects: everything but the
    client channels' idle timeouts.
    """
    from revproxy.http.channel import ProxyChannel

    def owner(call: object) -> object:
        timer = getattr(call, "func", None)
        deadline = getattr(timer, "__self__", None)
        return getattr(getattr(deadline, "expired", None), "__self__", None)

    return [
        c
        for c in h.reactor.getDelayedCalls()
        if not isinstance(owner(c), ProxyChannel)
    ]


class ForwardingTests(SynchronousTestCase):
    def test_isReverseProxyResource(self) -> None:
        """
        The proxy resource is a L{ReverseProxyResource}.
        """
        self.assertIsInstance(ProxyHarness().resource, ReverseProxyResource)

    def test_forwardsRequest(self) -> None:
        """
        The upstream gets an HTTP/1.1 request with the raw path and query,
        the client's Host, and X-Forwarded-For/-Host/-Proto set (the
        client's own X-Forwarded-For replaced: it is not a trusted proxy).
        """
        h = ProxyHarness()
        h.client(_get(b"A.com:3000", b"/p%20q/x?y=1&z", b"X-Forwarded-For: 1.2.3.4\r\n"))
        _, upstream = h.upstream()
        line, headers, body = _headers(upstream.value())
        self.assertEqual(line, b"GET /p%20q/x?y=1&z HTTP/1.1")
        self.assertIn((b"host", b"A.com:3000"), headers)
        self.assertIn((b"x-forwarded-for", b"192.0.2.7"), headers)
        self.assertIn((b"x-forwarded-host", b"A.com:3000"), headers)
        self.assertIn((b"x-forwarded-proto", b"http"), headers)
        self.assertEqual([n for n, v in headers].count(b"x-forwarded-for"), 1)
        self.assertNotIn(b"content-length", [n for n, v in headers])
        self.assertEqual(body, b"")

    def test_relaysResponse(self) -> None:
        """
        The client gets the upstream's status, headers and body; the
        upstream's Date replaces the proxy's and no Server header is added.
        """
        h = ProxyHarness()
        _, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(
            b"HTTP/1.1 201 Made\r\nContent-Length: 5\r\nDate: upstream-date\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello"
        )
        line, headers, body = _headers(client.value())
        self.assertEqual(line, b"HTTP/1.1 201 Made")
        self.assertEqual([v for n, v in headers if n == b"date"], [b"upstream-date"])
        self.assertEqual([v for n, v in headers if n == b"set-cookie"], [b"a=1", b"b=2"])
        self.assertNotIn(b"server", [n for n, v in headers])
        self.assertEqual(body, b"hello")
        self.assertEqual(h.pool.idleCount(), 1)
        self.assertEqual(h.resource.inflight, 0)

    def test_proxyDateWhenUpstreamHasNone(self) -> None:
        """
        A response without Date gets the proxy's.
        """
        h = ProxyHarness()
        _, client = h.client(_get())
        conn, _ = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        _, headers, _ = _headers(client.value())
        self.assertEqual(len([v for n, v in headers if n == b"date"]), 1)

    def test_accessLog(self) -> None:
        """
        Each forwarded request is logged once with its status, upstream and
        duration on the injected clock.
        """
        h = ProxyHarness()
        h.client(_get())
        conn, _ = h.upstream()
        h.reactor.advance(0.25)
        conn.dataReceived(OK)
        [(request, status, upstream, duration)] = h.logged
        self.assertEqual(status, 200)
        self.assertEqual(str(upstream), "10.0.0.1:80")
        self.assertEqual(duration, 0.25)

    def test_hopByHopRequest(self) -> None:
        """
        Hop-by-hop request headers, and those named in Connection, are not
        forwarded; repeated end-to-end headers are, in order.
        """
        h = ProxyHarness()
        h.client(
            _get(
                extra=b"Connection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\nTE: trailers\r\n"
                b"Upgrade: websocket\r\nProxy-Connection: x\r\nX-Secret: s\r\n"
                b"Proxy-Authorization: Basic x\r\nX-Multi: 1\r\nX-Multi: 2\r\n"
            )
        )
        _, upstream = h.upstream()
        _, headers, _ = _headers(upstream.value())
        names = [n for n, v in headers]
        for name in [b"connection", b"keep-alive", b"te", b"upgrade",
                     b"proxy-connection", b"x-secret", b"proxy-authorization"]:
            self.assertNotIn(name, names)
        self.assertEqual([v for n, v in headers if n == b"x-multi"], [b"1", b"2"])

    def test_hopByHopResponse(self) -> None:
        """
        Hop-by-hop response headers, and those named in Connection, are not
        passed to the client.
        """
        h = ProxyHarness()
        _, client = h.client(_get())
        conn, _ = h.upstream()
        conn.dataReceived(
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nKeep-Alive: timeout=5\r\n"
            b"X-Internal: 1\r\nProxy-Authenticate: x\r\nUpgrade: h2\r\nX-Kept: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        )
        _, headers, body = _headers(client.value())
        names = [n for n, v in headers]
        for name in [b"keep-alive", b"x-internal", b"proxy-authenticate", b"upgrade"]:
            self.assertNotIn(name, names)
        self.assertIn(b"x-kept", names)
        # Re-framed by the proxy for the client: chunked, exactly once.
        self.assertEqual([v for n, v in headers if n == b"transfer-encoding"], [b"chunked"])
        self.assertEqual(body, b"2\r\nok\r\n0\r\n\r\n")

    def test_chunkedRequestOneFraming(self) -> None:
        """
        A chunked request body reaches the upstream de-chunked with a
        Content-Length the proxy computed and no Transfer-Encoding: exactly
        one framing, so no smuggled request.
        """
        h = ProxyHarness()
        h.client(
            b"POST /x HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        _, upstream = h.upstream()
        _, headers, body = _headers(upstream.value())
        names = [n for n, v in headers]
        self.assertNotIn(b"transfer-encoding", names)
        self.assertEqual([v for n, v in headers if n == b"content-length"], [b"5"])
        self.assertEqual(body, b"hello")

    def test_emptyPostKeepsLength(self) -> None:
        """
        A POST with Content-Length: 0 is sent with Content-Length: 0.
        """
        h = ProxyHarness()
        h.client(b"POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 0\r\n\r\n")
        _, upstream = h.upstream()
        _, headers, _ = _headers(upstream.value())
        self.assertEqual([v for n, v in headers if n == b"content-length"], [b"0"])

    def test_largeBodyStreamed(self) -> None:
        """
        A body above the small-body size goes upstream with its
        Content-Length, the head first and the body after it, by a producer
        on the upstream transport that is gone once the body is sent.
        """
        h = ProxyHarness()
        data = b"y" * 200_000
        h.client(b"PUT / HTTP/1.1\r\nHost: a.com\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        _, upstream = h.upstream()
        self.assertIsNone(upstream.producer)
        _, headers, body = _headers(upstream.value())
        self.assertIn((b"content-length", b"200000"), headers)
        self.assertEqual(body, data)

    def test_head(self) -> None:
        """
        A HEAD response keeps its Content-Length and has no body.
        """
        h = ProxyHarness()
        _, client = h.client(b"HEAD / HTTP/1.1\r\nHost: a.com\r\n\r\n")
        conn, _ = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        _, headers, body = _headers(client.value())
        self.assertIn((b"content-length", b"1234"), headers)
        self.assertEqual(body, b"")
        self.assertEqual(h.pool.idleCount(), 1)

    def test_keepAliveClient(self) -> None:
        """
        Sequential requests on one client connection reuse one upstream
        connection.
        """
        h = ProxyHarness()
        channel, client = h.client()
        for i in range(5):
            channel.dataReceived(_get())  # type: ignore[attr-defined]
            if i == 0:
                conn, upstream = h.upstream()
            conn.dataReceived(OK)
        self.assertEqual(client.value().count(b"HTTP/1.1 200 OK"), 5)
        self.assertEqual(h.pool.opened, 1)
        self.assertFalse(h.endpoint().pending)

    def test_basePath(self) -> None:
        """
        An upstream's base path is joined with the request path.
        """
        h = ProxyHarness({"*": ["http://10.0.0.1:80/base/"]})
        h.client(_get(b"any", b"/foo?q=1"))
        _, upstream = h.upstream()
        self.assertTrue(upstream.value().startswith(b"GET /base/foo?q=1 HTTP/1.1\r\n"))


class RoutingTests(SynchronousTestCase):
    def test_unknownHost(self) -> None:
        """
        A host with no route gets a 404 naming it, in plain text.
        """
        h = ProxyHarness()
        _, client = h.client(_get(b"nope.com"))
        line, headers, body = _headers(client.value())
        self.assertEqual(line, b"HTTP/1.1 404 Not Found")
        self.assertIn((b"content-type", b"text/plain; charset=utf-8"), headers)
        self.assertEqual(body, b"no route for host nope.com\n")
        self.assertEqual(h.logged[0][1], 404)

    def test_noTable(self) -> None:
        """
        Before any route table is loaded every request gets a 503.
        """
        h = ProxyHarness()
        h.resolver.table = None
        _, client = h.client(_get())
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 "))

    def test_noHost(self) -> None:
        """
        An HTTP/1.0 request without Host gets a 400 unless a default route
        exists.
        """
        h = ProxyHarness()
        _, client = h.client(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.0 400 "))
        h = ProxyHarness({"*": ["10.0.0.1:80"]})
        h.client(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(len(h.endpoint().pending), 1)

    def test_twoHosts(self) -> None:
        """
        A request with two Host headers gets a 400.
        """
        h = ProxyHarness()
        _, client = h.client(b"GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 400 "))

    def test_roundRobin(self) -> None:
        """
        Requests for one host alternate over its upstreams.
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]})
        for _ in range(4):
            h.client(_get())
        self.assertEqual(len(h.endpoint("10.0.0.1:1").pending), 2)
        self.assertEqual(len(h.endpoint("10.0.0.2:2").pending), 2)

    def test_swappedTable(self) -> None:
        """
        A new table takes effect for the next request.
        """
        h = ProxyHarness()
        h.resolver.apply({"a.com": [parseUpstream("10.0.0.9:9")]})
        h.client(_get())
        self.assertEqual(len(h.endpoint("10.0.0.9:9").pending), 1)


class ConverterTests(SynchronousTestCase):
    """
    Routes from a host converter function, served by the resource.
    """

    def _harness(self, convert: object) -> ProxyHarness:
        h = ProxyHarness()
        h.resolver.replace(HostConverterTable(convert))  # type: ignore[arg-type]
        return h

    def test_converterRoutes(self) -> None:
        """
        A request goes where the function says, and requests for its hosts
        alternate over the upstreams it names, with in-flight counts kept.
        """
        h = self._harness(
            lambda host: ["10.0.0.1:1", "10.0.0.2:2"] if host.endswith(".com") else None
        )
        for host in (b"a.com", b"b.com", b"a.com", b"b.com"):
            h.client(_get(host))
        self.assertEqual(len(h.endpoint("10.0.0.1:1").pending), 2)
        self.assertEqual(len(h.endpoint("10.0.0.2:2").pending), 2)
        state = h.resource.states.get(parseUpstream("10.0.0.1:1"))
        assert state is not None
        self.assertEqual(state.inflight, 2)
        _, client = h.client(_get(b"a.org"))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 404 "))

    def test_badConverterAnswer(self) -> None:
        """
        A function that names something that is not an upstream gets the
        client a 502 and a logged warning, not a traceback.
        """
        h = self._harness(lambda host: "not an upstream")
        _, client = h.client(_get())
        line, _, body = _headers(client.value())
        self.assertEqual(line, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(body, b"the route for this host is not usable\n")


class FailureTests(SynchronousTestCase):
    def test_nextUpstreamOnRefused(self) -> None:
        """
        A refused connection sends the request (even a POST) to the next
        upstream of the host.
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]})
        _, client = h.client(b"POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 2\r\n\r\nhi")
        h.endpoint("10.0.0.1:1").fail()
        conn, upstream = h.upstream("10.0.0.2:2")
        self.assertTrue(upstream.value().endswith(b"\r\n\r\nhi"))
        conn.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK"))

    def test_allRefused(self) -> None:
        """
        When no upstream can be reached the host is down: the client gets a
        short 503 with Retry-After (issue 11; it was a 502).
        """
        h = ProxyHarness({"a.com": ["10.0.0.1:1", "10.0.0.2:2"]})
        _, client = h.client(_get())
        h.endpoint("10.0.0.1:1").fail()
        h.endpoint("10.0.0.2:2").fail()
        line, headers, body = _headers(client.value())
        self.assertEqual(line, b"HTTP/1.1 503 Service Unavailable")
        self.assertIn(b"retry-after", dict(headers))
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(h.resource.inflight, 0)
        self.flushLoggedErrors()

    def test_timeout(self) -> None:
        """
        No response headers within the timeout: 504, and the upstream
        connection is aborted; no timer is left.
        """
        h = ProxyHarness(timeout=5)
        _, client = h.client(_get())
        conn, upstream = h.upstream()
        h.reactor.advance(4.9)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.1)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 504 "))
        self.assertTrue(upstream.aborted)
        self.assertEqual(_proxyTimers(h), [])

    def test_timerCancelledOnHeaders(self) -> None:
        """
        Response headers in time cancel the response timeout: past it, the
        connection is still idle in the pool, and no timer is left.
        """
        h = ProxyHarness(timeout=5)
        _, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(OK)
        h.reactor.advance(5)
        self.assertFalse(upstream.aborted)
        self.assertEqual(h.pool.idleCount(), 1)
        self.assertEqual(client.value().count(b"HTTP/1.1"), 1)
        h.pool.stopService()
        self.assertEqual(_proxyTimers(h), [])

    def test_malformed(self) -> None:
        """
        A malformed upstream response gives the client a 502.
        """
        h = ProxyHarness()
        _, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(b"garbage\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 "))
        self.assertTrue(upstream.aborted)

    def test_retryStaleConnection(self) -> None:
        """
        A GET on a pooled connection that the upstream closed before
        answering is retried once on a new connection.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(OK)
        channel.dataReceived(_get())  # type: ignore[attr-defined]
        upstream.reportLost()
        conn2, upstream2 = h.upstream()
        self.assertTrue(upstream2.value().startswith(b"GET / HTTP/1.1"))
        conn2.dataReceived(OK)
        self.assertEqual(client.value().count(b"200 OK"), 2)

    def test_noRetryPost(self) -> None:
        """
        A POST on a pooled connection that fails is not replayed: 502.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(OK)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 1\r\n\r\nx")  # type: ignore[attr-defined]
        upstream.reportLost()
        self.assertFalse(h.endpoint().pending)
        self.assertIn(b"HTTP/1.1 502 ", client.value())

    def test_failureMidBody(self) -> None:
        """
        An upstream that fails after the response started cuts the client's
        connection, so the client sees an incomplete response.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        upstream.reportLost()
        self.assertTrue(client.disconnecting)
        self.assertEqual(h.resource.inflight, 0)


class ClientSideTests(SynchronousTestCase):
    def test_clientDisconnectAbortsUpstream(self) -> None:
        """
        A client disconnect aborts the upstream connection of its request.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        h = ProxyHarness()
        channel, _ = h.client(_get())
        conn, upstream = h.upstream()
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertTrue(upstream.aborted)
        self.assertEqual(h.resource.inflight, 0)
        self.assertEqual(h.logged[0][1], 499)
        self.assertEqual(_proxyTimers(h), [])

    def test_clientDisconnectWhileConnecting(self) -> None:
        """
        A client disconnect while the upstream connection is being made
        cancels the attempt.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        h = ProxyHarness()
        channel, _ = h.client(_get())
        [(factory, d)] = h.endpoint().pending
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        # The endpoint's attempt was cancelled (its Deferred failed with
        # CancelledError, which the pool handled), and nothing was retried.
        self.assertEqual(h.endpoint().cancelled, 1)
        self.assertTrue(d.called)
        self.assertEqual(h.endpoint().pending, [(factory, d)])
        self.assertEqual(h.resource.inflight, 0)

    def test_backpressure(self) -> None:
        """
        When the client's transport is full the upstream is paused, and
        resumed when it drains.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc")
        client.producer.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        client.producer.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")

    def test_backpressureChunked(self) -> None:
        """
        A body of unknown length is flow-controlled too.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        client.producer.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")

    def test_smallBodyNoProducer(self) -> None:
        """
        A small body is written whole: no producer is registered for it.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        self.assertIsNone(client.producer)

    def test_whenIdle(self) -> None:
        """
        whenIdle fires once the last in-flight request ends.
        """
        h = ProxyHarness()
        h.client(_get())
        conn, _ = h.upstream()
        fired: list[bool] = []
        h.resource.whenIdle(lambda: fired.append(True))
        self.assertEqual(fired, [])
        conn.dataReceived(OK)
        self.assertEqual(fired, [True])
