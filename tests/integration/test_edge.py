"""
Integration tests of the client side on real sockets: request bodies that
stream to the upstream before they are complete, 100-continue, and the
limits and deadlines (header timeout, body size, connection count), against
the proxy built by L{revproxy.tap.makeService} and a real loopback
upstream.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from tests.integration import test_proxy as harness
from tests.integration.test_proxy import Cleanup, client, proxy, upstream, wait

cleanup = harness.cleanup  # the fixture
from tests.integration.upstreams import request

HOST = b"blog.example.com"


class RawClient(Protocol):
    """
    A client that sends raw bytes and keeps every byte it receives.
    """

    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[None] = Deferred()
        self.closedAt = 0.0

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closedAt = time.monotonic()
        self.closed.callback(None)


async def raw(cleanup: Cleanup, port: int) -> RawClient:
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())

    async def close() -> None:
        if proto.transport.connected:  # type: ignore[union-attr]
            proto.transport.abortConnection()  # type: ignore[union-attr]
        await proto.closed

    cleanup.add(close)
    return proto


@pytest_twisted.ensureDeferred
async def test_body_reaches_upstream_before_it_is_complete(cleanup):
    """The upstream gets the first part of a body before the client has sent the rest: nothing is spooled."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await raw(cleanup, port)
    body = bytes(range(256)) * 4096  # 1 MiB
    c.transport.write(
        b"POST /up HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body[:300_000]
    )
    await wait(lambda: up.connections and len(up.connections[0]._buffer) > 200_000, 5,
               "the first part of the body at the upstream")
    assert up.requests == []
    c.transport.write(body[300_000:])
    await wait(lambda: b"\r\n\r\n{" in c.data and c.data.rstrip().endswith(b"}"), 10, "the response")
    echoed = json.loads(c.data.split(b"\r\n\r\n", 1)[1])
    assert echoed["bodySha256"] == hashlib.sha256(body).hexdigest()


@pytest_twisted.ensureDeferred
async def test_chunked_body_goes_upstream_chunked(cleanup):
    """A chunked body that is not complete with its head goes upstream chunked, whole."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await raw(cleanup, port)
    c.transport.write(
        b"POST /up HTTP/1.1\r\nHost: blog.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    await wait(lambda: up.connections and b"abc" in up.connections[0]._buffer, 5, "the first chunk")
    c.transport.write(b"2\r\nde\r\n0\r\n\r\n")
    await wait(lambda: up.requests, 5, "the request")
    [r] = up.requests
    assert r.header(b"transfer-encoding") == [b"chunked"]
    assert r.header(b"content-length") == []
    assert r.body == b"abcde"


@pytest_twisted.ensureDeferred
async def test_expect_continue(cleanup):
    """Expect: 100-continue gets a 100 once the upstream is connected, then the final answer."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await raw(cleanup, port)
    c.transport.write(
        b"POST /up HTTP/1.1\r\nHost: blog.example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    await wait(lambda: b"100 Continue" in c.data, 5, "the 100")
    assert c.data == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.transport.write(b"hello")
    await wait(lambda: b"HTTP/1.1 200 " in c.data, 5, "the answer")
    assert up.requests[0].body == b"hello"
    assert up.requests[0].header(b"expect") == []


@pytest_twisted.ensureDeferred
async def test_expect_continue_unknown_host(cleanup):
    """A request for an unknown host gets its 404 without a 100, and the connection closes."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await raw(cleanup, port)
    c.transport.write(
        b"POST /up HTTP/1.1\r\nHost: other.example.com\r\nExpect: 100-continue\r\n"
        b"Content-Length: 1073741824\r\n\r\n"
    )
    await c.closed
    assert c.data.startswith(b"HTTP/1.1 404 "), c.data
    assert b" 100 " not in c.data


@pytest_twisted.ensureDeferred
async def test_header_timeout_closes_slowloris(cleanup):
    """A head trickled a byte at a time gets 408 at the header timeout, while a normal client is served."""
    up = await upstream(cleanup)
    port, _ = await proxy(
        cleanup, "--route", f"blog.example.com={up.address}", "--header-timeout", "1"
    )
    slow = await raw(cleanup, port)
    start = time.monotonic()
    slow.transport.write(b"GET / HTTP/1.1\r\nHost: blog.example.com\r\nX-Slow: ")
    normal = await client(cleanup, port)
    while not slow.closed.called and time.monotonic() - start < 5:
        slow.transport.write(b"a")
        r = await normal.get(b"/", HOST)
        assert r.code == 200
        await deferLater(reactor, 0.2, lambda: None)
    await slow.closed
    assert slow.data.startswith(b"HTTP/1.1 408 "), slow.data
    assert 0.9 < slow.closedAt - start < 2.5
    assert len(up.requests) >= 3


@pytest_twisted.ensureDeferred
async def test_max_body_size_chunked(cleanup):
    """A chunked body crossing --max-body-size is cut off: 413, and its upstream connection is closed."""
    up = await upstream(cleanup)
    port, _ = await proxy(
        cleanup, "--route", f"blog.example.com={up.address}", "--max-body-size", "100"
    )
    c = await raw(cleanup, port)
    c.transport.write(
        b"POST /up HTTP/1.1\r\nHost: blog.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"40\r\n" + b"a" * 64 + b"\r\n"
    )
    await wait(lambda: up.connections, 5, "the upstream connection")
    conn = up.connections[0]
    c.transport.write(b"40\r\n" + b"a" * 64 + b"\r\n")
    await c.closed
    assert c.data.startswith(b"HTTP/1.1 413 "), c.data
    await wait(lambda: conn.lost.called, 5, "the upstream connection to close")
    assert up.requests == []


@pytest_twisted.ensureDeferred
async def test_max_body_size_content_length(cleanup):
    """A Content-Length over --max-body-size gets 413 and no upstream is asked."""
    up = await upstream(cleanup)
    port, _ = await proxy(
        cleanup, "--route", f"blog.example.com={up.address}", "--max-body-size", "100"
    )
    c = await client(cleanup, port)
    r = await c.send(request(b"POST", b"/up", HOST, body=b"x" * 101))
    assert r.code == 413
    assert up.accepted == 0


@pytest_twisted.ensureDeferred
async def test_max_connections(cleanup):
    """Past --max-connections a new connection is closed at once; the open ones are served."""
    up = await upstream(cleanup)
    port, _ = await proxy(
        cleanup, "--route", f"blog.example.com={up.address}", "--max-connections", "2"
    )
    a = await client(cleanup, port)
    b = await client(cleanup, port)
    third = await raw(cleanup, port)
    await third.closed
    assert third.data == b""
    for c in (a, b):
        assert (await c.get(b"/", HOST)).code == 200


@pytest_twisted.ensureDeferred
async def test_smuggling_attempt_reaches_nobody(cleanup):
    """A CL.TE smuggling attempt is refused with 400 and the upstream sees no request at all."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await raw(cleanup, port)
    c.transport.write(
        b"POST / HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: 44\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: blog.example.com\r\n\r\n"
    )
    await c.closed
    assert c.data.startswith(b"HTTP/1.1 400 "), c.data
    assert c.data.count(b"HTTP/1.1") == 1
    assert up.accepted == 0
