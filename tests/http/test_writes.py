"""
Tests for how L{revproxy.http.channel.ProxyChannel} writes responses: the
head goes with the first body bytes in one write, a head without a body is
not held back, and client connections have C{TCP_NODELAY} and read 256 KiB
at once.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from revproxy.upstream.connection import READ_SIZE, UpstreamConnection
from tests.forward.test_resource import ProxyHarness, _get, _headers


@implementer(ITCPTransport)
class RecordingTransport(StringTransport):
    """
    A client transport that keeps each write apart and records
    C{setTcpNoDelay}.
    """

    noDelay = False
    bufferSize = 64 * 1024

    def __init__(self) -> None:
        super().__init__(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 5555),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 3000),
        )
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


def _client(h: ProxyHarness, data: bytes) -> RecordingTransport:
    channel = h.site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 5555))
    transport = RecordingTransport()
    channel.makeConnection(transport)  # type: ignore[union-attr]
    channel.dataReceived(data)  # type: ignore[union-attr]
    return transport


def _answered(
    response: bytes, request: bytes = _get()
) -> tuple[RecordingTransport, UpstreamConnection]:
    """
    The client's transport once the upstream began to answer C{request}
    with C{response}, and the upstream connection.
    """
    h = ProxyHarness()
    client = _client(h, request)
    conn, _ = h.upstream()
    conn.dataReceived(response)
    return client, conn


class ResponseWriteTests(SynchronousTestCase):
    def test_headAndBodyInOneWrite(self) -> None:
        """
        A response whose head and body come in one read from the upstream
        reaches the client in one write.
        """
        client, _ = _answered(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: d\r\n\r\nhello")
        self.assertEqual(len(client.writes), 1)
        self.assertTrue(client.writes[0].startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(client.writes[0].endswith(b"\r\n\r\nhello"))

    def test_noBody(self) -> None:
        """
        A response without a body (a 204) is written whole when it ends.
        """
        client, _ = _answered(b"HTTP/1.1 204 No Content\r\nDate: d\r\n\r\n")
        self.assertEqual(len(client.writes), 1)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertTrue(client.value().endswith(b"\r\n\r\n"))

    def test_headRequest(self) -> None:
        """
        The answer to a HEAD request, which has no body, is written when it
        ends.
        """
        client, _ = _answered(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: d\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: a.com\r\n\r\n",
        )
        status, headers, body = _headers(client.value())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertIn((b"content-length", b"5"), headers)
        self.assertEqual(body, b"")

    def test_headAloneIsNotHeldBack(self) -> None:
        """
        A head that arrives alone, its body to come later (an event stream,
        a long poll), reaches the client at once.
        """
        client, conn = _answered(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nDate: d\r\n\r\n"
        )
        status, headers, body = _headers(client.value())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertIn((b"content-type", b"text/event-stream"), headers)
        self.assertEqual(body, b"")
        conn.dataReceived(b"6\r\ndata 1\r\n")
        self.assertTrue(client.value().endswith(b"\r\n\r\n6\r\ndata 1\r\n"))
        conn.dataReceived(b"0\r\n\r\n")
        self.assertTrue(client.value().endswith(b"0\r\n\r\n"))

    def test_interimResponseIsNotTheHead(self) -> None:
        """
        An interim response (100 Continue) that arrives alone is not taken
        for the final head.
        """
        client, conn = _answered(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.value(), b"")
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: d\r\n\r\nok")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(client.value().endswith(b"ok"))

    def test_relayedFieldsInOrder(self) -> None:
        """
        The upstream's fields reach the client in its order, repetitions
        kept, hop-by-hop ones and those its Connection names dropped, and one
        Content-Length.
        """
        client, _ = _answered(
            b"HTTP/1.1 200 OK\r\nX-B: 1\r\nContent-Length: 2\r\nX-A: 2\r\n"
            b"Connection: keep-alive, X-Gone\r\nX-Gone: 3\r\nKeep-Alive: timeout=5\r\n"
            b"X-B: 4\r\nDate: d\r\n\r\nok"
        )
        _, headers, body = _headers(client.value())
        names = [name for name, _ in headers]
        self.assertEqual(
            [h for h in headers if h[0].startswith(b"x-") and h[0] != b"x-request-id"],
            [(b"x-b", b"1"), (b"x-a", b"2"), (b"x-b", b"4")],
        )
        self.assertEqual(names.count(b"content-length"), 1)
        self.assertEqual(names.count(b"date"), 1)
        self.assertNotIn(b"keep-alive", names)
        self.assertNotIn(b"connection", names)
        self.assertEqual(body, b"ok")

    def test_dateNamedInConnection(self) -> None:
        """
        A Date the upstream names in its Connection header is dropped, and
        the proxy sends its own.
        """
        client, _ = _answered(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Date\r\n"
            b"Date: upstream\r\n\r\nok"
        )
        _, headers, _ = _headers(client.value())
        dates = [value for name, value in headers if name == b"date"]
        self.assertEqual(len(dates), 1)
        self.assertNotEqual(dates[0], b"upstream")

    def test_noDelay(self) -> None:
        """
        A TCP client connection has TCP_NODELAY: a write of a response's
        last bytes does not wait for the client's delayed ACK.
        """
        client = _client(ProxyHarness(), b"")
        self.assertTrue(client.noDelay)

    def test_readSize(self) -> None:
        """
        Client and upstream connections read 256 KiB at once, not Twisted's
        64 KiB.
        """
        h = ProxyHarness()
        client = _client(h, _get())
        self.assertEqual(client.bufferSize, 256 * 1024)
        conn = UpstreamConnection(h.pool, ("http", "10.0.0.1", 80))
        upstream = RecordingTransport()
        conn.makeConnection(upstream)
        self.assertEqual(upstream.bufferSize, READ_SIZE)
        self.assertEqual(READ_SIZE, 256 * 1024)
        self.assertTrue(upstream.noDelay)
