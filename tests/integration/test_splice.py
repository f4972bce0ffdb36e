"""
Integration tests of request bodies spliced from the client's socket to the
upstream's (L{revproxy.http.splice}), on real sockets: the proxy built by
L{revproxy.tap.makeService} in this process, real loopback upstreams.

Each test also checks that the kernel path was taken (a spy on
L{revproxy.http.splice.spliceBody}), so that a body which arrives whole only
because it was read as usual does not pass for a spliced one.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import pytest_twisted

from revproxy.http import splice
from tests.integration import test_proxy as harness
from tests.integration.test_edge import raw
from tests.integration.test_proxy import Cleanup, proxy, upstream, wait

cleanup = harness.cleanup  # the fixture

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="no splice(2) here")

HEAD = b"POST /up HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: %d\r\n\r\n"


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """
    Count the bytes that L{splice.spliceBody} moved, and the times its
    upstream socket was full (the rest went through the transport).
    """
    counts = {"moved": 0, "calls": 0, "through": 0}
    real, realRead = splice.spliceBody, splice._readAll

    def spy(source: int, size: int, sink: object) -> int:
        moved = real(source, size, sink)
        counts["moved"] += moved
        counts["calls"] += 1
        return moved

    def readSpy(fd: int, size: int) -> bytes:
        counts["through"] += 1
        return realRead(fd, size)

    monkeypatch.setattr(splice, "spliceBody", spy)
    monkeypatch.setattr(splice, "_readAll", readSpy)
    return counts


def _echoed(data: bytes) -> dict:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def _done(data: bytes) -> bool:
    return b"\r\n\r\n{" in data and data.rstrip().endswith(b"}")


async def _route(cleanup: Cleanup) -> tuple[object, int]:
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    return up, port


async def _begun(cleanup: Cleanup, size: int, first: int) -> tuple[object, object, bytes]:
    """
    A proxy and its upstream, and a client that sent the head of a request
    with a random body of C{size} bytes and its C{first} bytes, which the
    upstream's connection has begun to get.
    """
    up, port = await _route(cleanup)
    c = await raw(cleanup, port)
    body = os.urandom(size)
    c.transport.write(HEAD % len(body) + body[:first])
    await wait(lambda: up.connections, 5, "the upstream connection")
    return up, c, body


@pytest_twisted.ensureDeferred
async def test_large_body_spliced_whole(cleanup, spliced):
    """A 4 MiB body sent in pieces reaches the upstream whole, all but its first read spliced."""
    up, c, body = await _begun(cleanup, 4 << 20, 1000)
    for i in range(1000, len(body), 300_000):
        c.transport.write(body[i : i + 300_000])
    await wait(lambda: _done(c.data), 20, "the response")
    assert c.data.startswith(b"HTTP/1.1 200 ")
    echoed = _echoed(c.data)
    assert echoed["bodyLength"] == len(body)
    assert echoed["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert spliced["moved"] >= len(body) - splice.HEAD_READ


@pytest_twisted.ensureDeferred
async def test_concurrent_bodies_stay_apart(cleanup, spliced):
    """Bodies spliced at once on several connections (one pipe per process) each arrive as sent."""
    up, port = await _route(cleanup)
    clients = [await raw(cleanup, port) for _ in range(6)]
    bodies = [os.urandom(600_000) for _ in clients]
    for c, body in zip(clients, bodies):
        c.transport.write(HEAD % len(body) + body[:100])
    await wait(lambda: len(up.connections) == len(clients), 5, "an upstream connection each")
    for offset in range(100, 600_000, 50_000):
        for c, body in zip(clients, bodies):
            c.transport.write(body[offset : offset + 50_000])
    for c, body in zip(clients, bodies):
        await wait(lambda: _done(c.data), 20, "each response")
        assert _echoed(c.data)["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert spliced["moved"] > 5 * 500_000


@pytest_twisted.ensureDeferred
async def test_slow_upstream_spliced_body_whole(cleanup, spliced):
    """An upstream that stops reading fills its socket: the rest goes through the transport, in order."""
    up, c, body = await _begun(cleanup, 16 << 20, 10)
    conn = up.connections[0]
    conn.transport.pauseProducing()
    c.transport.write(body[10:])
    await wait(lambda: spliced["through"], 10, "a full upstream socket")
    conn.transport.resumeProducing()
    await wait(lambda: _done(c.data), 30, "the response")
    assert _echoed(c.data)["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert spliced["moved"] > 0


@pytest_twisted.ensureDeferred
async def test_pipelined_request_after_spliced_body(cleanup, spliced):
    """What follows a spliced body is read as the next request, never spliced into the first."""
    up, c, body = await _begun(cleanup, 500_000, 10)
    c.transport.write(body[10:] + b"GET /next HTTP/1.1\r\nHost: blog.example.com\r\n\r\n")
    await wait(lambda: c.data.count(b"HTTP/1.1 200 ") == 2 and c.data.rstrip().endswith(b"}"),
               20, "both responses")
    first, second = c.data.split(b"HTTP/1.1 200 ")[1:]
    assert _echoed(first)["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert _echoed(second)["target"] == "/next"
    assert spliced["moved"] > 0


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_splice(cleanup, spliced):
    """A client that leaves mid-body aborts the upstream request; the next body is unharmed."""
    up, port = await _route(cleanup)
    c = await raw(cleanup, port)
    c.transport.write(HEAD % (4 << 20) + os.urandom(10))
    await wait(lambda: up.connections, 5, "the upstream connection")
    c.transport.write(os.urandom(1 << 20))
    await wait(lambda: spliced["moved"], 5, "bytes spliced")
    first = up.connections[0]
    c.transport.abortConnection()
    await first.lost
    assert up.requests == []
    c2 = await raw(cleanup, port)
    body = os.urandom(1 << 20)
    c2.transport.write(HEAD % len(body) + body)
    await wait(lambda: _done(c2.data), 20, "the next response")
    assert _echoed(c2.data)["bodySha256"] == hashlib.sha256(body).hexdigest()
