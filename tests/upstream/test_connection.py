"""
Tests for L{revproxy.upstream.connection} and L{revproxy.upstream.body}: the
HTTP/1.1 response parser and request sending with flow control.
"""

from __future__ import annotations

import io

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.body import RequestBody
from revproxy.routing import Upstream
from revproxy.upstream.body import BODY_CHUNK
from revproxy.upstream.connection import (
    MalformedResponse,
    UpstreamClosed,
    UpstreamConnection,
)
from revproxy.upstream.pool import UpstreamPool
from tests.fakes import AbortableTransport, FakeEndpoint, RecordingReceiver
from tests.http.test_body import Reader

UP = Upstream("http", "10.0.0.1", 80)
HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


class PoolHarness:
    """
    A started pool whose single endpoint is a L{FakeEndpoint}.
    """

    def __init__(self, **kw: object) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.pool = UpstreamPool(
            self.reactor, endpointFactory=lambda u: self.endpoint, **kw  # type: ignore[arg-type]
        )
        self.pool.startService()

    def connect(self, upstream: Upstream = UP, fresh: bool = False) -> list[UpstreamConnection]:
        got: list[UpstreamConnection] = []
        self.pool.connection(upstream, got.append, lambda f: got.append(f), fresh)  # type: ignore[arg-type]
        return got

    def exchange(
        self, response: bytes, head: bytes = HEAD, isHead: bool = False
    ) -> tuple[RecordingReceiver, UpstreamConnection, AbortableTransport]:
        """
        Send one request over a new connection and feed C{response} back.
        """
        got = self.connect(fresh=True)
        self.endpoint.succeed()
        conn = got[0]
        ex = RecordingReceiver()
        conn.send(head, None, ex, isHead)
        transport = conn.transport
        if response:
            conn.dataReceived(response)
        return ex, conn, transport  # type: ignore[return-value]


