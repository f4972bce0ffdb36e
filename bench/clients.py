"""
The benchmark's own clients, for what wrk cannot do: many idle keep-alive
connections, and one client that asks for a huge response and does not read.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class IdleResult:
    """
    How many idle connections were opened (each after one full response)
    and how many were still open when the proxy's memory was read.
    """

    opened: int
    stillOpen: int
    failed: int


async def _readResponse(reader: asyncio.StreamReader) -> int:
    """
    Read one HTTP/1.1 response (Content-Length or chunked); return its status.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _holdIdle(
    port: int, host: str, path: str, count: int, settle: float, measure: Callable[[], None]
) -> IdleResult:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    gate = asyncio.Semaphore(100)
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failed = 0

    async def openOne() -> None:
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 10
                )
                writer.write(request)
                status = await asyncio.wait_for(_readResponse(reader), 10)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                failed += 1
                return
            if status != 200:
                failed += 1
                writer.close()
                return
            streams.append((reader, writer))

    try:
        await asyncio.gather(*(openOne() for _ in range(count)))
        await asyncio.sleep(settle)
        measure()
        stillOpen = sum(1 for reader, _ in streams if not reader.at_eof())
        return IdleResult(len(streams), stillOpen, failed)
    finally:
        for _, writer in streams:
            writer.close()


def holdIdleConnections(
    port: int, host: str, path: str, count: int, settle: float, measure: Callable[[], None]
) -> IdleResult:
    """
    Open C{count} connections to 127.0.0.1:C{port}, make one request on
    each and keep them open; C{settle} seconds after the last one, call
    C{measure}, then close them all.
    """
    return asyncio.run(_holdIdle(port, host, path, count, settle, measure))


@dataclass(frozen=True)
class SlowReaderResult:
    """
    What the proxy's memory did while one client did not read a huge
    response: resident set (KiB) before the request and at its peak, and
    whether the sampling stopped early at the safety cap.
    """

    rssBeforeKiB: int
    rssPeakKiB: int
    bytesRead: int
    capped: bool


def slowReader(
    port: int,
    host: str,
    path: str,
    seconds: float,
    rssKiB: Callable[[], int],
    capKiB: int,
) -> SlowReaderResult:
    """
    Ask 127.0.0.1:C{port} for C{path} with a small receive buffer and read
    nothing for C{seconds}, sampling C{rssKiB} every 100 ms; stop early if
    the growth passes C{capKiB}. Then read for a moment and hang up.
    """
    before = rssKiB()
    peak = before
    capped = False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
            peak = max(peak, rssKiB())
            if peak - before > capKiB:
                capped = True
                break
        # A slow reader, not a dead one: read 64 KiB, proving it was served.
        s.settimeout(2)
        got = 0
        try:
            while got < 65536:
                chunk = s.recv(16384)
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass
    return SlowReaderResult(before, peak, got, capped)
