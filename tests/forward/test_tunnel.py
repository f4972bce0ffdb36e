"""
Tests for L{revproxy.forward.tunnel}: upgrade requests through the whole
proxy (site, channel, exchange, pool) on in-memory transports, the tunnel's
relaying, flow control, half-closes, timeouts and its registry's view of
route changes.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.forward.tunnel import TunnelRegistry
from revproxy.http.server import ProxyChannel
from revproxy.routing import RouteTable, parseUpstream
from revproxy.upstream.connection import UpstreamConnection
from tests.fakes import AbortableTransport
from tests.forward.test_resource import ProxyHarness, _headers

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n"
)


class ClientTransport(StringTransport):
    """
    A client transport that records half-closes and aborts.
    """

    writeClosed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class TunnelHarness(ProxyHarness):
    """
    A proxy harness whose test opens a tunnel and records its log.
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.ended: list[tuple[object, ...]] = []
        self.tunnels = self.resource.tunnels = TunnelRegistry(
            self.reactor, idleTimeout=100.0, log=lambda *a: self.ended.append(a)
        )
        self.resolver.addObserver(self.tunnels)

    def connect(self, data: bytes) -> tuple[ProxyChannel, ClientTransport]:
        addr = IPv4Address("TCP", "192.0.2.7", 5555)
        channel = self.site.buildProtocol(addr)
        transport = ClientTransport(peerAddress=addr)
        channel.makeConnection(transport)  # type: ignore[union-attr]
        channel.dataReceived(data)  # type: ignore[union-attr]
        return channel, transport  # type: ignore[return-value]

    def open(
        self, data: bytes = UPGRADE, switch: bytes = SWITCH
    ) -> tuple[ProxyChannel, ClientTransport, UpstreamConnection, AbortableTransport]:
        channel, client = self.connect(data)
        conn, upstream = self.upstream()
        conn.dataReceived(switch)
        return channel, client, conn, upstream

    def clientLost(self, channel: ProxyChannel) -> None:
        channel.connectionLost(Failure(ConnectionDone()))


