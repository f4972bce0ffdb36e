# -*- test-case-name: tests.http.test_channel -*-
"""
The client connection: a Twisted protocol that parses requests strictly
(L{revproxy.http.parser}), hands each to the site's resource as a
twisted.web L{Request} as soon as its head is complete, and streams its body
(L{revproxy.http.body}) while the resource forwards it.

It enforces the limits and deadlines of an internet-facing server:

 - the whole head must arrive within C{--header-timeout} of its first byte
   (slowloris), else 408 and close;
 - the longest gap between body bytes is C{--body-timeout} (not counting
   the time the proxy itself paused the client), else 408;
 - a body may not cross C{--max-body-size} (413);
 - an idle keep-alive connection is closed after C{--idle-timeout}.

A refused request is answered with its status and C{Connection: close},
and the connection closes: nothing after a framing error is read.

Pipelined requests are answered in order: one request is handled at a time,
and the client is not read while a complete request waits its turn.

One timer per connection keeps every deadline (L{revproxy.deadline}).

Reading: a plain TCP connection is read through a
L{revproxy.http.splice.SpliceReader}: heads in small reads, and the rest of a body of
known length moved by the kernel into the upstream's socket when its
consumer takes bytes at once.

Writing: a response's head is held until its first body bytes (or its end)
so that both go in one write, and the writes of a reactor turn go to the
socket together at its end when nothing is buffered
(L{revproxy._compat.writeThrough}), without waiting for the next turn's
poll for writability.  The connection has C{TCP_NODELAY}, as nginx's
keep-alive connections do: a chunked response's last chunk, a write of its
own, must not wait for the client's delayed ACK.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import (
    IAddress,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from revproxy._compat import writeThrough
from revproxy.deadline import Deadline
from revproxy.http.body import RequestBody
from revproxy.http.errors import errorResponse
from revproxy.http.forwarding import DEFAULT_POLICY, requestIdOf
from revproxy.http.limits import ServerLimits
from revproxy.http.parser import NO_BODY, ParsedHead, RequestError, RequestParser
from revproxy.http.splice import HEAD_READ, spliceReader
from revproxy.http.switching import SwitchingProtocols

if TYPE_CHECKING:
    from revproxy.http.server import ProxyRequest, ProxySite

__all__ = ["ProxyChannel", "ServerLimits"]

log = Logger()

_IDLE, _HEAD, _BODY, _BUSY = range(4)


class ProxyChannel(SwitchingProtocols, Protocol):
    """
    One client connection.

    @ivar requests: the requests read and not yet answered, the one being
        answered first.
    """

    _peer: IAddress | None = None
    _host: IAddress | None = None
    _secure: bool | None = None
    _head: bytes | None = None

    def __init__(self, site: ProxySite) -> None:
        self.site = site
        self.factory = site
        self._clock = site.reactor
        limits: ServerLimits = site.limits
        self._limits = limits
        self._parser = RequestParser(self, limits.head)
        self.requests: deque[ProxyRequest] = deque()
        self._reading: ProxyRequest | None = None
        self._dispatched: ProxyRequest | None = None
        self._persistent = True
        self._refused: bytes | None = None
        self._draining: ProxyRequest | None = None
        self._closing = False
        self._upgradeRest: bytes | None = None
        self._pausedFor = 0  # bit 1: a body's consumer, bit 2: pipelining
        self._state = _IDLE
        self._deadline = Deadline(self._clock, self._timedOut)
        self._bodyStalled = False

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
            transport.bufferSize = self._limits.readSize  # type: ignore[attr-defined]
            spliceReader(self, transport)
        self.site.channels.add(self)
        self._setDeadline(_IDLE, self.site.timeOut)

    def getPeer(self) -> IAddress:
        peer = self._peer
        if peer is None:
            peer = self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return peer

    def getHost(self) -> IAddress:
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()  # type: ignore[union-attr]
        return host

    def isSecure(self) -> bool:
        secure = self._secure
        if secure is None:
            secure = self._secure = ISSLTransport(self.transport, None) is not None
        return secure

    def dataReceived(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.clientDataReceived(data)
            return
        if self._closing:
            return
        if self._upgradeRest is not None:
            # Paused after an upgrade request, but a transport may still
            # deliver what it had: it waits with the rest.
            self._upgradeRest += data
            return
        parser = self._parser
        state = self._state
        if state == _IDLE:
            self._state = _HEAD
            self._deadline.at = self._clock.seconds() + self._limits.headerTimeout
        elif state == _BODY:
            self._deadline.at = self._clock.seconds() + self._limits.bodyTimeout
        try:
            rest = parser.feed(data)
        except RequestError as e:
            self._refuse(e.status, e.message)
            self._dispatch()
            return
        if parser.upgraded:
            # llhttp stops at an upgrade request: what follows belongs to
            # the tunnel, if the upstream switches, else to nobody.
            self._upgradeRest = rest
            self._pause(2)
        state = self._state
        if state == _HEAD or state == _BODY:
            self._deadline.arm()
        self._dispatch()

    # -- the parser's events -----------------------------------------------------

    def headReceived(self, head: ParsedHead) -> None:
        limits = self._limits
        if limits.maxBodySize and head.length > limits.maxBodySize:
            raise RequestError(413, "request body too large")
        request: ProxyRequest = self.site.requestFactory(self)  # type: ignore[assignment]
        request.received(head)
        if head.length != NO_BODY:
            request.body = RequestBody(self, head.length, limits.replayBuffer, head.expectContinue)
            self._reading = request
            self._state = _BODY
            self._deadline.at = self._clock.seconds() + limits.bodyTimeout
        else:
            self._state = _BUSY
        self.requests.append(request)

    def bodyReceived(self, data: bytes) -> None:
        request = self._reading
        assert request is not None and request.body is not None
        body = request.body
        maxBody = self._limits.maxBodySize
        if maxBody and body.received + len(data) > maxBody:
            raise RequestError(413, "request body too large")
        body.dataReceived(data)

    # SpliceChannel (revproxy.http.splice)

    def readPlan(self) -> tuple[int, Any]:
        if self._state == _BODY:
            left = self._parser.rawLeft
            request = self._reading
            if left and request is not None and not self._closing:
                sink = request.body.spliceTarget()  # type: ignore[union-attr]
                if sink is not None:
                    return left, sink
        elif self.tunnel is None:
            # A head, and what comes with it of a body: little, so that the
            # rest of a large body can be spliced.
            return HEAD_READ, None
        return self._limits.readSize, None

    def bodySpliced(self, size: int) -> None:
        self._reading.body.spliced(size)  # type: ignore[union-attr]
        self._deadline.at = self._clock.seconds() + self._limits.bodyTimeout
        self._parser.skip(size)
        if self._state == _BODY:
            self._deadline.arm()
        self._dispatch()

    def messageEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        request = self._reading
        if request is not None:
            self._reading = None
            request.body.ended(trailers)  # type: ignore[union-attr]
            if request is self._draining:
                # Answered already: the connection is idle.
                self._draining = None
                self._setDeadline(_IDLE, self.site.timeOut)
                return
        self._state = _BUSY
        if len(self.requests) > 1:
            # Another request waits for this one's turn: read no more until
            # it comes.
            self._pause(2)

    # -- handing requests to the resource ------------------------------------------

    def _dispatch(self) -> None:
        requests = self.requests
        while requests and self._dispatched is None:
            request = requests[0]
            self._dispatched = request
            request.process()

    def requestDone(self, request: ProxyRequest) -> None:
        """
        C{request}'s response is complete (twisted.web's L{Request} calls
        this from C{finish}).
        """
        self.flushHead()
        if not self.requests or self.requests[0] is not request:
            return
        self.requests.popleft()
        self._dispatched = None
        body = request.body
        if body is not None and not body.complete:
            if body.attached and self._persistent and request.keepAlive:
                # The upstream answered early and reads the rest: so does
                # the channel, and then goes on with the connection.
                self._draining = request
                return
            # The rest of its body is unread: it cannot be told from the
            # next request.
            self._persistent = False
            body.fail(400, b"the response ended before the request body")
        if not self._persistent or not request.keepAlive:
            self.loseConnection()
            return
        rest = self._upgradeRest
        if rest is not None:
            # The upstream did not switch: the connection goes on as HTTP,
            # with what the client sent after its upgrade request.
            self._upgradeRest = None
            self._parser.upgraded = False
            self._setDeadline(_IDLE, self.site.timeOut)
            self._resume(2)
            if rest:
                self.dataReceived(rest)
            return
        if len(self.requests) <= 1:
            self._resume(2)
        if self.requests:
            self._dispatch()
        elif self._refused is not None:
            self._writeRefusal()
        elif self._parser.inHead:
            self._setDeadline(_HEAD, self._limits.headerTimeout)
        elif self._state == _BUSY:
            self._setDeadline(_IDLE, self.site.timeOut)

    # -- refusing ----------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """
        Answer a request that cannot be read with C{status}, and close: at
        once if nothing else is being answered, else after.
        """
        self._closing = True
        self._deadline.stop()
        peer = self.getPeer()
        # The request's id (revproxy.http.forwarding) if the resource gave
        # it one, else a new one, for the refusal and its log line.
        rid = requestIdOf(self._reading) if self._reading is not None else None
        if rid is None:
            rid = getattr(self.site.resource, "forwarding", DEFAULT_POLICY).newRequestId()
        log.info(
            "refused a request from {client}: {status} {reason}",
            client=getattr(peer, "host", str(peer)),
            status=status,
            reason=message,
            request_id=rid.decode("ascii"),
        )
        request = self._reading
        self._reading = None
        if request is not None and request is self._draining:
            # Answered already: nothing more can be said to the client.
            self._draining = None
            request.body.fail(status, message.encode("latin-1"))  # type: ignore[union-attr]
            self.site.requestRefused(status)
            self.loseConnection()
            return
        if request is not None and request is self._dispatched:
            # Its body failed while the resource forwards it: the resource
            # answers, and the connection closes after.
            self._persistent = False
            request.body.fail(status, message.encode("latin-1"))  # type: ignore[union-attr]
            return
        if request is not None:
            self.requests.remove(request)
        self._refused = errorResponse(status, message, self._clock.seconds(), rid)
        self.site.requestRefused(status)
        if not self.requests:
            self._writeRefusal()

    def _writeRefusal(self) -> None:
        transport = self.transport
        if transport is not None and self._refused is not None:
            self.write(self._refused)
            self._refused = None
            self.loseConnection()

    # -- deadlines ----------------------------------------------------------------

    def _setDeadline(self, state: int, seconds: float | None) -> None:
        self._state = state
        self._deadline.set(seconds)

    def _timedOut(self) -> None:
        state = self._state
        if state == _BUSY or self.tunnel is not None or self._closing:
            return
        if state == _BODY and self._pausedFor:
            # The proxy paused the client (a slow upstream): not its gap.
            self._deadline.set(self._limits.bodyTimeout)
            return
        if state == _IDLE:
            self.loseConnection()
        elif state == _HEAD:
            self._refuse(408, "request header timeout")
        else:
            self._refuse(408, "request body timeout")

    # -- flow control (the BodyReader interface) --------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._pausedFor and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._pausedFor |= reason

    def _resume(self, reason: int) -> None:
        if not self._pausedFor & reason:
            return
        self._pausedFor &= ~reason
        if not self._pausedFor and self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def pauseBody(self) -> None:
        self._pause(1)

    def resumeBody(self) -> None:
        self._resume(1)
        if self._state == _BODY:
            self._deadline.at = self._clock.seconds() + self._limits.bodyTimeout

    def continueBody(self) -> None:
        request = self.requests[0] if self.requests else None
        if request is not None and not request.startedWriting and self.transport is not None:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- what twisted.web's Request asks of its channel -----------------------------

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        request = self.requests[0] if self.requests else None
        close = (
            not self._persistent
            or request is None
            or not request.keepAlive
            or self._closing
        ) and code != b"101"
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        if request is not None and request.relayedFields:
            lines.append(request.relayedFields)
        for name, values in headers.getAllRawHeaders():
            if close and name.lower() == b"connection":
                continue
            for value in values:
                lines.extend((name, b": ", value, b"\r\n"))
        if close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        # Held for the first body bytes: twisted.web's Request writes them
        # next, in the same call, unless the response has no body, and then
        # it finishes (requestDone) or switches protocols; or the upstream's
        # body comes later (flushHead, from the exchange).
        self._head = b"".join(lines)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        writeThrough(self.transport, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def flushHead(self) -> None:
        """
        Write a response head held for body bytes that will not come now.
        """
        head = self._head
        if head is not None:
            self._head = None
            writeThrough(self.transport, head)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        transport = self.transport
        if transport is not None and getattr(transport, "producer", True) is not None:
            transport.unregisterProducer()  # type: ignore[attr-defined]

    def loseConnection(self) -> None:
        """
        Close the connection once what is buffered is written; a
        connection with a request in progress closes when it is answered.
        """
        transport = self.transport
        if transport is None:
            return
        if self._dispatched is not None and not self._closing and self.tunnel is None:
            self._persistent = False
            return
        self._deadline.stop()
        self.flushHead()
        self.unregisterProducer()
        transport.loseConnection()

    def drain(self, grace: float) -> None:
        """
        Close for a shutdown: after the response in progress, or, if the
        connection is idle, after C{grace} seconds in which a request
        already on its way is still answered (with C{Connection: close}),
        so that a client that sent one as the drain began does not see the
        connection closed under it.
        """
        self._persistent = False
        if self.tunnel is not None or self._closing:
            self.loseConnection()
        elif self._dispatched is None and not self.requests and self._state == _IDLE:
            self._setDeadline(_IDLE, grace)

    def forceAbortClient(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._deadline.stop()
        self._closing = True
        self.site.channelClosed(self)
        reading = self._reading
        requests, self.requests = self.requests, deque()
        for request in requests:
            request.connectionLost(reason)
        if reading is not None and reading.body is not None:
            reading.body.fail(400, b"the client closed the connection")
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.clientLost(reason)