class ParserTests(SynchronousTestCase):
    def test_contentLength(self) -> None:
        """
        A Content-Length response is delivered whole, headers in order with
        repeats, and the connection goes back to the pool.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"
        )
        self.assertEqual(
            ex.started,
            (200, b"OK", [(b"Content-Length", b"5"), (b"X-A", b"1"), (b"x-a", b"2")]),
        )
        self.assertEqual(b"".join(ex.body), b"hello")
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), HEAD)

    def test_everySplit(self) -> None:
        """
        A response split at any byte parses the same, chunked or not.
        """
        responses = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
        ]
        for response in responses:
            for i in range(len(response) + 1):
                for j in range(i, len(response) + 1, 7):
                    h = PoolHarness()
                    got = h.connect()
                    h.endpoint.succeed()
                    conn = got[0]
                    ex = RecordingReceiver()
                    conn.send(HEAD, None, ex, False)
                    for part in (response[:i], response[i:j], response[j:]):
                        if part:
                            conn.dataReceived(part)
                    self.assertEqual(b"".join(ex.body), b"hello world", (response, i, j))
                    self.assertTrue(ex.ended)
                    self.assertEqual(ex.started[0], 200)  # type: ignore[index]
                    self.assertEqual(h.pool.idleCount(), 1)

    def test_chunkedNoTrailers(self) -> None:
        """
        A chunked response without trailers ends at the last chunk's CRLF.
        """
        h = PoolHarness()
        ex, conn, _ = h.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(b"".join(ex.body), b"abc")
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 1)

    def test_transferEncodingBeatsLength(self) -> None:
        """
        With both Transfer-Encoding and Content-Length, the chunked framing
        rules, Content-Length is not passed on, and the connection is not
        reused.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(b"".join(ex.body), b"abc")
        self.assertNotIn(b"Content-Length", [n for n, v in ex.started[2]])  # type: ignore[index]
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 0)
        self.assertTrue(transport.disconnecting)

    def test_noBodyResponses(self) -> None:
        """
        HEAD responses, 204 and 304 have no body whatever their headers say.
        """
        for response, isHead in [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", True),
            (b"HTTP/1.1 204 No Content\r\n\r\n", False),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", False),
        ]:
            h = PoolHarness()
            ex, conn, _ = h.exchange(response, isHead=isHead)
            self.assertTrue(ex.ended, response)
            self.assertEqual(ex.body, [])
            self.assertEqual(h.pool.idleCount(), 1)

    def test_untilClose(self) -> None:
        """
        A response with no framing is read until the upstream closes, and
        the connection is not reused.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(b"HTTP/1.1 200 OK\r\n\r\nsome")
        conn.dataReceived(b" more")
        self.assertFalse(ex.ended)
        transport.reportLost()
        self.assertTrue(ex.ended)
        self.assertEqual(b"".join(ex.body), b"some more")
        self.assertEqual(h.pool.idleCount(), 0)

    def test_http10NotReused(self) -> None:
        """
        An HTTP/1.0 response or one with Connection: close closes the
        connection after it.
        """
        for response in [
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ]:
            h = PoolHarness()
            ex, conn, transport = h.exchange(response)
            self.assertTrue(ex.ended)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(h.pool.idleCount(), 0)

    def test_http10KeepAlive(self) -> None:
        """
        An HTTP/1.0 response with Connection: keep-alive may be reused.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(h.pool.idleCount(), 1)

    def test_malformed(self) -> None:
        """
        Broken status lines, header lines, lengths and chunks fail the
        exchange with L{MalformedResponse} and abort the connection.
        """
        for response in [
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70000,
        ]:
            h = PoolHarness()
            ex, conn, transport = h.exchange(response)
            self.assertIsNotNone(ex.failure, response)
            reason, responseBytes = ex.failure  # type: ignore[misc]
            reason.trap(MalformedResponse)
            self.assertTrue(responseBytes)
            self.assertTrue(transport.aborted, response)
            self.assertEqual(h.pool.idleCount(), 0)

    def test_repeatedEqualLength(self) -> None:
        """
        Repeated identical Content-Length values are accepted.
        """
        h = PoolHarness()
        ex, conn, _ = h.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertTrue(ex.ended)

    def test_extraBytesNotReused(self) -> None:
        """
        Bytes beyond the declared length mean the upstream broke framing:
        the connection is closed, not pooled.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"
        )
        self.assertEqual(b"".join(ex.body), b"ok")
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 0)
        self.assertTrue(transport.disconnecting)

    def test_closedEarly(self) -> None:
        """
        A close before the response is complete fails the exchange with
        L{UpstreamClosed}, telling whether response bytes had arrived.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(b"")
        transport.reportLost()
        reason, responseBytes = ex.failure  # type: ignore[misc]
        reason.trap(UpstreamClosed)
        self.assertFalse(responseBytes)

        h = PoolHarness()
        ex, conn, transport = h.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
        transport.reportLost()
        reason, responseBytes = ex.failure  # type: ignore[misc]
        reason.trap(UpstreamClosed)
        self.assertTrue(responseBytes)

    def test_abortStopsCallbacks(self) -> None:
        """
        After C{abort} the exchange hears nothing more, even if data or the
        close arrive.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
        conn.abort()
        conn.dataReceived(b"def")
        transport.reportLost()
        self.assertEqual(b"".join(ex.body), b"abc")
        self.assertFalse(ex.ended)
        self.assertIsNone(ex.failure)
        self.assertTrue(transport.aborted)

    def test_pausedConnectionResumedOnRelease(self) -> None:
        """
        A connection paused by a slow client when its response ends reads
        again before it goes back to the pool.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        conn.pauseReading()
        conn.dataReceived(b"def")
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 1)
        self.assertEqual(transport.producerState, "producing")

    def test_flowControl(self) -> None:
        """
        pauseReading and resumeReading pause and resume the transport.
        """
        h = PoolHarness()
        ex, conn, transport = h.exchange(b"")
        conn.pauseReading()
        self.assertEqual(transport.producerState, "paused")
        conn.resumeReading()
        self.assertEqual(transport.producerState, "producing")


