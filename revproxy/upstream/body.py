# -*- test-case-name: tests.upstream.test_connection -*-
"""
The request body sender: writes a spooled request body to an upstream
connection as a pull producer, so that no more than a socket's worth of it
is buffered in the proxy.
"""

from __future__ import annotations

import io
import os
from typing import IO, TYPE_CHECKING

from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from revproxy.upstream.connection import UpstreamConnection

__all__ = ["BodySender", "BODY_CHUNK", "spooledBody"]

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
