# -*- test-case-name: tests.upstream.test_connection -*-
"""
The request body senders: L{BodyStream} writes a body that streams in from
the client as it arrives, L{BodySender} a spooled one (a request from a
plain twisted.web site) as a pull producer; either way no more than a
socket's worth of it is buffered in the proxy.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IPullProducer, IPushProducer
from zope.interface import implementer

from revproxy._compat import sendsNow, writeThrough

if TYPE_CHECKING:
    from revproxy.upstream.connection import UpstreamConnection
    from revproxy.upstream.receiver import ResponseReceiver

__all__ = [
    "BodySender",
    "BodyStream",
    "BODY_CHUNK",
    "StreamingBody",
    "sendBody",
    "spooledBody",
]


class StreamingBody(Protocol):
    """
    A request body that streams in from the client (the client side's
    L{revproxy.http.body.RequestBody}), as the upstream side sees it.
    """

    length: int
    complete: bool

    def attach(self, consumer: Any) -> None:
        """
        Give the body, from its first byte not yet consumed, to
        C{consumer} (C{bodyData}, C{bodyEnded}, C{bodyFailed}).
        """

    def detach(self) -> None:
        """
        The consumer takes no more.
        """

    def pauseProducing(self) -> None:
        """
        The consumer cannot take more for now.
        """

    def resumeProducing(self) -> None:
        """
        The consumer can take more.
        """


BODY_CHUNK = 64 * 1024
"""How much of a spooled request body is read and written at a time."""


@implementer(IPullProducer)
class BodySender:
    """
    Writes a spooled request body to a transport, one chunk each time the
    transport asks for more.

    It reads through a file descriptor of its own (a C{dup} of the spool's,
    read with C{pread}), or a copy of an in-memory spool: Twisted closes the
    request's spool when the response is finished, and an upstream that
    answers early may still be reading the rest of the body then.
    """

    def __init__(self, connection: UpstreamConnection, body: IO[bytes]) -> None:
        self._connection = connection
        self._offset = 0
        self._fd = -1
        self._data = b""
        self._closed = False
        try:
            fd = body.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            body.seek(0)
            self._data = body.read()
            self._remaining = len(self._data)
        else:
            self._fd = os.dup(fd)
            self._remaining = os.fstat(self._fd).st_size

    def start(self) -> None:
        """
        Nothing: the transport pulls.
        """

    def resumeProducing(self) -> None:
        conn = self._connection
        transport = conn.transport
        if transport is None or self._closed:
            return
        n = min(BODY_CHUNK, self._remaining)
        if self._fd >= 0:
            try:
                data = os.pread(self._fd, n, self._offset)
            except OSError:
                conn.abort()
                return
        else:
            data = self._data[self._offset : self._offset + n]
        if data:
            transport.write(data)
        self._offset += len(data)
        self._remaining -= len(data)
        if self._remaining <= 0 or not data:
            # Done as soon as the last byte is written, not when the
            # transport next asks for more: the upstream may answer before
            # then, and the connection is only reusable if we had finished.
            conn.bodySent()

    def stopProducing(self) -> None:
        self.close()

    def close(self) -> None:
        """
        Release the file descriptor; the sender writes nothing after this.
        """
        self._closed = True
        self._remaining = 0
        self._data = b""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def spooledBody(
    content: IO[bytes] | None, framed: bool, small: int
) -> tuple[int, bytes | IO[bytes] | None]:
    """
    The size of a request body that twisted.web spooled in C{content}, and
    what to send of it: L{None} for no body (an empty body the client did
    not frame), the bytes of a body of at most C{small} bytes (sent with the
    head), or the spool itself for a larger one (streamed by L{BodySender}).
    """
    if content is None:
        size = 0
    else:
        content.seek(0, 2)
        size = content.tell()
        content.seek(0)
    if not framed and size == 0:
        return 0, None
    if size == 0:
        return 0, b""
    if size <= small:
        return size, content.read()  # type: ignore[union-attr]
    return size, content


_TRAILER_DROP = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"trailer", b"connection", b"te"}
)


@implementer(IPushProducer)
class BodyStream:
    """
    Writes a request body that streams in from the client
    (L{revproxy.http.body.RequestBody}) to an upstream connection, as it
    arrives: with its Content-Length as is, or chunked (with the client's
    trailers).  It is the push producer of the upstream's transport, so a
    full upstream socket pauses the client.

    An upstream that answers early and keeps its connection open gets the
    rest of the body as the client sends it (the connection is reusable
    after); if the body then fails, the connection is dropped.
    """

    def __init__(
        self,
        connection: UpstreamConnection,
        body: StreamingBody,
        failed: Callable[[int, bytes], None],
    ) -> None:
        self._connection = connection
        self._body = body
        self._chunked = body.length < 0
        self._failed = failed
        self._closed = False

    def start(self) -> None:
        """
        Take the body.
        """
        self._body.attach(self)

    # BodyConsumer

    def bodyData(self, data: bytes) -> None:
        transport = self._connection.transport
        if transport is None or self._closed:
            return
        # At once, as far as the socket takes it: no copy into the
        # transport's buffer and no wait for the reactor's next turn.
        if self._chunked:
            writeThrough(transport, b"".join((b"%x\r\n" % (len(data),), data, b"\r\n")))
        else:
            writeThrough(transport, data)

    def spliceTarget(self) -> Any:
        """
        The upstream's transport, if a body of known length may be moved
        into its socket directly now (L{revproxy.http.splice}): plain TCP,
        nothing buffered, so the order of bytes is kept.
        """
        transport = self._connection.transport
        if self._chunked or self._closed or not sendsNow(transport):
            return None
        return transport

    def bodyEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        transport = self._connection.transport
        if transport is None or self._closed:
            return
        if self._chunked:
            lines = [b"0\r\n"]
            for name, value in trailers:
                if name.lower() not in _TRAILER_DROP:
                    lines.extend((name, b": ", value, b"\r\n"))
            lines.append(b"\r\n")
            transport.write(b"".join(lines))
        self._connection.bodySent()

    def bodyFailed(self, status: int, message: bytes) -> None:
        if not self._closed:
            self._connection.abort()
            self._failed(status, message)

    # IPushProducer

    def pauseProducing(self) -> None:
        self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        self.close()

    def close(self) -> None:
        """
        Take no more of the body.
        """
        if not self._closed:
            self._closed = True
            self._body.detach()


def sendBody(
    connection: UpstreamConnection,
    body: IO[bytes] | StreamingBody,
    receiver: ResponseReceiver,
) -> BodySender | BodyStream:
    """
    Start sending C{body} (a stream from the client, or a spool) on
    C{connection}, whose request head is written: return its sender,
    registered as the producer of the connection's transport, to be
    started once the connection holds it.  A stream that fails is
    C{receiver}'s to handle.
    """
    transport = connection.transport
    assert transport is not None
    sender: BodySender | BodyStream
    if hasattr(body, "attach"):
        sender = BodyStream(connection, body, receiver.requestBodyFailed)  # type: ignore[arg-type]
        transport.registerProducer(sender, True)  # type: ignore[attr-defined]
    else:
        sender = BodySender(connection, body)  # type: ignore[arg-type]
        transport.registerProducer(sender, False)  # type: ignore[attr-defined]
    return sender
