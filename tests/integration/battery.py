"""
The harness of the attack battery (L{tests.integration.test_battery}): a
recording upstream that keeps every raw byte the proxy sent it, a raw
client that sends bytes and reads whatever comes back within a deadline,
and the proxy as a real C{twistd -n revproxy} process.

Everything here is blocking and threaded on purpose: the battery drives the
proxy the way an attacker would, with plain sockets and a clock, and never
depends on the test's own reactor.  Every wait is bounded.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.upstreams import ProxyProcess

__all__ = [
    "Answer",
    "Exchange",
    "ProxyUnderTest",
    "RecordingUpstream",
    "Seen",
    "exchange",
    "startProxy",
]

DEADLINE = 5.0
"""Seconds a case may take to get its answer: a proxy that hangs fails."""

QUIET = 0.5
"""Seconds of silence after a complete answer before the client stops
reading (and decides that the connection was left open)."""


# -- the recording upstream ----------------------------------------------------


@dataclass
class Seen:
    """
    One request as the upstream parsed it.

    @ivar headers: the header lines in order, names as sent.
    @ivar framing: C{"length"}, C{"chunked"} or C{"none"}.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> list[bytes]:
        """
        Every value of the header C{name} (case-insensitive), in order.
        """
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def names(self) -> list[bytes]:
        """
        The header names, lower-cased, in order.
        """
        return [n.lower() for n, _ in self.headers]


class _Incomplete(Exception):
    pass


class _Malformed(Exception):
    pass


def _parseOne(buf: bytes) -> tuple[Seen, bytes]:
    """
    Parse one request from the start of C{buf}; return it and the rest.
    Raise L{_Incomplete} when more bytes are needed, L{_Malformed} when the
    bytes are not a request a strict origin server would take.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        raise _Incomplete()
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _Malformed(f"request line {lines[0][:200]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise _Malformed(f"header line {line[:200]!r}")
        headers.append((name, value.strip(b" \t")))
    seen = Seen(parts[0], parts[1], parts[2], headers, b"", "none")
    rest = buf[end + 4 :]
    te = seen.header(b"transfer-encoding")
    cl = seen.header(b"content-length")
    if te and cl:
        raise _Malformed("both Transfer-Encoding and Content-Length")
    if te:
        if [v.lower() for v in te] != [b"chunked"]:
            raise _Malformed(f"Transfer-Encoding {te!r}")
        seen.framing = "chunked"
        body = []
        while True:
            eol = rest.find(b"\r\n")
            if eol < 0:
                raise _Incomplete()
            sizeText = rest[:eol].split(b";")[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", sizeText):
                raise _Malformed(f"chunk size {rest[:eol][:100]!r}")
            size = int(sizeText, 16)
            if size == 0:
                trailerEnd = rest.find(b"\r\n\r\n", eol)
                if trailerEnd < 0:
                    raise _Incomplete()
                for line in rest[eol + 2 : trailerEnd].split(b"\r\n"):
                    if line:
                        n, _, v = line.partition(b":")
                        seen.trailers.append((n, v.strip()))
                rest = rest[trailerEnd + 4 :]
                break
            if len(rest) < eol + 2 + size + 2:
                raise _Incomplete()
            body.append(rest[eol + 2 : eol + 2 + size])
            if rest[eol + 2 + size : eol + 4 + size] != b"\r\n":
                raise _Malformed("chunk data not followed by CRLF")
            rest = rest[eol + 4 + size :]
        seen.body = b"".join(body)
    elif cl:
        if len(cl) != 1 or not cl[0].isdigit():
            raise _Malformed(f"Content-Length {cl!r}")
        n = int(cl[0])
        if len(rest) < n:
            raise _Incomplete()
        seen.framing = "length"
        seen.body, rest = rest[:n], rest[n:]
    return seen, rest


class RecordingUpstream:
    """
    A loopback HTTP/1.1 origin, one thread per connection, that records
    every raw byte it receives and every request it parses, and answers
    each request 200 with a short body (and C{100 Continue} first to a
    request that asks for it).

    L{reset} starts a new recording; L{raw}, L{requests} and L{malformed}
    read the current one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw = bytearray()
        self._requests: list[Seen] = []
        self._malformed: list[str] = []
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self._raw.clear()
            self._requests.clear()
            self._malformed.clear()

    def raw(self) -> bytes:
        with self._lock:
            return bytes(self._raw)

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._requests)

    def malformed(self) -> list[str]:
        with self._lock:
            return list(self._malformed)

    def stop(self) -> None:
        self._running = False
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        continued = False
        try:
            while self._running:
                data = conn.recv(65536)
                if not data:
                    return
                with self._lock:
                    self._raw += data
                buf += data
                while buf:
                    try:
                        seen, buf = _parseOne(buf)
                    except _Incomplete:
                        if not continued and _asksContinue(buf):
                            continued = True
                            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                        break
                    except _Malformed as e:
                        with self._lock:
                            self._malformed.append(str(e))
                        return
                    continued = False
                    with self._lock:
                        self._requests.append(seen)
                    body = b"upstream saw " + seen.method + b" " + seen.target[:100] + b"\n"
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                if conn in self._sockets:
                    self._sockets.remove(conn)


def _asksContinue(buf: bytes) -> bool:
    end = buf.find(b"\r\n\r\n")
    return end >= 0 and re.search(rb"(?im)^expect:\s*100-continue", buf[:end]) is not None


