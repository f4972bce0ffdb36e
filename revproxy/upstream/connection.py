# -*- test-case-name: tests.upstream.test_connection -*-
"""
The forwarding client's connection: one lean HTTP/1.1 connection to an
upstream and its response parser.

This is the proxy's hot path, so it is not built on L{twisted.web.client}'s
C{Agent}: an C{Agent} request costs a C{HostnameEndpoint} (IDNA encoding), a
chain of Deferreds and a C{Response} object per request, about 142 µs of CPU
for a small proxied request where our budget is 70 µs.  Instead an
L{UpstreamConnection} writes the request head it is given and parses the
response itself, calling back a L{ResponseReceiver} (the proxy's exchange)
with the status, the headers and each piece of the body.  The framing rules
are those of RFC 9112 section 6.3.  A C{101 Switching Protocols} is accepted
only for a request that asked to upgrade: the connection then leaves its pool
for good and hands every later byte to its L{UpstreamTunnel}.

Flow control: the receiver pauses and resumes the connection's transport
(L{UpstreamConnection.pauseReading}/L{UpstreamConnection.resumeReading}),
and request bodies larger than one write are sent by a producer
(L{revproxy.upstream.body.BodyStream}, L{revproxy.upstream.body.BodySender})
registered on the transport, so
neither direction buffers more than a socket's worth in the proxy.  The
connections are kept in an L{revproxy.upstream.pool.UpstreamPool}.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import alsoProvides

from revproxy._compat import writeThrough
from revproxy.deadline import Deadline
from revproxy.upstream.responsehead import parseResponseHead
from revproxy.upstream.body import BODY_CHUNK, BodySender, BodyStream, StreamingBody, sendBody
from revproxy.upstream.receiver import (
    MalformedResponse,
    ResponseReceiver,
    UpstreamClosed,
    UpstreamTunnel,
)

if TYPE_CHECKING:
    from revproxy.upstream.pool import UpstreamPool

__all__ = [
    "ResponseReceiver",
    "UpstreamConnection",
    "MalformedResponse",
    "UpstreamClosed",
    "UpstreamTunnel",
    "BODY_CHUNK",
    "READ_SIZE",
]

MAX_HEAD_SIZE = 64 * 1024
"""The longest response head (status line and headers) we accept."""

READ_SIZE = 256 * 1024
"""How much a connection of the proxy's, to a client or an upstream, reads
at once (and buffers for writing before it pauses what feeds it): Twisted's
C{bufferSize}, 64 KiB by default.  A 1 MiB body then takes 4 reads, not 16,
each of which costs the proxy a pass through parser, body and writer:
measured, a 1 MiB POST costs 30% less CPU."""

_HEX = frozenset(b"0123456789abcdefABCDEF")


# Parser states.
_IDLE = 0
_HEAD = 1
_LENGTH = 2
_CHUNK_SIZE = 3
_CHUNK_DATA = 4
_CHUNK_CRLF = 5
_TRAILERS = 6
_UNTIL_CLOSE = 7
_SWITCHED = 8


class UpstreamConnection(Protocol):
    """
    One HTTP/1.1 connection to an upstream, carrying one request at a time.

    @ivar reused: whether this connection carried a request before the
        current one.
    @ivar tunnel: after a 101, what the upstream's bytes go to; the
        connection has then left its pool for good.
    @ivar deadline: the response deadline of the request it carries, one
        for the connection's life (its exchange sets it).
    """

    _exchange: ResponseReceiver | None = None
    tunnel: UpstreamTunnel | None = None
    _upgrade = False
    _sender: BodySender | BodyStream | None = None
    _delayedIdle: IDelayedCall | None = None
    idleSince: float = 0.0

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self.deadline = Deadline(pool.clock)
        self._buffer = b""
        self._state = _IDLE
        self._remaining = 0
        self._noBody = False
        self._keepAlive = True
        self._gotBytes = False
        self.reused = False
        self.connected = False
        self._paused = False
        self._releaseAfterBody = False
        self._closeWaiters: list[Deferred[None]] = []
        self._switched: tuple[bytes, list[tuple[bytes, bytes]]] = (b"", [])

    def whenClosed(self) -> Deferred[None]:
        """
        A Deferred that fires when the connection is closed.
        """
        d: Deferred[None] = Deferred()
        if self.connected:
            self._closeWaiters.append(d)
        else:
            d.callback(None)
        return d

    # -- sending ---------------------------------------------------------

    def send(
        self,
        head: bytes,
        body: bytes | IO[bytes] | StreamingBody | None,
        exchange: ResponseReceiver,
        isHead: bool,
        upgrade: bool = False,
    ) -> None:
        """
        Send one request: C{head} is the request line and headers, ending
        with the blank line; C{body} is the whole body as bytes, a file to
        stream it from, or L{None}.  Only a request that asks to C{upgrade}
        may be answered with a 101, which the exchange hears of through its
        C{switchedProtocols}.
        """
        self._exchange = exchange
        self._upgrade = upgrade
        self._state = _HEAD
        self._noBody = isHead
        self._keepAlive = True
        self._gotBytes = False
        transport = self.transport
        assert transport is not None
        if body is None or isinstance(body, bytes):
            writeThrough(transport, head + body if body else head)
        else:
            writeThrough(transport, head)
            self._sender = sendBody(self, body, exchange)
            self._sender.start()

    def bodySent(self) -> None:
        """
        The body sender wrote the last byte of the request body.
        """
        self._stopSendingBody()

    def _stopSendingBody(self) -> None:
        sender = self._sender
        if sender is not None:
            self._sender = None
            sender.close()
            if self.transport is not None:
                self.transport.unregisterProducer()  # type: ignore[attr-defined]
                if self._releaseAfterBody:
                    self._releaseAfterBody = False
                    self._release()

    # -- flow control, used by the exchange ------------------------------

    def pauseReading(self) -> None:
        """
        Stop reading the response: the client cannot take more yet.
        """
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeReading(self) -> None:
        """
        Read the response again.
        """
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """
        Drop the connection at once, and the exchange with it: no callback is
        made to the exchange after this.
        """
        self._exchange = None
        self._keepAlive = False
        self._releaseAfterBody = False
        self.deadline.stop()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- receiving -------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
            transport.bufferSize = READ_SIZE  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._exchange is None:
            if self.tunnel is not None:
                self.tunnel.upstreamDataReceived(data)
                return
            # Bytes on an idle connection: the upstream is confused.
            self.abort()
            return
        self._gotBytes = True
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        try:
            self._parse(data)
        except MalformedResponse:
            self._fail(Failure())

    def _parse(self, data: bytes) -> None:
        while data:
            state = self._state
            if self._exchange is None and state != _IDLE:
                # The exchange aborted the connection from a callback.
                return
            if state == _LENGTH:
                n = len(data)
                remaining = self._remaining
                if n < remaining:
                    self._remaining = remaining - n
                    self._exchange.bodyReceived(data)  # type: ignore[union-attr]
                    return
                if n > remaining:
                    # More than the response: the upstream broke framing.
                    self._keepAlive = False
                self._exchange.bodyReceived(data[:remaining])  # type: ignore[union-attr]
                self._finished()
                return
            if state == _HEAD:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD_SIZE:
                        raise MalformedResponse("response head too long")
                    self._buffer = data
                    return
                # The head with the CRLF ending its last line.
                head = data[: end + 2]
                data = data[end + 4 :]
                self._parseHead(head)
                if self._state == _SWITCHED:
                    self._switchProtocols(data)
                    return
                if self._exchange is None:
                    return
                if not data and self._state != _HEAD:
                    # Not an interim response: a body comes later.
                    self._exchange.awaitingBody()
                    return
                continue
            if state == _UNTIL_CLOSE:
                self._exchange.bodyReceived(data)  # type: ignore[union-attr]
                return
            if state == _CHUNK_SIZE:
                eol = data.find(b"\r\n")
                if eol < 0:
                    if len(data) > 1024:
                        raise MalformedResponse("chunk size line too long")
                    self._buffer = data
                    return
                line = data[:eol].split(b";", 1)[0].strip(b" \t")
                if not line or not _HEX.issuperset(line):
                    raise MalformedResponse("bad chunk size")
                size = int(line, 16)
                data = data[eol + 2 :]
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                continue
            if state == _CHUNK_DATA:
                n = len(data)
                remaining = self._remaining
                if n <= remaining:
                    self._remaining = remaining - n
                    self._exchange.bodyReceived(data)  # type: ignore[union-attr]
                    if n == remaining:
                        self._state = _CHUNK_CRLF
                    return
                self._exchange.bodyReceived(data[:remaining])  # type: ignore[union-attr]
                data = data[remaining:]
                self._state = _CHUNK_CRLF
                continue
            if state == _CHUNK_CRLF:
                if len(data) < 2:
                    self._buffer = data
                    return
                if data[:2] != b"\r\n":
                    raise MalformedResponse("chunk not followed by CRLF")
                data = data[2:]
                self._state = _CHUNK_SIZE
                continue
            if state == _TRAILERS:
                # Trailer fields are discarded: the client's response is
                # re-framed by the proxy, and few clients read trailers.
                if data[:2] == b"\r\n":
                    if len(data) > 2:
                        self._keepAlive = False
                    self._finished()
                    return
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD_SIZE:
                        raise MalformedResponse("trailers too long")
                    self._buffer = data
                    return
                if len(data) > end + 4:
                    self._keepAlive = False
                self._finished()
                return
            # _IDLE: bytes after a complete response.
            self._keepAlive = False
            self.abort()
            return

    def _parseHead(self, head: bytes) -> None:
        code, reason, headers, length, hasTransferEncoding, chunked, keepAlive = (
            parseResponseHead(head)
        )
        if 100 <= code < 200:
            if code == 101:
                if not self._upgrade:
                    raise MalformedResponse("unexpected 101 Switching Protocols")
                self._state = _SWITCHED
                self._switched = (reason, headers)
            # Interim response: wait for the final one.
            return
        self._keepAlive = keepAlive
        exchange = self._exchange
        assert exchange is not None
        if self._noBody or code == 204 or code == 304:
            exchange.responseStarted(code, reason, headers, 0)
            self._finished()
            return
        if hasTransferEncoding:
            if length is not None:
                # RFC 9112 6.1: Transfer-Encoding overrides Content-Length,
                # and the connection must not be reused.
                self._keepAlive = False
                headers = [h for h in headers if h[0].lower() != b"content-length"]
            if chunked:
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_CLOSE
                self._keepAlive = False
            exchange.responseStarted(code, reason, headers, -1)
            return
        if length is not None:
            n = length
            exchange.responseStarted(code, reason, headers, n)
            if n == 0:
                self._finished()
            else:
                self._remaining = n
                self._state = _LENGTH
            return
        self._state = _UNTIL_CLOSE
        self._keepAlive = False
        exchange.responseStarted(code, reason, headers, -1)

    def _switchProtocols(self, rest: bytes) -> None:
        """
        The upstream switched protocols: leave the pool for good and hand
        the exchange the 101's head and C{rest}, the first bytes of the new
        protocol; it sets L{tunnel}, or aborts the connection.
        """
        exchange = self._exchange
        self._exchange = None
        self._keepAlive = False
        self._stopSendingBody()
        self._pool.detach(self)
        alsoProvides(self, IHalfCloseableProtocol)
        reason, headers = self._switched
        exchange.switchedProtocols(reason, headers, rest)  # type: ignore[union-attr]

    # IHalfCloseableProtocol, once switched: the tunnel passes a half-close on.

    def readConnectionLost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstreamReadClosed()
        elif self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def _finished(self) -> None:
        exchange = self._exchange
        self._exchange = None
        self._state = _IDLE
        # A connection paused for a slow client may end its response while
        # paused: it must read again before it serves anyone else.
        self.resumeReading()
        if self._sender is not None and self._keepAlive:
            # The upstream answered before it read the whole body and keeps
            # the connection open, so it reads and discards the rest (as
            # nginx's `return` does): finish sending it, then the connection
            # can be reused.
            self._releaseAfterBody = True
        elif self._keepAlive and self.transport is not None:
            # Back to the pool before the exchange hears of the end, so that
            # the client's next (pipelined) request, which responseEnded may
            # start, can reuse it.
            self._release()
        elif self.transport is not None:
            self._stopSendingBody()
            self.transport.loseConnection()
        if exchange is not None:
            exchange.responseEnded()

    def _release(self) -> None:
        self.reused = True
        self._pool._release(self)

    def _fail(self, reason: Failure) -> None:
        exchange = self._exchange
        self.abort()
        if exchange is not None:
            exchange.exchangeFailed(reason, self._gotBytes)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        self.deadline.stop()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self._pool._lost(self)
        waiters, self._closeWaiters = self._closeWaiters, []
        for d in waiters:
            d.callback(None)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.upstreamLost(reason)
            return
        exchange = self._exchange
        if exchange is None:
            return
        self._exchange = None
        if self._state == _UNTIL_CLOSE:
            exchange.responseEnded()
            return
        exchange.exchangeFailed(
            Failure(UpstreamClosed("upstream closed the connection")),
            self._gotBytes,
        )