class UpgradeRequestTests(SynchronousTestCase):
    def test_forwardedWithUpgrade(self) -> None:
        """
        An upgrade request reaches the upstream with Connection: upgrade,
        its Upgrade and its end-to-end fields.
        """
        h = TunnelHarness()
        h.connect(UPGRADE)
        _, upstream = h.upstream()
        line, headers, _ = _headers(upstream.value())
        self.assertEqual(line, b"GET /chat HTTP/1.1")
        self.assertIn((b"connection", b"upgrade"), headers)
        self.assertIn((b"upgrade", b"websocket"), headers)
        self.assertIn((b"sec-websocket-key", b"k"), headers)
        self.assertNotIn((b"connection", b"keep-alive, Upgrade"), headers)

    def test_h2cNotOffered(self) -> None:
        """
        Upgrade: h2c goes upstream as a plain request, without Upgrade or
        HTTP2-Settings.
        """
        h = TunnelHarness()
        h.connect(
            b"GET / HTTP/1.1\r\nHost: a.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n"
        )
        _, upstream = h.upstream()
        names = [n for n, v in _headers(upstream.value())[1]]
        for name in (b"upgrade", b"http2-settings", b"connection"):
            self.assertNotIn(name, names)

    def test_http10NotOffered(self) -> None:
        """
        An HTTP/1.0 request cannot upgrade: its Upgrade is dropped.
        """
        h = TunnelHarness()
        h.connect(UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"))
        _, upstream = h.upstream()
        self.assertNotIn(b"pgrade", upstream.value())

    def test_otherAnswerIsAResponse(self) -> None:
        """
        An upgrade request answered without 101 gets that response, and the
        upstream connection returns to the pool.
        """
        h = TunnelHarness()
        _, client, conn, upstream = h.open(
            switch=b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\n"
            b"Content-Length: 2\r\n\r\nno"
        )
        line, headers, body = _headers(client.value())
        self.assertEqual((line, body), (b"HTTP/1.1 426 Upgrade Required", b"no"))
        self.assertNotIn(b"upgrade", [n for n, v in headers])
        self.assertEqual(h.pool.idleCount(), 1)
        self.assertEqual(len(h.tunnels), 0)


class TunnelTests(SynchronousTestCase):
    def test_relaysBothWays(self) -> None:
        """
        The client gets the 101 with the upstream's fields and its request
        id, then bytes flow both ways, including those each side sent with
        its head.
        """
        h = TunnelHarness()
        channel, client = h.connect(UPGRADE + b"early")
        conn, upstream = h.upstream()
        upstream.clear()
        conn.dataReceived(SWITCH + b"hello")
        head, _, rest = client.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 101 Switching Protocols")
        fields = {line.lower() for line in lines[1:]}
        ids = {f for f in fields if f.startswith(b"x-request-id: ")}
        self.assertEqual(len(ids), 1, fields)
        self.assertEqual(len(ids.pop()), len(b"x-request-id: ") + 16)
        self.assertEqual(
            fields - {f for f in fields if f.startswith(b"x-request-id: ")},
            {b"upgrade: websocket", b"connection: upgrade", b"sec-websocket-accept: a"},
        )
        self.assertEqual(rest, b"hello")
        self.assertEqual(upstream.value(), b"early")
        client.clear()
        upstream.clear()
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        conn.dataReceived(b"\x81\x02hi")
        self.assertEqual(upstream.value(), b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(client.value(), b"\x81\x02hi")
        self.assertEqual((h.tunnels.bytesUpstream, h.tunnels.bytesDownstream), (23, 9))
        self.assertEqual(h.tunnels.counts(), {"a.com": (1, 0)})
        self.assertEqual(h.resource.inflight, 0)
        self.assertEqual((h.pool.busyCount(), h.pool.idleCount()), (0, 0))
        self.assertEqual(h.logged, [])

    def test_switchIsASuccess(self) -> None:
        """
        A 101 counts as a success of the upstream, and its request ends
        (not in flight for the balancers) while the tunnel lives on.
        """
        h = TunnelHarness()
        state = h.resource.states.get(parseUpstream("10.0.0.1:80"))
        assert state is not None
        state.failed(0.0)
        h.open()
        self.assertEqual((state.health, state.consecutiveFailures, state.inflight), ("up", 0, 0))
        self.assertEqual(len(h.tunnels), 1)

    def test_flowControl(self) -> None:
        """
        A client that cannot take more pauses the upstream, and an upstream
        that cannot take more pauses the client.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        client.producer.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        client.producer.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")
        upstream.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        upstream.producer.resumeProducing()
        self.assertEqual(client.producerState, "producing")

    def test_idleTimeout(self) -> None:
        """
        A tunnel with no byte either way for its idle timeout is closed;
        bytes postpone it, and the channel's own idle timeout never fires.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        h.reactor.advance(90)
        channel.dataReceived(b"x")
        h.reactor.advance(90)
        self.assertFalse(client.disconnecting or upstream.aborted)
        h.reactor.advance(10)
        self.assertTrue(client.aborted and upstream.aborted)

    def test_halfClose(self) -> None:
        """
        A half-close from one side is passed on; once both sides have, both
        connections close.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        halfClosed: list[bool] = []
        upstream.loseWriteConnection = lambda: halfClosed.append(True)  # type: ignore[attr-defined]
        channel.readConnectionLost()
        self.assertEqual(halfClosed, [True])
        self.assertFalse(client.disconnecting or client.writeClosed)
        conn.dataReceived(b"last words")
        self.assertTrue(client.value().endswith(b"last words"))
        conn.readConnectionLost()
        self.assertTrue(client.disconnecting and upstream.disconnecting)

    def test_upstreamHalfClose(self) -> None:
        """
        An upstream's half-close reaches the client as one.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        conn.readConnectionLost()
        self.assertTrue(client.writeClosed)
        self.assertFalse(upstream.disconnecting)

    def test_eitherSideClosesBoth(self) -> None:
        """
        The upstream closing closes the client, and the tunnel ends once
        both are closed: one log call with duration and bytes.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        channel.dataReceived(b"abc")
        h.reactor.advance(5)
        upstream.reportLost()
        self.assertTrue(client.disconnecting)
        self.assertEqual(h.ended, [])
        h.clientLost(channel)
        [(request, up, duration, bytesIn, bytesOut)] = h.ended
        self.assertEqual((up, duration, bytesIn, bytesOut), (parseUpstream("10.0.0.1:80"), 5.0, 3, 0))
        self.assertEqual(len(h.tunnels), 0)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_clientClosesBoth(self) -> None:
        """
        The client closing closes the upstream connection.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        h.clientLost(channel)
        self.assertTrue(upstream.disconnecting)
        upstream.reportLost()
        self.assertEqual(len(h.ended), 1)


class RegistryTests(SynchronousTestCase):
    def test_routeChangesCloseNothing(self) -> None:
        """
        Removing a tunnel's upstream from its host marks it draining and
        closes nothing; changing another host leaves it alone; the upstream
        coming back ends the draining.
        """
        h = TunnelHarness(routes={"a.com": ["10.0.0.1:80"], "b.com": ["10.0.0.3:80"]})
        channel, client, conn, upstream = h.open()
        table = h.resolver.table
        assert isinstance(table, RouteTable)
        h.resolver.apply({"b.com": None, "c.com": [parseUpstream("10.0.0.3:80")]})
        self.assertEqual(h.tunnels.counts(), {"a.com": (1, 0)})
        h.resolver.apply({"a.com": [parseUpstream("10.0.0.2:80")]})
        self.assertEqual(h.tunnels.counts(), {"a.com": (1, 1)})
        h.resolver.apply({"a.com": None})
        self.assertEqual(h.tunnels.counts(), {"a.com": (1, 1)})
        h.reactor.advance(50)
        channel.dataReceived(b"still")
        self.assertEqual(upstream.value().rsplit(b"\r\n\r\n", 1)[1], b"still")
        self.assertFalse(client.disconnecting or upstream.disconnecting)
        h.resolver.apply({"a.com": [parseUpstream("10.0.0.1:80")]})
        self.assertEqual(h.tunnels.counts(), {"a.com": (1, 0)})

    def test_routeChangeKeepsRequestInFlight(self) -> None:
        """
        A request in flight to an upstream that leaves its host's route
        completes: nothing is closed on a route change.
        """
        from tests.forward.test_resource import OK, _get

        h = TunnelHarness()
        _, client = h.connect(_get())
        conn, upstream = h.upstream()
        h.resolver.apply({"a.com": [parseUpstream("10.0.0.2:80")]})
        self.assertFalse(upstream.disconnecting or client.disconnecting)
        conn.dataReceived(OK)
        self.assertTrue(client.value().endswith(b"hello"))
        self.assertEqual(h.resource.inflight, 0)

    def test_drainTimeout(self) -> None:
        """
        With a tunnel drain timeout, a draining tunnel is closed after it.
        """
        h = TunnelHarness()
        h.tunnels.drainTimeout = 30.0
        channel, client, conn, upstream = h.open()
        h.resolver.apply({"a.com": [parseUpstream("10.0.0.2:80")]})
        h.reactor.advance(29)
        self.assertFalse(upstream.aborted)
        h.reactor.advance(1)
        self.assertTrue(upstream.aborted and client.aborted)

    def test_whenEmptyAndCloseAll(self) -> None:
        """
        whenEmpty waits for the open tunnels to end; closeAll drops them.
        """
        h = TunnelHarness()
        channel, client, conn, upstream = h.open()
        calls: list[int] = []
        h.tunnels.whenEmpty(lambda: calls.append(1))
        self.assertEqual(calls, [])
        self.assertEqual(h.tunnels.closeAll(), 1)
        self.assertTrue(upstream.aborted and client.aborted)
        upstream.reportLost()
        h.clientLost(channel)
        self.assertEqual(calls, [1])
        h.tunnels.whenEmpty(lambda: calls.append(2))
        self.assertEqual(calls, [1, 2])
