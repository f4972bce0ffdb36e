"""
Tests for L{revproxy.http.channel}: refusals, deadlines, limits, streaming
request bodies with flow control, 100-continue and pipelining, on in-memory
transports and a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.channel import ProxyChannel, ServerLimits
from revproxy.http.parser import HeadLimits
from revproxy.http.server import ProxySite
from tests.forward.test_resource import OK, ProxyHarness, _get, _headers


def _harness(**limits: Any) -> ProxyHarness:
    h = ProxyHarness()
    h.site = ProxySite(h.resource, reactor=h.reactor, limits=ServerLimits(**limits))
    h.site.timeOut = 60
    return h


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


POST = b"POST /up HTTP/1.1\r\nHost: a.com\r\nContent-Length: %d\r\n\r\n"
CHUNKED = b"POST /up HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n\r\n"


class RefusalTests(SynchronousTestCase):
    def test_framingErrorCloses(self) -> None:
        """
        A request with a framing error is answered with its status and
        Connection: close, the connection closes, and no upstream is asked.
        """
        h = _harness()
        _, client = h.client(
            b"POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.com\r\n\r\n"
        )
        line, headers, _ = _headers(client.value())
        self.assertEqual(_status(line), 400)
        self.assertIn((b"connection", b"close"), headers)
        self.assertTrue(client.disconnecting)
        self.assertEqual(h.endpoint().pending, [])
        self.assertEqual(h.site.refused, {400: 1})

    def test_refusalLogged(self) -> None:
        """
        A refusal is logged with the client's address, status and reason.
        """
        from twisted.logger import capturedLogs, formatEvent

        h = _harness()
        with capturedLogs() as events:
            h.client(b"GET / HTTP/1.2\r\nHost: a.com\r\n\r\n")
        [line] = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
        self.assertEqual(
            line, "refused a request from 192.0.2.7: 505 HTTP version not supported"
        )

    def test_nothingReadAfterRefusal(self) -> None:
        """
        After a refusal, later bytes are ignored.
        """
        h = _harness()
        channel, client = h.client(b"GET / HTTP/1.1\nHost: a.com\n\n")
        channel.dataReceived(_get())  # type: ignore[attr-defined]
        self.assertEqual(client.value().count(b"HTTP/1.1 "), 1)
        self.assertEqual(h.endpoint().pending, [])

    def test_refusalAfterPipelinedRequest(self) -> None:
        """
        A bad request pipelined after a good one is refused after the good
        one is answered.
        """
        h = _harness()
        _, client = h.client(_get() + b"GET / HTTP/1.2\r\nHost: a.com\r\n\r\n")
        self.assertEqual(client.value(), b"")
        conn, _ = h.upstream()
        conn.dataReceived(OK)
        value = client.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"HTTP/1.1 505 ", value)
        self.assertTrue(client.disconnecting)

    def test_maxConnections(self) -> None:
        """
        Past maxConnections, a connection gets no protocol (Twisted closes
        it at once) and is counted.
        """
        h = _harness(maxConnections=2)
        h.client()
        h.client()
        addr = IPv4Address("TCP", "192.0.2.7", 5555)
        self.assertIsNone(h.site.buildProtocol(addr))
        self.assertEqual(h.site.connectionsRefused, 1)

    def test_uriTooLong(self) -> None:
        """
        A target over --max-uri-size gets 414.
        """
        h = _harness(head=HeadLimits(maxUriSize=64))
        _, client = h.client(_get(path=b"/" + b"a" * 64))
        self.assertEqual(_status(client.value()), 414)

    def test_headersTooLarge(self) -> None:
        """
        A head over --max-header-size gets 431.
        """
        h = _harness(head=HeadLimits(maxHeaderSize=256))
        _, client = h.client(_get(extra=b"X: " + b"a" * 300 + b"\r\n"))
        self.assertEqual(_status(client.value()), 431)


class DeadlineTests(SynchronousTestCase):
    def test_headerTimeout(self) -> None:
        """
        A head that does not complete within the header timeout of its
        first byte gets 408 and the connection closes, however often bytes
        trickle in.
        """
        h = _harness(headerTimeout=10)
        channel, client = h.client(b"GET / HTTP/1.1\r\nX-A: ")
        for _ in range(9):
            h.reactor.advance(1)
            channel.dataReceived(b"a")  # type: ignore[attr-defined]
        self.assertEqual(client.value(), b"")
        h.reactor.advance(1)
        self.assertEqual(_status(client.value()), 408)
        self.assertTrue(client.disconnecting)

    def test_idleTimeout(self) -> None:
        """
        A connection that sends nothing is closed after the idle timeout,
        without a response; so is a kept-alive one after its response.
        """
        h = _harness()
        h.site.timeOut = 5
        _, client = h.client()
        h.reactor.advance(5)
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.value(), b"")
        channel, client = h.client(_get())
        conn, _ = h.upstream()
        h.reactor.advance(30)
        conn.dataReceived(OK)
        self.assertFalse(client.disconnecting)
        h.reactor.advance(4.9)
        self.assertFalse(client.disconnecting)
        h.reactor.advance(0.1)
        self.assertTrue(client.disconnecting)

    def test_idleThenHeaderTimeout(self) -> None:
        """
        The header timeout counts from a request's first byte, not from
        the start of the idle time before it.
        """
        h = _harness(headerTimeout=3)
        channel, client = h.client()
        h.reactor.advance(50)
        channel.dataReceived(b"GET / HT")  # type: ignore[attr-defined]
        h.reactor.advance(2.9)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.1)
        self.assertEqual(_status(client.value()), 408)

    def test_bodyTimeout(self) -> None:
        """
        A body that stalls for the body timeout gets 408, and the upstream
        request is aborted.
        """
        h = _harness(bodyTimeout=5)
        channel, client = h.client(POST % 10 + b"abc")
        conn, upstream = h.upstream()
        h.reactor.advance(4)
        channel.dataReceived(b"de")  # type: ignore[attr-defined]
        h.reactor.advance(4)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(1)
        self.assertEqual(_status(client.value()), 408)
        self.assertTrue(upstream.aborted)
        self.assertTrue(client.disconnecting)
        self.assertEqual(h.resource.inflight, 0)

    def test_bodyTimeoutNotWhilePaused(self) -> None:
        """
        Time the proxy kept the client paused (a slow upstream) does not
        count against the body timeout.
        """
        h = _harness(bodyTimeout=5)
        channel, client = h.client(POST % 10 + b"abc")
        conn, upstream = h.upstream()
        upstream.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        h.reactor.advance(20)
        self.assertEqual(client.value(), b"")
        upstream.producer.resumeProducing()
        self.assertEqual(client.producerState, "producing")
        h.reactor.advance(4.9)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(0.1)
        self.assertEqual(_status(client.value()), 408)


class BodyTests(SynchronousTestCase):
    def test_streamsBeforeComplete(self) -> None:
        """
        The upstream gets the head and the first body bytes before the
        client has sent the rest, with the client's Content-Length.
        """
        h = _harness()
        channel, client = h.client(POST % 6 + b"abc")
        conn, upstream = h.upstream()
        _, headers, body = _headers(upstream.value())
        self.assertIn((b"content-length", b"6"), headers)
        self.assertEqual(body, b"abc")
        channel.dataReceived(b"def")  # type: ignore[attr-defined]
        self.assertTrue(upstream.value().endswith(b"\r\n\r\nabcdef"))
        self.assertIsNone(upstream.producer)
        conn.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertFalse(client.disconnecting)

    def test_chunkedForwardedChunked(self) -> None:
        """
        A chunked body goes upstream chunked, with its trailers and no
        Content-Length.
        """
        h = _harness()
        channel, client = h.client(CHUNKED + b"3\r\nabc\r\n")
        conn, upstream = h.upstream()
        channel.dataReceived(b"2\r\nde\r\n0\r\nX-Sum: 5\r\nHost: evil\r\n\r\n")  # type: ignore[attr-defined]
        _, headers, body = _headers(upstream.value())
        self.assertIn((b"transfer-encoding", b"chunked"), headers)
        self.assertNotIn(b"content-length", dict(headers))
        self.assertEqual(body, b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")

    def test_smallChunkedWholeGoesWithLength(self) -> None:
        """
        A small chunked body without trailers that is already whole goes
        with the head, de-chunked, with a Content-Length: exactly one
        framing.
        """
        h = _harness()
        h.client(CHUNKED + b"3\r\nabc\r\n0\r\n\r\n")
        _, upstream = h.upstream()
        _, headers, body = _headers(upstream.value())
        self.assertIn((b"content-length", b"3"), headers)
        self.assertNotIn(b"transfer-encoding", dict(headers))
        self.assertEqual(body, b"abc")

    def test_flowControl(self) -> None:
        """
        A full upstream socket pauses the client; bytes that come before a
        connection exists are held, and past 64 KiB the client is paused.
        """
        h = _harness()
        channel, client = h.client(POST % 300_000)
        channel.dataReceived(b"x" * 70_000)  # type: ignore[attr-defined]
        self.assertEqual(client.producerState, "paused")
        conn, upstream = h.upstream()
        self.assertEqual(client.producerState, "producing")
        self.assertTrue(upstream.value().endswith(b"x" * 70_000))
        upstream.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        upstream.producer.resumeProducing()
        self.assertEqual(client.producerState, "producing")

    def test_maxBodyContentLength(self) -> None:
        """
        A Content-Length over --max-body-size gets 413 before any upstream
        is asked.
        """
        h = _harness(maxBodySize=100)
        _, client = h.client(POST % 101)
        self.assertEqual(_status(client.value()), 413)
        self.assertEqual(h.endpoint().pending, [])

    def test_maxBodyChunked(self) -> None:
        """
        A chunked body that crosses --max-body-size is cut off there: 413,
        and the upstream request is aborted.
        """
        h = _harness(maxBodySize=100)
        channel, client = h.client(CHUNKED + b"40\r\n" + b"a" * 64 + b"\r\n")
        conn, upstream = h.upstream()
        channel.dataReceived(b"40\r\n" + b"a" * 64 + b"\r\n")  # type: ignore[attr-defined]
        self.assertEqual(_status(client.value()), 413)
        self.assertTrue(upstream.aborted)
        self.assertTrue(client.disconnecting)

    def test_clientGoneMidBody(self) -> None:
        """
        A client that leaves in the middle of its body aborts the upstream
        request.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        h = _harness()
        channel, client = h.client(POST % 10 + b"abc")
        conn, upstream = h.upstream()
        channel.connectionLost(Failure(ConnectionLost()))  # type: ignore[attr-defined]
        self.assertTrue(upstream.aborted)
        self.assertEqual(h.resource.inflight, 0)

    def test_earlyResponseDrains(self) -> None:
        """
        An upstream that answers before the body is complete and keeps its
        connection: the client gets the answer, the rest of its body still
        goes upstream, and then both connections carry the next request.
        """
        h = _harness()
        channel, client = h.client(POST % 6 + b"abc")
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(_status(client.value()), 200)
        self.assertNotIn(b"onnection: close", client.value())
        channel.dataReceived(b"def" + _get(path=b"/next"))  # type: ignore[attr-defined]
        self.assertIn(b"\r\n\r\nabcdefGET /next ", upstream.value())
        conn.dataReceived(OK)
        self.assertEqual(client.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertFalse(client.disconnecting)
        self.assertEqual(h.endpoint().pending, [])

    def test_earlyResponseDrainFails(self) -> None:
        """
        A client that stalls in the body after an early answer is dropped
        at the body timeout, and so is the upstream connection that waited
        for the body.
        """
        h = _harness(bodyTimeout=5)
        channel, client = h.client(POST % 6 + b"abc")
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        h.reactor.advance(5)
        self.assertTrue(client.disconnecting)
        self.assertTrue(upstream.aborted)
        self.assertEqual(client.value().count(b"HTTP/1.1 "), 1)

    def test_earlyResponseUpstreamCloses(self) -> None:
        """
        An upstream that answers early and closes: the client's connection
        closes after the answer (the unread rest of its body cannot be told
        from a next request).
        """
        h = _harness()
        channel, client = h.client(POST % 100 + b"abc")
        conn, upstream = h.upstream()
        conn.dataReceived(
            b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(_status(client.value()), 413)
        self.assertTrue(client.disconnecting)
        self.assertTrue(upstream.disconnecting)

    def test_retryReplaysBody(self) -> None:
        """
        A request whose connection is refused goes to the next upstream
        with its whole body, even one that streamed in pieces.
        """
        h = ProxyHarness(routes={"a.com": ["10.0.0.1:80", "10.0.0.2:80"]})
        channel, client = h.client(POST % 6 + b"abc")
        h.endpoint("10.0.0.1:80").fail()
        channel.dataReceived(b"def")  # type: ignore[attr-defined]
        _, upstream = h.upstream("10.0.0.2:80")
        self.assertTrue(upstream.value().endswith(b"\r\n\r\nabcdef"))

    def test_staleConnectionReplaysBody(self) -> None:
        """
        A POST whose pooled connection turns out closed before any answer
        is not replayed (it may have been processed) - but one that never
        reached the upstream (connect failed) is.
        """
        h = ProxyHarness()
        channel, client = h.client(_get())
        conn, upstream = h.upstream()
        conn.dataReceived(OK)
        channel.dataReceived(POST % 3 + b"abc")  # type: ignore[attr-defined]
        upstream.reportLost()
        self.assertIn(b"HTTP/1.1 502 ", client.value())


class ContinueTests(SynchronousTestCase):
    def test_continueWhenConnected(self) -> None:
        """
        Expect: 100-continue is answered once an upstream is connected, and
        not before.
        """
        h = _harness()
        channel, client = h.client(
            b"POST / HTTP/1.1\r\nHost: a.com\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        self.assertEqual(client.value(), b"")
        conn, upstream = h.upstream()
        self.assertEqual(client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertNotIn(b"expect", upstream.value().lower())
        channel.dataReceived(b"abc")  # type: ignore[attr-defined]
        self.assertTrue(upstream.value().endswith(b"abc"))

    def test_noContinueForUnroutedHost(self) -> None:
        """
        A request with no route gets its final status without a 100, and
        the connection closes, its body unread.
        """
        h = _harness()
        _, client = h.client(
            b"POST / HTTP/1.1\r\nHost: nowhere.com\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        value = client.value()
        self.assertNotIn(b" 100 ", value)
        self.assertEqual(_status(value) // 100, 4)
        self.assertTrue(client.disconnecting)

    def test_noContinueWhenTooLarge(self) -> None:
        """
        A body over --max-body-size gets 413 without a 100.
        """
        h = _harness(maxBodySize=10)
        _, client = h.client(
            b"POST / HTTP/1.1\r\nHost: a.com\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
        )
        self.assertTrue(client.value().startswith(b"HTTP/1.1 413 "))


class PipelineTests(SynchronousTestCase):
    def test_inOrder(self) -> None:
        """
        Pipelined requests are answered in order, one at a time, and the
        client is not read while a request waits.
        """
        h = _harness()
        _, client = h.client(_get(path=b"/1") + _get(path=b"/2"))
        self.assertEqual(client.producerState, "paused")
        conn, upstream = h.upstream()
        self.assertTrue(upstream.value().startswith(b"GET /1 "))
        conn.dataReceived(OK)
        self.assertIn(b"GET /2 ", upstream.value())
        self.assertEqual(client.producerState, "producing")
        conn.dataReceived(OK)
        self.assertEqual(client.value().count(b"200 OK"), 2)

    def test_connectionClose(self) -> None:
        """
        A request with Connection: close is answered with Connection: close
        and the connection closes after the response.
        """
        h = _harness()
        _, client = h.client(_get(extra=b"Connection: close\r\n"))
        conn, _ = h.upstream()
        conn.dataReceived(OK)
        self.assertIn(b"Connection: close\r\n", client.value())
        self.assertTrue(client.disconnecting)

    def test_http10Closes(self) -> None:
        """
        An HTTP/1.0 request is answered and the connection closed.
        """
        h = _harness()
        _, client = h.client(b"GET / HTTP/1.0\r\nHost: a.com\r\n\r\n")
        conn, _ = h.upstream()
        conn.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.0 200 OK"))
        self.assertTrue(client.disconnecting)


class AddressTests(SynchronousTestCase):
    def test_isChannel(self) -> None:
        """
        The site builds L{ProxyChannel}s.
        """
        h = _harness()
        channel, _ = h.client()
        self.assertIsInstance(channel, ProxyChannel)
        self.assertIsInstance(channel.transport, StringTransport)  # type: ignore[attr-defined]


class UpgradeTests(SynchronousTestCase):
    UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a.com\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"

    def test_refusedUpgradeGoesOn(self) -> None:
        """
        An upgrade the upstream refuses is a normal response, and the
        request pipelined after it is read and answered.
        """
        h = _harness()
        _, client = h.client(self.UPGRADE + _get(path=b"/again"))
        conn, upstream = h.upstream()
        conn.dataReceived(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"GET /again ", upstream.value())
        conn.dataReceived(OK)
        self.assertIn(b"HTTP/1.1 426 ", client.value())
        self.assertIn(b"HTTP/1.1 200 OK", client.value())
        self.assertFalse(client.disconnecting)

    def test_h2cNotOffered(self) -> None:
        """
        Upgrade: h2c is not offered upstream; the request goes as a plain
        one.
        """
        h = _harness()
        h.client(
            b"GET / HTTP/1.1\r\nHost: a.com\r\nConnection: upgrade, http2-settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        _, upstream = h.upstream()
        sent = upstream.value().lower()
        self.assertNotIn(b"upgrade", sent)
        self.assertNotIn(b"http2-settings", sent)

    def test_bytesBeforeSwitchKept(self) -> None:
        """
        Bytes that arrive after an upgrade request, before the upstream
        switched, go through the tunnel once it has.
        """
        h = _harness()
        channel, client = h.client(self.UPGRADE + b"first")
        self.assertEqual(client.producerState, "paused")
        channel.dataReceived(b" second")  # type: ignore[attr-defined]
        conn, upstream = h.upstream()
        conn.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        self.assertTrue(upstream.value().endswith(b"\r\n\r\nfirst second"))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 101 "))
        self.assertEqual(client.producerState, "producing")


class DrainTests(SynchronousTestCase):
    def test_idleGrace(self) -> None:
        """
        An idle connection is closed after the site's drain grace; a
        request that arrives within it is answered with Connection: close,
        then the connection closes.
        """
        h = _harness()
        channel, client = h.client()
        _, idle = h.client()
        d = h.site.closeConnections()
        self.assertFalse(client.disconnecting)
        channel.dataReceived(_get())  # type: ignore[attr-defined]
        conn, _ = h.upstream()
        h.reactor.advance(h.site.drainGrace)
        self.assertTrue(idle.disconnecting)
        self.assertFalse(client.disconnecting)
        conn.dataReceived(OK)
        self.assertIn(b"Connection: close\r\n", client.value())
        self.assertTrue(client.disconnecting)
        self.assertNoResult(d)

    def test_busyClosesAfterResponse(self) -> None:
        """
        A connection with a request in progress closes once it is answered.
        """
        h = _harness()
        _, client = h.client(_get())
        conn, _ = h.upstream()
        h.site.closeConnections()
        self.assertFalse(client.disconnecting)
        conn.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"Connection: close\r\n", client.value())
        self.assertTrue(client.disconnecting)
