"""
Real loopback upstream servers for the integration tests.

An L{UpstreamServer} listens on 127.0.0.1 port 0 and speaks just enough
HTTP/1.1, parsed by hand so that the tests see exactly what the proxy sent
(raw header lines, repetitions, framing).  What it answers is decided by a
handler, a function C{(connection, request) -> None} that must eventually
call one of the connection's C{respond*} methods (or close it); the module
offers the handlers the tests need: L{echo}, L{sized}, L{generated},
L{delayed}, L{chunked}, L{raw} (malformed responses).  The server counts
the TCP connections it accepts and loses, so tests can check pooling and
cancellation.

L{HTTPClient} is the other end: a strict HTTP/1.1 client that checks the
framing of each response byte by byte.  L{ProxyProcess} runs the proxy itself as a C{twistd} subprocess, for the
tests whose point is the process (its memory, its exit, its signals).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import reactor as _globalReactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IListeningPort, IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "HTTPClient",
    "Handler",
    "ProtocolError",
    "ProxyProcess",
    "Response",
    "UpstreamConnection",
    "UpstreamRequest",
    "UpstreamServer",
    "chunked",
    "closeWhenIdle",
    "endSession",
    "delayed",
    "echo",
    "generated",
    "loggedListeningPort",
    "proxySession",
    "raw",
    "request",
    "sized",
]


@dataclass
class UpstreamRequest:
    """
    One request as the upstream received it.

    @ivar headers: the header lines in order, names as sent.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    rawHead: bytes

    def header(self, name: bytes) -> list[bytes]:
        """
        Every value of the header C{name} (case-insensitive), in order.
        """
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]


Handler = Callable[["UpstreamConnection", UpstreamRequest], None]


class _BadRequest(Exception):
    pass


class UpstreamConnection(Protocol):
    """
    One accepted connection: parses requests one at a time and hands each to
    the server's handler.
    """

    def __init__(self, server: UpstreamServer) -> None:
        self.server = server
        self._buffer = b""
        self._busy = False
        self.requests: list[UpstreamRequest] = []
        self.lost: Deferred[None] = Deferred()
        self.closeAfterResponse = False

    def connectionMade(self) -> None:
        self.server.accepted += 1
        self.server.connections.append(self)
        if self.server.closeOnAccept:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.server.lostCount += 1
        if self in self.server.connections:
            self.server.connections.remove(self)
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def _next(self) -> None:
        if self._busy or self.transport is None or not self.transport.connected:
            return
        try:
            request = self._parse()
        except _BadRequest:
            self.transport.abortConnection()
            return
        if request is None:
            return
        self._busy = True
        self.requests.append(request)
        self.server.requests.append(request)
        self.server.handler(self, request)

    def _parse(self) -> UpstreamRequest | None:
        buf = self._buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = buf[:end]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise _BadRequest()
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _BadRequest()
            headers.append((name, value.strip()))
        request = UpstreamRequest(parts[0], parts[1], parts[2], headers, b"", head)
        rest = buf[end + 4 :]
        te = request.header(b"transfer-encoding")
        cl = request.header(b"content-length")
        if te:
            body = b""
            while True:
                eol = rest.find(b"\r\n")
                if eol < 0:
                    return None
                size = int(rest[:eol].split(b";")[0], 16)
                if len(rest) < eol + 2 + size + 2:
                    return None
                body += rest[eol + 2 : eol + 2 + size]
                rest = rest[eol + 2 + size + 2 :]
                if size == 0:
                    break
        elif cl:
            n = int(cl[0])
            if len(rest) < n:
                return None
            body, rest = rest[:n], rest[n:]
        else:
            body = b""
        request.body = body
        self._buffer = rest
        return request

    # -- answering ---------------------------------------------------------

    def respondHead(self, code: int, headers: list[tuple[bytes, bytes]]) -> None:
        """
        Write a status line and headers (no framing added).
        """
        lines = [b"HTTP/1.1 %d %s\r\n" % (code, b"OK" if code == 200 else b"Status")]
        lines += [n + b": " + v + b"\r\n" for n, v in headers]
        self.transport.write(b"".join(lines) + b"\r\n")

    def respond(
        self,
        code: int = 200,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        contentLength: bool = True,
    ) -> None:
        """
        Write a complete response with a Content-Length.
        """
        headers = list(headers or [])
        if contentLength:
            headers.append((b"Content-Length", b"%d" % len(body)))
        self.respondHead(code, headers)
        if body:
            self.transport.write(body)
        self.done()

    def done(self) -> None:
        """
        The response is complete: close or read the next request.
        """
        self._busy = False
        if self.closeAfterResponse:
            self.transport.loseConnection()
            return
        self.server.reactor.callLater(0, self._next)


