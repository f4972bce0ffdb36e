"""
The fallback upstream, used only when nginx is missing: a small asyncio
HTTP/1.1 server with keep-alive that serves the same paths as the nginx
upstream (C{/1k}, C{/1m}, C{/1g}, POST C{/post}) on two ports, and counts
the connections it accepts, answered on a third port in stub_status format.

    python bench/builtin_upstream.py PORT1 PORT2 STATUS_PORT

It is not nginx: with it, the direct figures measure this server, and
there is no nginx reverse proxy to compare with.
"""

from __future__ import annotations

import asyncio
import sys

SMALL = b"k" * 1024
LARGE = b"m" * (1024 * 1024)
HUGE_SIZE = 1024 * 1024 * 1024
CHUNK = b"\0" * (256 * 1024)

accepts = 0
requests = 0


def _head(length: int, close: bool) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n\r\n" % (length, connection)
    )


async def _discardBody(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> None:
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return


async def serveContent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """
    Serve requests on one connection until the client or the request ends it.
    """
    global accepts, requests
    accepts += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path, version = lines[0].split(b" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    key, _, value = line.partition(b":")
                    headers[key.strip().lower()] = value.strip()
            await _discardBody(reader, headers)
            requests += 1
            connection = headers.get(b"connection", b"").lower()
            close = connection == b"close" or (
                version == b"HTTP/1.0" and connection != b"keep-alive"
            )
            path = path.split(b"?")[0]
            if path == b"/1g":
                writer.write(_head(HUGE_SIZE, close))
                for _ in range(HUGE_SIZE // len(CHUNK)):
                    writer.write(CHUNK)
                    await writer.drain()
            else:
                body = LARGE if path == b"/1m" else SMALL
                writer.write(_head(len(body), close) + body)
                await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serveStatus(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """
    Answer one request with nginx stub_status figures, then close.
    """
    global accepts
    accepts += 1
    try:
        await reader.readuntil(b"\r\n\r\n")
        body = b"Active connections: 0\nserver accepts handled requests\n %d %d %d\n" % (
            accepts,
            accepts,
            requests,
        )
        writer.write(_head(len(body), True) + body)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(ports: list[int]) -> None:
    servers = [
        await asyncio.start_server(serveContent, "127.0.0.1", port, backlog=4096)
        for port in ports[:2]
    ]
    servers.append(await asyncio.start_server(serveStatus, "127.0.0.1", ports[2]))
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:4]]))