class SendTests(SynchronousTestCase):
    def _conn(self) -> tuple[PoolHarness, UpstreamConnection, AbortableTransport]:
        h = PoolHarness()
        got = h.connect()
        h.endpoint.succeed()
        return h, got[0], got[0].transport  # type: ignore[return-value]

    def test_smallBody(self) -> None:
        """
        A body given as bytes goes out in the same write as the head.
        """
        h, conn, transport = self._conn()
        conn.send(b"HEAD\r\n\r\n", b"body", RecordingReceiver(), False)
        self.assertEqual(transport.value(), b"HEAD\r\n\r\nbody")

    def test_streamedBody(self) -> None:
        """
        A body given as a file is written one chunk each time the transport
        asks for more, then the producer is unregistered.
        """
        h, conn, transport = self._conn()
        data = b"x" * (BODY_CHUNK * 2 + 10)
        conn.send(b"H\r\n\r\n", io.BytesIO(data), RecordingReceiver(), False)
        self.assertEqual(transport.value(), b"H\r\n\r\n")
        self.assertFalse(transport.streaming)
        producer = transport.producer
        for expected in (BODY_CHUNK, BODY_CHUNK, 10):
            transport.clear()
            producer.resumeProducing()
            self.assertEqual(len(transport.value()), expected)
        self.assertIsNone(transport.producer)

    def test_spliceTarget(self) -> None:
        """
        A streamed body of known length offers the upstream's transport for
        splicing only if it is a plain TCP one with nothing buffered
        (L{revproxy._compat.sendsNow}); a chunked body, whose framing is
        written here, never does, nor a closed sender.
        """
        from revproxy.upstream import body as bodyModule
        from revproxy.upstream.body import BodyStream

        h, conn, transport = self._conn()
        stream = BodyStream(conn, RequestBody(Reader(), 10, 0), lambda s, m: None)
        self.assertIsNone(stream.spliceTarget())  # a StringTransport
        self.patch(bodyModule, "sendsNow", lambda t: t is transport)
        self.assertIs(stream.spliceTarget(), transport)
        stream.close()
        self.assertIsNone(stream.spliceTarget())
        chunked = BodyStream(conn, RequestBody(Reader(), -1, 0), lambda s, m: None)
        self.assertIsNone(chunked.spliceTarget())

    def test_bodyDoneAtLastByte(self) -> None:
        """
        The body sender finishes as soon as it wrote the last byte, so a
        response arriving before the transport asks for more still leaves
        the connection reusable (a new connection per POST otherwise).
        """
        h, conn, transport = self._conn()
        ex = RecordingReceiver()
        conn.send(b"H\r\n\r\n", io.BytesIO(b"x" * BODY_CHUNK), ex, False)
        transport.producer.resumeProducing()
        self.assertIsNone(transport.producer)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(ex.ended)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(h.pool.idleCount(), 1)

    def test_earlyResponseKeepAlive(self) -> None:
        """
        A response that ends before the body is sent, on a connection the
        upstream keeps open, ends the exchange at once; the rest of the body
        is still sent (the upstream discards it) and then the connection
        goes back to the pool.
        """
        h, conn, transport = self._conn()
        ex = RecordingReceiver()
        conn.send(b"H\r\n\r\n", io.BytesIO(b"x" * BODY_CHUNK * 3), ex, False)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 0)
        producer = transport.producer
        for _ in range(3):
            producer.resumeProducing()
        self.assertIsNone(transport.producer)
        self.assertEqual(len(transport.value()), 5 + BODY_CHUNK * 3)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(h.pool.idleCount(), 1)

    def test_spoolClosedWhileSending(self) -> None:
        """
        A body spooled to a file is still sent whole after the request's
        spool is closed (Twisted closes it when the response is finished),
        and the sender's own descriptor is closed at the end.
        """
        import tempfile

        h, conn, transport = self._conn()
        spool = tempfile.TemporaryFile()
        data = bytes(range(256)) * (BODY_CHUNK // 128)
        spool.write(data)
        spool.seek(0)
        conn.send(b"H\r\n\r\n", spool, RecordingReceiver(), False)
        sender = transport.producer
        spool.close()
        while transport.producer is not None:
            transport.producer.resumeProducing()
        self.assertEqual(transport.value(), b"H\r\n\r\n" + data)
        self.assertEqual(sender._fd, -1)

    def test_earlyResponseClose(self) -> None:
        """
        A response that ends before the body is sent and closes the
        connection stops the body and closes our side too.
        """
        h, conn, transport = self._conn()
        ex = RecordingReceiver()
        conn.send(b"H\r\n\r\n", io.BytesIO(b"x" * BODY_CHUNK * 3), ex, False)
        conn.dataReceived(
            b"HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertTrue(ex.ended)
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(h.pool.idleCount(), 0)

    def test_earlyResponseThenAbort(self) -> None:
        """
        An abort while the rest of the body is being sent drops the
        connection instead of pooling it.
        """
        h, conn, transport = self._conn()
        conn.send(b"H\r\n\r\n", io.BytesIO(b"x" * BODY_CHUNK * 3), RecordingReceiver(), False)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        conn.abort()
        self.assertTrue(transport.aborted)
        transport.reportLost()
        self.assertEqual(h.pool.idleCount(), 0)


SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\n\r\n"
)


class SwitchingProtocolsTests(SynchronousTestCase):
    def _upgrade(self, h: PoolHarness) -> tuple[RecordingReceiver, UpstreamConnection]:
        got = h.connect(fresh=True)
        h.endpoint.succeed()
        conn = got[0]
        ex = RecordingReceiver()
        conn.send(HEAD, None, ex, False, upgrade=True)
        return ex, conn

    def test_switch(self) -> None:
        """
        A 101 to an upgrade request hands the exchange its head and the
        bytes after it, and the connection leaves the pool for good.
        """
        h = PoolHarness()
        ex, conn = self._upgrade(h)
        conn.dataReceived(SWITCH + b"first")
        self.assertEqual(
            ex.switched,
            (b"Switching Protocols",
             [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")],
             b"first"),
        )
        self.assertIsNone(ex.started)
        self.assertFalse(conn.transport.aborted)  # type: ignore[union-attr]
        self.assertEqual((h.pool.busyCount(), h.pool.idleCount()), (0, 0))

    def test_interimThenSwitch(self) -> None:
        """
        An interim 100 before the 101 is skipped.
        """
        h = PoolHarness()
        ex, conn = self._upgrade(h)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCH)
        self.assertEqual(ex.switched[2], b"")

    def test_tunnelGetsTheConnection(self) -> None:
        """
        After the switch, bytes, a half-close and the close go to the
        tunnel, and the connection never returns to the pool.
        """
        from tests.fakes import RecordingTunnel

        h = PoolHarness()
        ex, conn = self._upgrade(h)
        conn.dataReceived(SWITCH)
        tunnel = conn.tunnel = RecordingTunnel()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        conn.readConnectionLost()
        self.assertEqual(tunnel.received, [b"HTTP/1.1 200 OK\r\n\r\n"])
        self.assertTrue(tunnel.readClosed)
        conn.transport.reportLost()  # type: ignore[union-attr]
        self.assertIsNotNone(tunnel.lost)
        self.assertIsNone(conn.tunnel)
        self.assertEqual(h.pool.idleCount(), 0)

    def test_otherAnswer(self) -> None:
        """
        Any other answer to an upgrade request is a response, and the
        connection goes back to the pool.
        """
        h = PoolHarness()
        ex, conn = self._upgrade(h)
        conn.dataReceived(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno")
        self.assertEqual(ex.started[0], 426)  # type: ignore[index]
        self.assertTrue(ex.ended)
        self.assertEqual(h.pool.idleCount(), 1)
