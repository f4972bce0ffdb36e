"""
Tests for L{revproxy.http.splice}: request bodies moved from the client's
socket to the upstream's by the kernel, on real socket pairs; and the
channel's side of it (L{ProxyChannel.readPlan}, L{ProxyChannel.bodySpliced})
on in-memory transports.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import main
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from revproxy.http import splice
from revproxy.http.splice import HEAD_READ, SpliceReader, spliceBody, spliceReader
from tests.forward.test_resource import OK
from tests.http.test_channel import POST, _harness, _status


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class SinkTransport:
    """
    A transport whose socket is real, as a plain TCP transport's is, and
    whose C{write} records what went through it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.written: list[bytes] = []
        self.aborted = False

    def getHandle(self) -> socket.socket:
        return self.socket

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abortConnection(self) -> None:
        self.aborted = True


def _readAll(sock: socket.socket) -> bytes:
    parts = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not data:
            break
        parts.append(data)
    return b"".join(parts)


class SpliceBodyTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not hasattr(os, "splice"):
            raise SkipTest("no splice(2) here")
        self.clientIn, self.clientOut = _pair()  # the client writes clientIn
        self.upIn, self.upOut = _pair()  # the proxy writes upIn
        for s in (self.clientIn, self.clientOut, self.upIn, self.upOut):
            self.addCleanup(s.close)
        self.sink = SinkTransport(self.upIn)

    def test_moves(self) -> None:
        """
        The bytes go from one socket to the other, and their count is
        returned; nothing goes through the transport's write.
        """
        data = bytes(range(256)) * 100
        self.clientIn.sendall(data)
        moved = spliceBody(self.clientOut.fileno(), len(data), self.sink)
        self.assertEqual(moved, len(data))
        self.assertEqual(_readAll(self.upOut), data)
        self.assertEqual(self.sink.written, [])

    def test_noMoreThanAsked(self) -> None:
        """
        Only the rest of the body moves: the next request's bytes stay in
        the client's socket, to be read as usual.
        """
        self.clientIn.sendall(b"body!GET / HTTP/1.1\r\n")
        self.assertEqual(spliceBody(self.clientOut.fileno(), 5, self.sink), 5)
        self.assertEqual(_readAll(self.upOut), b"body!")
        self.assertEqual(self.clientOut.recv(100), b"GET / HTTP/1.1\r\n")

    def test_endOfStream(self) -> None:
        """
        A client that closed gives C{0}.
        """
        self.clientIn.close()
        self.assertEqual(spliceBody(self.clientOut.fileno(), 10, self.sink), 0)

    def test_nothingToRead(self) -> None:
        """
        Nothing to read now raises L{BlockingIOError}, and moves nothing.
        """
        self.assertRaises(BlockingIOError, spliceBody, self.clientOut.fileno(), 10, self.sink)
        self.assertEqual(self.sink.written, [])

    def test_fullSinkThroughTransport(self) -> None:
        """
        What the upstream's socket does not take goes through its
        transport's write, in order after what it took; the pipe is left
        empty, so the next body moves alone.
        """
        self.upIn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = os.urandom(200_000)
        sent = 0
        moved = 0
        # The client's socket holds less than the body at once: feed it.
        while moved < len(data):
            sent += self.clientIn.send(data[sent : sent + 50_000])
            moved += spliceBody(self.clientOut.fileno(), len(data) - moved, self.sink)
        self.assertTrue(self.sink.written, "the upstream socket never filled")
        self.assertEqual(_readAll(self.upOut) + b"".join(self.sink.written), data)
        self.assertFalse(self.sink.aborted)
        other = SinkTransport(self.upIn)
        self.clientIn.sendall(b"next")
        _readAll(self.upOut)
        self.assertEqual(spliceBody(self.clientOut.fileno(), 4, other), 4)
        self.assertEqual(_readAll(self.upOut) + b"".join(other.written), b"next")

    def test_failedSinkThroughTransport(self) -> None:
        """
        An upstream socket that fails (its peer closed) gets the bytes
        through its transport's write, which meets the error and closes the
        connection as for any write.
        """
        self.upOut.close()
        self.clientIn.sendall(b"abc")
        self.assertEqual(spliceBody(self.clientOut.fileno(), 3, self.sink), 3)
        self.assertEqual(self.sink.written, [b"abc"])

    def test_pipeNeverLeftFull(self) -> None:
        """
        If the bytes cannot be taken out of the pipe, they are dropped and
        the upstream's connection aborted: no byte is left for another
        connection.
        """
        real = splice._readAll

        def failing(fd: int, size: int) -> bytes:
            raise OSError("no")

        self.upIn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.clientIn.sendall(b"x" * 100_000)
        self.patch(splice, "_readAll", failing)
        self.assertRaises(OSError, spliceBody, self.clientOut.fileno(), 100_000, self.sink)
        self.assertTrue(self.sink.aborted)
        self.patch(splice, "_readAll", real)
        _readAll(self.clientOut)
        _readAll(self.upOut)
        other = SinkTransport(self.upIn)
        self.clientIn.sendall(b"next")
        self.assertEqual(spliceBody(self.clientOut.fileno(), 4, other), 4)
        self.assertEqual(_readAll(self.upOut) + b"".join(other.written), b"next")


