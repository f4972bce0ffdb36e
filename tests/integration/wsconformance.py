"""
A WebSocket conformance run in the manner of Autobahn's fuzzing client
(autobahntestsuite's C{wstest -m fuzzingclient}), written for Python 3:
autobahntestsuite 25.10.1 on PyPI is still Python 2 code (it fails to
import on Python 3.11), so this client replays the same case categories
itself, with raw frames on a socket:

  1. framing (text and binary messages of boundary sizes, chopped writes);
  2. pings and pongs (payload sizes, unsolicited pongs, 126-byte ping);
  3. reserved bits; 4. reserved opcodes;
  5. fragmentation (control frames between fragments, bad continuations);
  6. UTF-8 (valid boundaries, invalid sequences, whole and byte by byte);
  7. closing (valid and invalid close codes, bad payloads, data after
     close);
  9. limits (messages up to 16 MiB, 1 MiB sent in frames of 64 B to
     256 KiB).

Each case opens a connection, sends its frames, waits for the echoes and
pongs it expects (at most a few seconds), then sends a close frame (as
Autobahn does), reads until the server closes, and records what came back:
data frames reassembled into messages, pongs and the close code.  A case
passes if the server did what RFC 6455 asks (echo, pong, or fail the
connection with 1002/1007); the run through the proxy passes if every case
has the same outcome as against the server directly.

Run it: C{python -m tests.integration.wsconformance} (prints the figures);
the integration test C{test_tunnel.test_conformance_cases} runs it too.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0

Frame = tuple[int, bytes, bool, int]
"""opcode, payload, fin, rsv bits"""


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    """
    A masked client frame.
    """
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if n:
        stream = (key * (n // 4 + 1))[:n]
        masked = (
            int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
        ).to_bytes(n, "little")
    else:
        masked = b""
    return head + key + masked


def close(code: int | None = 1000, reason: bytes = b"") -> bytes:
    return frame(CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason)


@dataclass
class Case:
    """
    One case: C{data} to send after the handshake (in writes of C{chop}
    bytes if set), and what the server must do: C{echo} these messages
    (opcode, payload) and C{pongs} these, then answer the final close with
    1000; or, if C{fail}, fail the connection (close 1002 or 1007, or just
    drop it); or C{closeCode}: answer with this close code.
    """

    id: str
    data: bytes
    echo: list[tuple[int, bytes]] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    fail: bool = False
    closeCode: int | None = 1000
    chop: int = 0
    final: bool = True
    mayDropEcho: bool = False


@dataclass
class Outcome:
    messages: list[tuple[int, str]]
    pongs: list[bytes]
    closeCode: int | None
    error: str = ""

    def key(self) -> tuple[object, ...]:
        return (tuple(self.messages), tuple(self.pongs), self.closeCode, self.error)


def _digest(data: bytes) -> str:
    return f"{len(data)}:{hashlib.sha1(data).hexdigest()[:12]}"


def cases() -> Iterator[Case]:
    sizes = [0, 125, 126, 127, 128, 65535, 65536, 1 << 20]
    for i, n in enumerate(sizes):
        text = b"*" * n
        yield Case(f"1.1.{i + 1}", frame(TEXT, text), echo=[(TEXT, text)])
        data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        yield Case(f"1.2.{i + 1}", frame(BINARY, data), echo=[(BINARY, data)])
    yield Case("1.1.9", frame(TEXT, b"*" * 300), echo=[(TEXT, b"*" * 300)], chop=1)
    yield Case("1.2.9", frame(BINARY, b"\xfe" * 300), echo=[(BINARY, b"\xfe" * 300)], chop=1)

    yield Case("2.1", frame(PING), pongs=[b""])
    yield Case("2.2", frame(PING, b"Hello, world!"), pongs=[b"Hello, world!"])
    yield Case("2.3", frame(PING, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"), pongs=[b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"])
    yield Case("2.4", frame(PING, b"*" * 125), pongs=[b"*" * 125])
    yield Case("2.5", frame(PING, b"*" * 126), fail=True)
    yield Case("2.6", frame(PING, b"*" * 125), pongs=[b"*" * 125], chop=1)
    yield Case("2.7", frame(PONG), )
    yield Case("2.8", frame(PONG, b"unsolicited pong payload"))
    yield Case("2.9", frame(PONG, b"x") + frame(PING, b"y"), pongs=[b"y"])
    pings = b"".join(frame(PING, b"ping %d" % i) for i in range(10))
    yield Case("2.10", pings, pongs=[b"ping %d" % i for i in range(10)])
    yield Case("2.11", pings, pongs=[b"ping %d" % i for i in range(10)], chop=1)

    for rsv in range(1, 8):
        yield Case(f"3.{rsv}", frame(TEXT, b"Hello", rsv=rsv), fail=True)
    yield Case("3.8", frame(BINARY, b"\x00" * 10, rsv=2), fail=True)
    yield Case("3.9", frame(PING, b"x", rsv=4), fail=True)

    n = 0
    for opcode in [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]:
        for payload in [b"", b"reserved opcode"]:
            n += 1
            yield Case(f"4.{n}", frame(opcode, payload), fail=True)
            n += 1
            yield Case(
                f"4.{n}",
                frame(TEXT, b"Hello") + frame(opcode, payload) + frame(PING),
                echo=[(TEXT, b"Hello")],
                fail=True,
                mayDropEcho=True,
            )

    yield Case("5.1", frame(PING, b"frag", fin=False) + frame(CONT, b"ment"), fail=True)
    yield Case("5.2", frame(PONG, b"frag", fin=False) + frame(CONT, b"ment"), fail=True)
    fragmented = frame(TEXT, b"frag", fin=False) + frame(CONT, b"ment")
    yield Case("5.3", fragmented, echo=[(TEXT, b"fragment")])
    yield Case("5.4", fragmented, echo=[(TEXT, b"fragment")], chop=1)
    yield Case(
        "5.5",
        frame(TEXT, b"frag", fin=False) + frame(PING, b"in between") + frame(CONT, b"ment"),
        echo=[(TEXT, b"fragment")],
        pongs=[b"in between"],
    )
    yield Case(
        "5.6",
        frame(BINARY, b"frag", fin=False) + frame(PONG, b"x") + frame(CONT, b"ment"),
        echo=[(BINARY, b"fragment")],
    )
    yield Case("5.7", frame(CONT, b"no start"), fail=True)
    yield Case("5.8", frame(CONT, b"no start", fin=False) + frame(CONT, b"x"), fail=True)
    yield Case(
        "5.9",
        frame(TEXT, b"frag", fin=False) + frame(TEXT, b"ment"),
        fail=True,
    )
    many = frame(TEXT, b"a", fin=False) + b"".join(frame(CONT, b"a", fin=False) for _ in range(98)) + frame(CONT, b"a")
    yield Case("5.10", many, echo=[(TEXT, b"a" * 100)])
    yield Case("5.11", frame(TEXT, b"", fin=False) + frame(CONT, b"") + frame(CONT, b""), fail=True)

    valid = [
        "Hello-µ@ßöäüàá-UTF-8!!",
        "κόσμε",
        "\u0080",
        "\u07ff",
        "\u0800",
        "\uffff",
        "\U00010000",
        "\U0010ffff",
        "\ufeff",
        "\ud7ff\ue000\ufffd",
    ]
    n = 0
    for text in valid:
        data = text.encode()
        n += 1
        yield Case(f"6.{n}", frame(TEXT, data), echo=[(TEXT, data)])
        n += 1
        split = frame(TEXT, data[:1], fin=False) + b"".join(
            frame(CONT, data[i : i + 1], fin=i == len(data) - 1) for i in range(1, len(data))
        ) if len(data) > 1 else frame(TEXT, data)
        yield Case(f"6.{n}", split, echo=[(TEXT, data)])
    invalid = [
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        b"\xff",
        b"\xfe",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xf4\x90\x80\x80",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xc2",
        b"\xe0\xa0",
        b"\xf0\x90\x80",
        b"\x80",
        b"hello\xc0world",
    ]
    for data in invalid:
        n += 1
        yield Case(f"6.{n}", frame(TEXT, data), fail=True)
        n += 1
        yield Case(
            f"6.{n}",
            frame(TEXT, data[:1], fin=len(data) == 1)
            + b"".join(frame(CONT, data[i : i + 1], fin=i == len(data) - 1) for i in range(1, len(data))),
            fail=True,
        )

    yield Case("7.1", close(1000) + frame(TEXT, b"after close"), final=False)
    yield Case("7.2", close(None), closeCode=None, final=False)
    yield Case("7.3", frame(CLOSE, b"\x03"), fail=True, final=False)
    yield Case("7.4", close(1000, b"*" * 123), final=False)
    yield Case("7.5", close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), fail=True, final=False)
    n = 0
    for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]:
        n += 1
        yield Case(f"7.7.{n}", close(code), closeCode=code, final=False)
    n = 0
    for code in [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535]:
        n += 1
        yield Case(f"7.9.{n}", close(code), fail=True, final=False)

    n = 0
    for size in [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]:
        text = b"*" * size
        n += 1
        yield Case(f"9.1.{n}", frame(TEXT, text), echo=[(TEXT, text)])
        data = os.urandom(size)
        n += 1
        yield Case(f"9.2.{n}", frame(BINARY, data), echo=[(BINARY, data)])
    data = os.urandom(1 << 20)
    for i, chunk in enumerate([64, 256, 1024, 4096, 16384, 65536, 262144]):
        parts = [data[j : j + chunk] for j in range(0, len(data), chunk)]
        frames = frame(BINARY, parts[0], fin=False) + b"".join(
            frame(CONT, p, fin=k == len(parts) - 1) for k, p in enumerate(parts[1:], 1)
        )
        yield Case(f"9.4.{i + 1}", frames, echo=[(BINARY, data)])


def handshake(sock: socket.socket, host: str) -> bytes:
    sock.sendall(
        f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed during the handshake: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 "):
        raise ConnectionError(f"no 101: {head!r}")
    return rest


def run(port: int, host: str, case: Case, timeout: float = 30.0) -> Outcome:
    """
    Play C{case} against the server on C{port} and record what it does.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        buffer = handshake(sock, host)
        _send(sock, case.data, case.chop)
        reader = _Reader(sock, buffer)
        if case.final:
            # Wait for what the case expects back, then close.
            deadline = time.monotonic() + 5
            sock.settimeout(0.5)
            while (
                not reader.closed
                and reader.closeCode == -1
                and (len(reader.messages) < len(case.echo) or len(reader.pongs) < len(case.pongs))
                and time.monotonic() < deadline
            ):
                reader.readSome()
            sock.settimeout(timeout)
            _send(sock, close(1000), 0)
        while not reader.closed:
            reader.readSome()
        return Outcome(reader.messages, reader.pongs, reader.closeCode)
    except (OSError, ConnectionError) as e:
        return Outcome([], [], -1, error=type(e).__name__)
    finally:
        sock.close()