class UpstreamServer:
    """
    A test upstream on 127.0.0.1, port 0.

    @ivar accepted: how many TCP connections it accepted.
    @ivar lostCount: how many of them have been closed.
    @ivar bytesWritten: body bytes written by L{generated}.
    """

    def __init__(
        self, handler: Handler | None = None, closeOnAccept: bool = False, reactor=None
    ) -> None:
        self.handler = handler or echo
        self.closeOnAccept = closeOnAccept
        self.reactor = reactor if reactor is not None else _globalReactor
        self.accepted = 0
        self.lostCount = 0
        self.bytesWritten = 0
        self.connections: list[UpstreamConnection] = []
        self.requests: list[UpstreamRequest] = []
        self._port: IListeningPort | None = None
        self.port = 0

    async def start(self, port: int = 0) -> UpstreamServer:
        """
        Listen on C{port} of 127.0.0.1 (0 for any free port; the port of a
        stopped server to start it again).
        """
        factory = Factory.forProtocol(lambda: UpstreamConnection(self))
        factory.noisy = False
        endpoint = TCP4ServerEndpoint(self.reactor, port, interface="127.0.0.1")
        self._port = await endpoint.listen(factory)
        self.port = self._port.getHost().port
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """
        Stop listening and abort every open connection.
        """
        if self._port is not None:
            await self._port.stopListening()
            self._port = None
        conns = list(self.connections)
        for c in conns:
            c.transport.abortConnection()
        for c in conns:
            await c.lost


# -- handlers ---------------------------------------------------------------