class Channel:
    """
    What a L{SpliceReader} reads for: a plan, and a record of what came.
    """

    def __init__(self, plan: tuple[int, Any]) -> None:
        self.plan = plan
        self.data: list[bytes] = []
        self.spliced: list[int] = []

    def readPlan(self) -> tuple[int, Any]:
        return self.plan

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def bodySpliced(self, size: int) -> None:
        self.spliced.append(size)


class ReaderTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def getHandle(self) -> socket.socket:
        return self.socket

    def doRead(self) -> None:
        raise AssertionError("the transport's own read")


class SpliceReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not hasattr(os, "splice"):
            raise SkipTest("no splice(2) here")
        self.a, self.b = _pair()
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)

    def test_readsWhatThePlanSays(self) -> None:
        """
        An ordinary read takes at most the planned size, and hands it to
        the channel.
        """
        channel = Channel((4, None))
        reader = SpliceReader(channel, ReaderTransport(self.b))
        self.a.sendall(b"abcdefgh")
        self.assertIsNone(reader.doRead())
        self.assertEqual(channel.data, [b"abcd"])

    def test_splices(self) -> None:
        """
        A plan with a transport moves the bytes there and tells the channel
        how many.
        """
        up, upPeer = _pair()
        self.addCleanup(up.close)
        self.addCleanup(upPeer.close)
        channel = Channel((3, SinkTransport(up)))
        reader = SpliceReader(channel, ReaderTransport(self.b))
        self.a.sendall(b"xyzw")
        self.assertIsNone(reader.doRead())
        self.assertEqual((channel.spliced, channel.data), ([3], []))
        self.assertEqual(upPeer.recv(10), b"xyz")

    def test_endOfStream(self) -> None:
        """
        The client's close is the connection's end, whichever the plan.
        """
        self.a.close()
        for plan in ((10, None), (10, SinkTransport(self.b))):
            reader = SpliceReader(Channel(plan), ReaderTransport(self.b))
            self.assertIs(reader.doRead(), main.CONNECTION_DONE)

    def test_nothingYet(self) -> None:
        """
        A spurious wake-up reads nothing and loses nothing.
        """
        channel = Channel((10, None))
        self.assertIsNone(SpliceReader(channel, ReaderTransport(self.b)).doRead())
        self.assertEqual(channel.data, [])

    def test_error(self) -> None:
        """
        A read error loses the connection.
        """
        self.b.close()
        reader = SpliceReader(Channel((10, None)), ReaderTransport(self.b))
        self.assertIs(reader.doRead(), main.CONNECTION_LOST)

    def test_refusedTurnsSplicingOff(self) -> None:
        """
        A kernel that refuses to splice from the socket (EINVAL) turns
        splicing off for the process: that read moves nothing, and the next
        one, and every later one, is ordinary, of no more than a pipe's
        worth even when the plan is a whole body.
        """
        import errno

        def refuse(*args: object, **kw: object) -> int:
            raise OSError(errno.EINVAL, "no")

        self.patch(splice, "_failed", False)
        self.patch(splice.os, "splice", refuse)
        up, upPeer = _pair()
        self.addCleanup(up.close)
        self.addCleanup(upPeer.close)
        channel = Channel((10 << 30, SinkTransport(up)))
        reader = SpliceReader(channel, ReaderTransport(self.b))
        self.a.sendall(b"body")
        self.assertIsNone(reader.doRead())
        self.assertEqual((channel.data, channel.spliced), ([], []))
        self.assertTrue(splice._failed)
        self.assertIsNone(splice._thePipe())
        self.assertIsNone(reader.doRead())
        self.assertEqual(channel.data, [b"body"])

    def test_readsInPlaceOfTheTransport(self) -> None:
        """
        On a plain TCP transport the reader takes the place of the
        transport's C{doRead}: the reactor calls the attribute C{doRead} of
        the selectable it registered.  Once TLS started, it does not.
        """
        import inspect

        from twisted.internet import posixbase
        from twisted.internet.testing import MemoryReactorClock

        from tests.test_compat import serverConnection

        source = inspect.getsource(posixbase._PollLikeMixin._doReadOrWrite)
        self.assertIn("selectable.doRead()", source)
        transport, client = serverConnection(self, MemoryReactorClock())
        channel = Channel((10, None))
        reader = spliceReader(channel, transport)
        self.assertIsNotNone(reader)
        client.sendall(b"hello")
        self.assertIsNone(transport.doRead())
        self.assertEqual(channel.data, [b"hello"])
        other, _ = serverConnection(self, MemoryReactorClock())
        other.TLS = True
        self.assertIsNone(spliceReader(channel, other))
        self.assertNotIn("doRead", vars(other))

    def test_onlyPlainTCP(self) -> None:
        """
        Any transport but a plain TCP one is read as it reads itself.
        """
        transport = StringTransport()
        self.assertIsNone(spliceReader(Channel((1, None)), transport))
        self.assertNotIn("doRead", vars(transport))


