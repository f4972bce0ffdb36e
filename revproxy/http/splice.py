# -*- test-case-name: tests.http.test_splice -*-
"""
Request bodies moved from the client's socket to the upstream's by the
kernel, with C{splice(2)} through a pipe, instead of being read into Python
and written out again.

A proxied body otherwise costs two copies in the kernel (the client's bytes
into a Python C{bytes}, and out of it into the upstream's socket) and a
round through the parser, the body and its sender for every read.  On
Linux, C{splice} moves the socket's buffers into a pipe and on into the
other socket by reference.  HAProxy does the same (C{option
splice-request}).  Measured on a 1 MiB POST: see the note on issue 10.

It applies only where nothing is lost by it:

 - the rest of a body of known length (Content-Length), once a read has
   ended inside it: what the parser would only count (a chunked body, whose
   framing must be checked, is read as usual);
 - from a plain TCP client connection to a plain TCP upstream connection
   (TLS on either side needs the bytes in Python);
 - while the body's consumer takes bytes now: attached, not paused, nothing
   held before it, and nothing buffered in the upstream's transport, so the
   order of bytes is kept.

Everything else (flow control, deadlines, the body's counts, the end of the
message) goes on as for bytes read: the channel is told how many bytes
moved (L{SpliceReader}).  What the upstream's socket does not take at once
is read out of the pipe and written through its transport, which buffers it
and pauses the client as for any write.  The pipe is one per process, and is
empty whenever L{spliceBody} returns, so no byte of one connection can be
left for another.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Any, Protocol

from twisted.internet import main, tcp

__all__ = ["HEAD_READ", "SpliceChannel", "SpliceReader", "spliceBody", "spliceReader"]

HEAD_READ = 16 * 1024
"""
What a client connection reads at once outside a body: a head, and what
comes with it of a body, the rest of which can then be spliced.
"""

PIPE_SIZE = 1024 * 1024
"""The pipe's capacity: what one splice moves at most, as one read would."""

_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})

_pipe: tuple[int, int] | None = None
_failed = False


def _thePipe() -> tuple[int, int] | None:
    """
    The process's pipe (read end, write end), made on first use; L{None}
    where C{splice} is not available.
    """
    global _pipe, _failed
    if _failed:
        return None
    if _pipe is not None:
        return _pipe
    if not hasattr(os, "splice"):
        _failed = True
        return None
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        # Out of file descriptors, for now: read as usual, try again later.
        return None
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        # Capped by fs.pipe-max-size: the default 64 KiB still works.
        pass
    _pipe = (r, w)
    return _pipe


def spliceBody(source: int, size: int, sink: Any) -> int:
    """
    Move up to C{size} bytes from the socket C{source} to the transport
    C{sink} (a plain TCP transport with nothing buffered); return how many
    moved, C{0} at the end of the client's stream.

    @raise BlockingIOError: nothing to read now; or the kernel refused to
        splice from this socket, which turns splicing off for the process
        (the next read is an ordinary one).
    @raise OSError: the client's connection failed.
    """
    global _failed
    pipe = _thePipe()
    if pipe is None:
        raise BlockingIOError("no pipe")
    r, w = pipe
    try:
        moved = os.splice(source, w, min(size, PIPE_SIZE), flags=_FLAGS)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            _failed = True
            raise BlockingIOError("splice(2) refused") from e
        raise
    if not moved:
        return 0
    sent = 0
    rest = b""
    try:
        try:
            sent = os.splice(r, sink.getHandle().fileno(), moved, flags=_FLAGS)
        except OSError:
            # Full (EAGAIN), or failed: the transport's own write buffers
            # the bytes, or meets the error and closes the connection.
            pass
        if sent < moved:
            rest = _readAll(r, moved - sent)
    finally:
        if sent + len(rest) < moved:
            # Never leave a byte in the pipe for another connection.
            _discard(r)
            sink.abortConnection()
    if rest:
        sink.write(rest)
    return moved


def _readAll(fd: int, size: int) -> bytes:
    parts = []
    while size > 0:
        data = os.read(fd, size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def _discard(fd: int) -> None:
    try:
        while os.read(fd, PIPE_SIZE):
            pass
    except BlockingIOError:
        pass


class SpliceChannel(Protocol):
    """
    What a client connection tells its reader.
    """

    def readPlan(self) -> tuple[int, Any]:
        """
        How much to read next, and where it goes: C{(size, None)} for an
        ordinary read of up to C{size} bytes, C{(size, transport)} to move
        up to C{size} bytes of the current body into C{transport}'s socket.
        """

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes read.
        """

    def bodySpliced(self, size: int) -> None:
        """
        C{size} bytes of the current body went to its consumer's transport.
        """


class SpliceReader:
    """
    Reads a client connection in place of its transport's C{doRead}: with
    L{spliceBody} when its channel says a body can move, else as the
    transport would, with the size the channel asks for.
    """

    def __init__(self, channel: SpliceChannel, transport: Any) -> None:
        self._channel = channel
        self._socket = transport.getHandle()
        self._fd = self._socket.fileno()

    def doRead(self) -> Any:
        channel = self._channel
        size, sink = channel.readPlan()
        moved = -1
        try:
            if sink is not None and not _failed:
                moved = spliceBody(self._fd, size, sink)
            else:
                data = self._socket.recv(min(size, PIPE_SIZE))
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if moved < 0:
            if not data:
                return main.CONNECTION_DONE
            channel.dataReceived(data)
        elif moved:
            channel.bodySpliced(moved)
        else:
            return main.CONNECTION_DONE
        return None


def spliceReader(channel: SpliceChannel, transport: Any) -> SpliceReader | None:
    """
    Make C{transport}'s reads go through a L{SpliceReader} for C{channel},
    and return it; L{None}, changing nothing, where it cannot apply (TLS,
    another kind of transport, no C{splice}).
    """
    if type(transport) not in (tcp.Server, tcp.Client) or transport.TLS:
        # TLS started, or another kind: its socket does not hold the bytes
        # as the peer sent them.
        return None
    if _thePipe() is None:
        return None
    reader = SpliceReader(channel, transport)
    # The reactor calls the attribute doRead of the selectable it
    # registered: an attribute of the instance takes the method's place
    # (as Twisted's own abortConnection does).
    transport.doRead = reader.doRead
    return reader