def echo(conn: UpstreamConnection, request: UpstreamRequest) -> None:
    """
    Answer 200 with the request as JSON: method, target, headers (in order),
    the body (latin-1), its length and SHA-256, and which connection (by
    the server's accept count) carried it.
    """
    body = json.dumps(
        {
            "method": request.method.decode("latin-1"),
            "target": request.target.decode("latin-1"),
            "version": request.version.decode("latin-1"),
            "headers": [
                [n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers
            ],
            "body": request.body.decode("latin-1")
            if len(request.body) < 4096
            else None,
            "bodyLength": len(request.body),
            "bodySha256": hashlib.sha256(request.body).hexdigest(),
            "port": conn.server.port,
        }
    ).encode("utf-8")
    conn.respond(200, body, [(b"Content-Type", b"application/json")])


def sized(size: int, extra: list[tuple[bytes, bytes]] | None = None) -> Handler:
    """
    Answer 200 with a body of C{size} bytes and a Content-Length.
    """

    def handle(conn: UpstreamConnection, request: UpstreamRequest) -> None:
        conn.respond(200, b"x" * size, extra)

    return handle


@implementer(IPullProducer)
class _Generator:
    """
    Writes a generated body, one piece each time the transport asks.
    """

    PIECE = b"abcdefgh" * 8192  # 64 KiB

    def __init__(self, conn: UpstreamConnection, total: int) -> None:
        self._conn = conn
        self._left = total

    def resumeProducing(self) -> None:
        conn = self._conn
        if self._left <= 0 or conn.transport is None:
            return
        piece = (
            self.PIECE if self._left >= len(self.PIECE) else self.PIECE[: self._left]
        )
        self._left -= len(piece)
        conn.server.bytesWritten += len(piece)
        conn.transport.write(piece)
        if self._left <= 0:
            conn.transport.unregisterProducer()
            conn.done()

    def stopProducing(self) -> None:
        self._left = 0


def generated(total: int = 1 << 30) -> Handler:
    """
    Answer 200 with a C{total}-byte body (1 GiB by default) written by a
    pull producer, so that it is only written as fast as it is read.
    """

    def handle(conn: UpstreamConnection, request: UpstreamRequest) -> None:
        conn.respondHead(200, [(b"Content-Length", b"%d" % total)])
        conn.transport.registerProducer(_Generator(conn, total), False)

    return handle


def delayed(seconds: float, then: Handler = echo) -> Handler:
    """
    Wait C{seconds} before answering as C{then} does (unless the connection
    is gone by then).
    """

    def handle(conn: UpstreamConnection, request: UpstreamRequest) -> None:
        def later() -> None:
            if conn.transport is not None and conn.transport.connected:
                then(conn, request)

        conn.server.reactor.callLater(seconds, later)

    return handle


def chunked(
    pieces: list[bytes], extra: list[tuple[bytes, bytes]] | None = None
) -> Handler:
    """
    Answer 200 with C{Transfer-Encoding: chunked}, one chunk per piece.
    """

    def handle(conn: UpstreamConnection, request: UpstreamRequest) -> None:
        conn.respondHead(200, [(b"Transfer-Encoding", b"chunked")] + list(extra or []))
        out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
        conn.transport.write(out + b"0\r\n\r\n")
        conn.done()

    return handle


def raw(data: bytes, close: bool = True) -> Handler:
    """
    Answer with C{data} as it is (a malformed response, say), then close.
    """

    def handle(conn: UpstreamConnection, request: UpstreamRequest) -> None:
        conn.transport.write(data)
        if close:
            conn.transport.loseConnection()

    return handle


def closeWhenIdle(answered: int = 1, then: Handler = echo) -> Handler:
    """
    Answer the first C{answered} requests of each connection as C{then}
    does; close the connection, without an answer, when a later request
    arrives on it (what a server whose keep-alive timeout expires does when
    the request crosses its close).
    """

    def handle(conn: UpstreamConnection, request: UpstreamRequest) -> None:
        if len(conn.requests) > answered:
            conn.transport.loseConnection()
            return
        then(conn, request)

    return handle


# -- a strict client ----------------------------------------------------------


@dataclass
class Response:
    code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    rawHead: bytes
    framing: str  # "length", "chunked", "close" or "none"

    def header(self, name: bytes) -> list[bytes]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def json(self) -> dict:
        return json.loads(self.body)


class ProtocolError(Exception):
    pass


class HTTPClient(Protocol):
    """
    A strict HTTP/1.1 client over one connection: requests are given as raw
    bytes and answered in order; any byte that does not fit the framing
    fails the waiting request.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._waiting: list[tuple[Deferred[Response], bool]] = []
        self._current: dict | None = None
        self.closed: Deferred[None] = Deferred()
        self.isClosed = False

    def send(
        self, data: bytes, head: bool = False, timeout: float = 10
    ) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        self._waiting.append((d, head))
        self.transport.write(data)
        return d.addTimeout(timeout, _globalReactor)

    def get(self, target: bytes, host: bytes, *lines: bytes) -> Deferred[Response]:
        return self.send(request(b"GET", target, host, *lines))

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except ProtocolError as e:
            self._failAll(Failure(e))
            self.transport.abortConnection()

    def _parse(self) -> None:
        while self._buffer:
            if not self._waiting:
                raise ProtocolError(
                    f"bytes with no request waiting: {self._buffer[:200]!r}"
                )
            if self._current is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
                lines = head.split(b"\r\n")
                if not lines[0].startswith(b"HTTP/1.1 "):
                    raise ProtocolError(f"bad status line {lines[0][:200]!r}")
                code = int(lines[0][9:12])
                headers = []
                for line in lines[1:]:
                    name, sep, value = line.partition(b":")
                    if not sep:
                        raise ProtocolError(f"bad header line {line!r}")
                    headers.append((name, value.strip()))
                r = Response(code, lines[0][13:], headers, b"", head, "")
                if 100 <= code < 200:
                    continue
                te = r.header(b"transfer-encoding")
                cl = r.header(b"content-length")
                if te and cl:
                    raise ProtocolError("both Transfer-Encoding and Content-Length")
                isHead = self._waiting[0][1]
                if isHead or code in (204, 304):
                    r.framing = "none"
                    self._done(r)
                    continue
                if te:
                    if te != [b"chunked"]:
                        raise ProtocolError(f"Transfer-Encoding {te!r}")
                    r.framing = "chunked"
                    self._current = {"r": r, "left": None}
                elif cl:
                    if len(cl) != 1:
                        raise ProtocolError(f"Content-Length {cl!r}")
                    r.framing = "length"
                    self._current = {"r": r, "left": int(cl[0])}
                    if int(cl[0]) == 0:
                        self._current = None
                        self._done(r)
                else:
                    r.framing = "close"
                    self._current = {"r": r, "left": -1}
                continue
            cur = self._current
            r = cur["r"]
            if r.framing == "length":
                take = self._buffer[: cur["left"]]
                self._buffer = self._buffer[len(take) :]
                r.body += take
                cur["left"] -= len(take)
                if cur["left"] == 0:
                    self._current = None
                    self._done(r)
                continue
            if r.framing == "close":
                r.body += self._buffer
                self._buffer = b""
                return
            # chunked
            eol = self._buffer.find(b"\r\n")
            if eol < 0:
                return
            size = int(self._buffer[:eol].split(b";")[0], 16)
            if size == 0:
                end = self._buffer.find(b"\r\n\r\n", eol)
                if self._buffer[eol : eol + 4] == b"\r\n\r\n":
                    self._buffer = self._buffer[eol + 4 :]
                elif end >= 0:
                    self._buffer = self._buffer[end + 4 :]
                else:
                    return
                self._current = None
                self._done(r)
                continue
            if len(self._buffer) < eol + 2 + size + 2:
                return
            r.body += self._buffer[eol + 2 : eol + 2 + size]
            if self._buffer[eol + 2 + size : eol + 4 + size] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._buffer = self._buffer[eol + 4 + size :]

    def _done(self, r: Response) -> None:
        d, _ = self._waiting.pop(0)
        d.callback(r)

    def _failAll(self, f: Failure) -> None:
        waiting, self._waiting = self._waiting, []
        for d, _ in waiting:
            d.errback(f)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.isClosed = True
        if self._current is not None and self._current["r"].framing == "close":
            r = self._current["r"]
            self._current = None
            self._done(r)
        self._failAll(Failure(ProtocolError(f"connection closed: {reason.value}")))
        self.closed.callback(None)


def request(
    method: bytes, target: bytes, host: bytes, *lines: bytes, body: bytes | None = None
) -> bytes:
    """
    The bytes of a request; C{lines} are extra header lines.
    """
    head = [method + b" " + target + b" HTTP/1.1", b"Host: " + host, *lines]
    if body is not None:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")


# -- the proxy as a process ---------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: twistd runs from here, so C{revproxy} is this tree's."""

TWISTD = [
    sys.executable,
    "-c",
    (
        "import sys; sys.argv[0] = 'twistd'; "
        "from twisted.scripts.twistd import run; run()"
    ),
]
"""C{twistd} for this interpreter.  (C{python -m twisted.scripts.twistd}
does nothing: that module has no C{__main__} block.)"""


async def loggedListeningPort(
    text: Callable[[], str], exited: Callable[[], bool], timeout: float = 15.0
) -> int:
    """
    The port a proxy logged it listens on ("ProxySite starting on N", in a
    text or a JSON log), polling C{text()}, the log so far, until it appears,
    C{exited()} is true or C{timeout} seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"starting on (\d+)", text())
        if match:
            return int(match.group(1))
        if exited():
            break
        await deferLater(_globalReactor, 0.05, lambda: None)
    raise AssertionError(f"the proxy did not start listening:\n{text()}")


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(int(entry.name))
    return children


class ProxyProcess:
    """
    C{twistd -n revproxy ARGS} in a subprocess, its output in a file.
    """

    def __init__(self, args: list[str], outputDir: Path, twistdArgs: Sequence[str] = ()) -> None:
        self.output = outputDir / "twistd.log"
        self._file = open(self.output, "wb")  # noqa: SIM115 -- closed by kill()
        self.process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", *twistdArgs, "revproxy", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    def text(self) -> str:
        return self.output.read_bytes().decode("utf-8", "replace")

    async def listeningPort(self, timeout: float = 15.0) -> int:
        """
        The port the proxy logged it listens on ("ProxySite starting on N").
        """
        return await loggedListeningPort(
            self.text, lambda: self.process.poll() is not None, timeout
        )

    async def exitCode(self, timeout: float) -> int | None:
        """
        Wait at most C{timeout} seconds for the process to exit; its exit
        code, or L{None} if it is still running.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return code
            await deferLater(_globalReactor, 0.05, lambda: None)
        return self.process.poll()

    def tree(self) -> str:
        """
        The process and its children, a line each (pid, state, what it
        waits in, command): what a test that waited in vain reports.
        """
        lines = []
        for pid in [self.pid, *_children(self.pid)]:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                wchan = Path(f"/proc/{pid}/wchan").read_text()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            state = stat.rpartition(")")[2].split()[0]
            lines.append(f"{pid} {state} {wchan or '-'} {command[-120:].decode('utf-8', 'replace')}")
        return "\n".join(lines)

    def rss(self) -> int:
        """
        The process's resident set size, in bytes.
        """
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024

    def kill(self) -> None:
        """
        Kill the process (by its pid) if it still runs, and reap it.
        """
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)
        self._file.close()