class ChannelPlanTests(SynchronousTestCase):
    """
    L{ProxyChannel.readPlan} and L{ProxyChannel.bodySpliced}: the channel's
    side, with the upstream's transport taken as a plain TCP one.
    """

    def setUp(self) -> None:
        from revproxy.upstream import body

        self.patch(body, "sendsNow", lambda transport: True)

    def test_headsInSmallReads(self) -> None:
        """
        Between requests, and in a head, the channel reads little at once.
        """
        h = _harness()
        channel, _ = h.client()
        self.assertEqual(channel.readPlan(), (HEAD_READ, None))  # type: ignore[attr-defined]
        channel.dataReceived(b"GET / HTTP/1.1\r\n")  # type: ignore[attr-defined]
        self.assertEqual(channel.readPlan(), (HEAD_READ, None))  # type: ignore[attr-defined]

    def test_restOfBodyToUpstream(self) -> None:
        """
        Once a read ends inside a Content-Length body that the upstream
        takes now, the rest is planned into the upstream's transport; what
        moved counts as the body, and its last byte ends the request.
        """
        h = _harness()
        channel: Any
        channel, client = h.client(POST % 10 + b"wxyz")
        conn, upstream = h.upstream()
        self.assertEqual(channel.readPlan(), (6, upstream))
        channel.bodySpliced(4)
        self.assertEqual(channel.readPlan(), (2, upstream))
        request = channel.requests[0]
        self.assertEqual((request.body.received, request.body.complete), (8, False))
        channel.bodySpliced(2)
        self.assertTrue(request.body.complete)
        self.assertEqual(channel.readPlan(), (HEAD_READ, None))
        conn.dataReceived(OK)
        self.assertEqual(_status(client.value()), 200)
        channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: a.com\r\n\r\n")
        # On the same upstream connection, after the first request's head
        # and the 4 bytes that were read (not hex, unlike the request id): the
        # 6 spliced ones are not here.
        first, second = upstream.value().split(b"wxyz")
        self.assertTrue(second.startswith(b"GET /next "), second)

    def test_notWhileHeld(self) -> None:
        """
        Before the upstream takes the body (no connection yet), the body is
        read as usual, in large reads.
        """
        h = _harness()
        channel: Any
        channel, _ = h.client(POST % 300_000 + b"abcd")
        self.assertEqual(channel.readPlan(), (h.site.limits.readSize, None))

    def test_notChunked(self) -> None:
        """
        A chunked body's framing must be read: it is never spliced.
        """
        from tests.http.test_channel import CHUNKED

        h = _harness()
        channel: Any
        channel, _ = h.client(CHUNKED + b"3\r\nabc\r\n")
        h.upstream()
        self.assertEqual(channel.readPlan(), (h.site.limits.readSize, None))

    def test_bodyTimeoutFromSplicedBytes(self) -> None:
        """
        Spliced bytes restart the body timeout as read ones do.
        """
        h = _harness(bodyTimeout=5.0)
        channel: Any
        channel, client = h.client(POST % 10 + b"ab")
        h.upstream()
        h.reactor.advance(4)
        channel.bodySpliced(2)
        h.reactor.advance(4)
        self.assertEqual(client.value(), b"")
        h.reactor.advance(1.1)
        self.assertEqual(_status(client.value()), 408)