def _send(sock: socket.socket, data: bytes, chop: int) -> None:
    try:
        if chop:
            for i in range(0, len(data), chop):
                sock.sendall(data[i : i + chop])
        else:
            sock.sendall(data)
    except OSError:
        pass  # the server may fail the connection before it read all


class _Reader:
    """
    Reads the server's frames: messages (reassembled), pongs, close code.
    """

    def __init__(self, sock: socket.socket, buffer: bytes) -> None:
        self.sock = sock
        self.buffer = buffer
        self.messages: list[tuple[int, str]] = []
        self.pongs: list[bytes] = []
        self.closeCode: int | None = -1
        self.closed = False
        self._parts: list[bytes] = []
        self._opcode = 0
        self._frames()

    def readSome(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.buffer += chunk
        self._frames()

    def _frames(self) -> None:
        while True:
            parsed = _parse(self.buffer)
            if parsed is None:
                return
            (op, fin, payload), self.buffer = parsed
            if op == PONG:
                self.pongs.append(payload)
            elif op == CLOSE:
                self.closeCode = int.from_bytes(payload[:2], "big") if payload else None
            elif op in (TEXT, BINARY, CONT):
                if op != CONT:
                    self._opcode = op
                self._parts.append(payload)
                if fin:
                    self.messages.append((self._opcode, _digest(b"".join(self._parts))))
                    self._parts = []


def _parse(buffer: bytes) -> tuple[tuple[int, bool, bytes], bytes] | None:
    if len(buffer) < 2:
        return None
    b0, b1 = buffer[0], buffer[1]
    n = b1 & 0x7F
    offset = 2
    if n == 126:
        if len(buffer) < 4:
            return None
        n = int.from_bytes(buffer[2:4], "big")
        offset = 4
    elif n == 127:
        if len(buffer) < 10:
            return None
        n = int.from_bytes(buffer[2:10], "big")
        offset = 10
    if len(buffer) < offset + n:
        return None
    return (b0 & 0x0F, bool(b0 & 0x80), buffer[offset : offset + n]), buffer[offset + n :]


def passed(case: Case, outcome: Outcome) -> bool:
    """
    Whether the server did what RFC 6455 asks in C{case}.
    """
    if outcome.error:
        return False
    echoed = [(op, _digest(data)) for op, data in case.echo]
    if case.mayDropEcho and not outcome.messages:
        echoed = []
    if outcome.messages[: len(echoed)] != echoed or outcome.pongs != case.pongs:
        return False
    if case.fail:
        return outcome.closeCode in (1002, 1007, -1)
    return len(outcome.messages) == len(echoed) and outcome.closeCode == case.closeCode


def compare(
    direct: Callable[[Case], Outcome], proxied: Callable[[Case], Outcome]
) -> dict[str, object]:
    """
    Run every case both ways; the figures and the differing cases.
    """
    figures: dict[str, object] = {"cases": 0, "direct": 0, "proxied": 0, "same": 0}
    differ: list[str] = []
    failedDirect: list[str] = []
    started = time.monotonic()
    for case in cases():
        a = direct(case)
        b = proxied(case)
        figures["cases"] += 1  # type: ignore[operator]
        figures["direct"] += passed(case, a)  # type: ignore[operator]
        figures["proxied"] += passed(case, b)  # type: ignore[operator]
        if a.key() == b.key():
            figures["same"] += 1  # type: ignore[operator]
        else:
            differ.append(f"{case.id}: direct {a} proxied {b}")
        if not passed(case, a):
            failedDirect.append(f"{case.id}: {a}")
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["differ"] = differ
    figures["failedDirect"] = failedDirect
    return figures


def main() -> None:
    from pathlib import Path
    from tempfile import mkdtemp

    from tests.integration.tunnels import EchoServer, Proxy

    echo = EchoServer()
    proxy = Proxy(["--no-access-log", "--route", f"ws.example.com={echo.address}"], Path(mkdtemp()))
    try:
        figures = compare(
            lambda c: run(echo.port, "ws.example.com", c),
            lambda c: run(proxy.port, "ws.example.com", c),
        )
        peak = proxy.peakRSS() >> 20
    finally:
        proxy.kill()
        echo.stop()
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(f"proxy peak RSS: {peak} MiB")
    sys.exit(0 if not figures["differ"] else 1)


if __name__ == "__main__":
    main()