@asynccontextmanager
async def proxySession(
    outputDir: Path, host: str, args: list[str], handler: Handler = echo
) -> AsyncIterator[tuple[ProxyProcess, HTTPClient, UpstreamServer]]:
    """
    A proxy routing C{host} to an upstream that answers with C{handler},
    started with C{args} more, and a client connected to it.  When the block
    ends, the client closes and the proxy must exit 0 on SIGTERM; whatever
    happens, both are gone after it.
    """
    up = await UpstreamServer(handler).start()
    proc = ProxyProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--route", f"{host}={up.address}", *args],
        outputDir,
    )
    client = None
    try:
        port = await proc.listeningPort()
        client = await connectProtocol(
            TCP4ClientEndpoint(_globalReactor, "127.0.0.1", port), HTTPClient()
        )
        yield proc, client, up
        client.transport.loseConnection()
        await client.closed
        os.kill(proc.pid, signal.SIGTERM)
        assert await proc.exitCode(timeout=15) == 0, proc.text()
    finally:
        await endSession(client, proc, up)


async def endSession(
    client: HTTPClient | None, proc: ProxyProcess, up: UpstreamServer
) -> None:
    """
    Make sure a test's client, proxy and upstream are gone, however it
    ended: the client aborted if still open, the proxy killed.
    """
    if client is not None and not client.isClosed:
        client.transport.abortConnection()
        await client.closed
    proc.kill()
    await up.stop()