# -- the raw client -------------------------------------------------------------


@dataclass
class Answer:
    """
    One response the client read.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]


@dataclass
class Exchange:
    """
    What one connection got back: every status in order (interim ones
    too), the final responses, whether the proxy closed the connection
    (and when, seconds after the first byte was sent), and the raw bytes.
    """

    statuses: list[int]
    answers: list[Answer]
    closed: bool
    closedAfter: float | None
    raw: bytes
    garbage: str | None = None

    def describe(self) -> str:
        return f"statuses={self.statuses} closed={self.closed} raw={self.raw[:300]!r}" + (
            f" garbage={self.garbage}" if self.garbage else ""
        )


def _parseAnswers(buf: bytes) -> tuple[list[int], list[Answer], bool, str | None]:
    """
    The statuses and complete final responses in C{buf}, whether C{buf}
    ends on a response boundary, and what did not parse (if anything).
    """
    statuses: list[int] = []
    answers: list[Answer] = []
    while buf:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return statuses, answers, False, None
        lines = buf[:end].split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
        if match is None:
            return statuses, answers, False, f"status line {lines[0][:100]!r}"
        status = int(match.group(1))
        headers = []
        for line in lines[1:]:
            n, _, v = line.partition(b":")
            headers.append((n, v.strip()))
        statuses.append(status)
        rest = buf[end + 4 :]
        if 100 <= status < 200:
            buf = rest
            continue
        answer = Answer(status, headers, b"")
        cl = answer.header(b"content-length")
        if answer.header(b"transfer-encoding"):
            body = []
            while True:
                eol = rest.find(b"\r\n")
                if eol < 0:
                    return statuses, answers, False, None
                try:
                    size = int(rest[:eol].split(b";")[0], 16)
                except ValueError:
                    return statuses, answers, False, f"chunk size {rest[:eol][:100]!r}"
                if size == 0:
                    tail = rest.find(b"\r\n\r\n", eol)
                    if tail < 0:
                        return statuses, answers, False, None
                    rest = rest[tail + 4 :]
                    break
                if len(rest) < eol + 4 + size:
                    return statuses, answers, False, None
                body.append(rest[eol + 2 : eol + 2 + size])
                rest = rest[eol + 4 + size :]
            answer.body = b"".join(body)
        elif cl:
            if not cl[0].isdigit():
                return statuses, answers, False, f"Content-Length {cl!r}"
            n = int(cl[0])
            if len(rest) < n:
                return statuses, answers, False, None
            answer.body, rest = rest[:n], rest[n:]
        elif status not in (204, 304):
            # Delimited by the close: the rest is its body.
            answer.body, rest = rest, b""
        answers.append(answer)
        buf = rest
    return statuses, answers, True, None


def exchange(
    port: int,
    data: bytes | list[bytes],
    deadline: float = DEADLINE,
    quiet: float = QUIET,
    pause: float = 0.0,
    answers: int = 1,
) -> Exchange:
    """
    Connect to the proxy, send C{data} (a list is sent piece by piece,
    C{pause} seconds apart), and read until the proxy closes, C{deadline}
    seconds pass, or C{answers} final responses are complete and nothing
    more came for C{quiet} seconds.
    """
    pieces = [data] if isinstance(data, bytes) else list(data)
    received = bytearray()
    closed = False
    closedAfter = None
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        end = start + deadline
        lastData = start
        sendAt = start
        while True:
            now = time.monotonic()
            if pieces and now >= sendAt and not closed:
                try:
                    s.sendall(pieces.pop(0))
                except OSError:
                    pieces.clear()
                sendAt = now + pause
            if now >= end or closed:
                break
            statuses, complete, boundary, _ = _parseAnswers(bytes(received))
            done = len(complete) >= answers and boundary and not pieces
            if done and now - lastData >= quiet:
                break
            wait = min(end - now, 0.05)
            if pieces:
                wait = max(0.0, min(wait, sendAt - now))
            ready, _, _ = select.select([s], [], [], wait)
            if ready:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, OSError):
                    chunk = b""
                if chunk:
                    received += chunk
                    lastData = time.monotonic()
                else:
                    closed = True
                    closedAfter = time.monotonic() - start
    statuses, complete, _, garbage = _parseAnswers(bytes(received))
    return Exchange(statuses, complete, closed, closedAfter, bytes(received), garbage)


# -- the proxy -------------------------------------------------------------------


@dataclass
class ProxyUnderTest:
    """
    A running C{twistd -n revproxy} and the port it listens on; C{error}
    instead when it did not start (an option it does not know, say).
    """

    process: ProxyProcess
    port: int
    error: str | None = None


def startProxy(args: list[str], outputDir: Path, timeout: float = 30.0) -> ProxyUnderTest:
    """
    Start C{twistd -n revproxy} on a free loopback port with C{args} and
    wait until it logs the port it listens on.
    """
    outputDir.mkdir(parents=True, exist_ok=True)
    process = ProxyProcess(["--listen", "tcp:0:interface=127.0.0.1", *args], outputDir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"starting on (\d+)", process.text())
        if match:
            return ProxyUnderTest(process, int(match.group(1)))
        if process.process.poll() is not None:
            break
        time.sleep(0.05)
    tail = "\n".join(process.text().splitlines()[-5:])
    return ProxyUnderTest(process, 0, f"twistd revproxy {' '.join(args)} did not start:\n{tail}")
