"""
Integration tests of the forwarding path: the proxy built by
L{revproxy.tap.makeService}, listening on loopback, in front of the real test
upstreams of L{tests.integration.upstreams}, driven by a raw HTTP/1.1 client
that sees the exact bytes of each response.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from revproxy.tap import Options, makeService
from tests.integration.upstreams import (
    HTTPClient,
    ProtocolError,
    ProxyProcess,
    Response,
    UpstreamConnection,
    UpstreamRequest,
    UpstreamServer,
    chunked,
    closeWhenIdle,
    delayed,
    echo,
    generated,
    raw,
    request,
)

LISTEN = "tcp:0:interface=127.0.0.1"


# -- harness ------------------------------------------------------------------


class Cleanup:
    """
    Async clean-up steps, run last-in first-out after the test.
    """

    def __init__(self) -> None:
        self.steps: list[Callable[[], Awaitable[object] | object]] = []

    def add(self, step: Callable[[], Awaitable[object] | object]) -> None:
        self.steps.append(step)


@pytest_twisted.async_yield_fixture
async def cleanup():
    c = Cleanup()
    yield c
    errors = []
    for step in reversed(c.steps):
        try:
            result = step()
            if result is not None and hasattr(result, "__await__"):
                await result
        except Exception as e:  # noqa: BLE001 -- keep cleaning up
            errors.append(e)
    if errors:
        raise errors[0]


async def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Wait until C{predicate()} holds, for at most C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


async def upstream(cleanup: Cleanup, handler=None, **kw) -> UpstreamServer:
    server = await UpstreamServer(handler, **kw).start()
    cleanup.add(server.stop)
    return server


async def proxy(cleanup: Cleanup, *args: str):
    """
    Start the proxy in this process with C{args} and return its port and
    service.
    """
    options = Options()
    options.parseOptions(["--listen", LISTEN, "--no-access-log", *args])
    service = makeService(options, reactor)
    service.startService()
    cleanup.add(service.stopService)
    listener = service.getServiceNamed(f"listen {LISTEN}")
    ports = []

    def record(port):
        ports.append(port)
        return port

    listener.whenListening().addCallback(record)
    assert ports, "the listener did not start listening"
    return ports[0].getHost().port, service


def refusedPort() -> int:
    """
    A loopback port that nothing listens on (just released).
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def client(cleanup: Cleanup, port: int) -> HTTPClient:
    proto = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), HTTPClient()
    )
    cleanup.add(lambda: closeClient(proto))
    return proto


async def closeClient(proto: HTTPClient) -> None:
    if not proto.isClosed:
        proto.transport.abortConnection()
    await proto.closed


async def get(
    cleanup: Cleanup, port: int, target: bytes, host: bytes, *lines: bytes
) -> Response:
    """
    One GET on a new connection.
    """
    c = await client(cleanup, port)
    return await c.get(target, host, *lines)


def noTraceback(r: Response) -> None:
    assert b"Traceback" not in r.body and b'File "' not in r.body, r.body
    assert r.header(b"content-type")[0].startswith(b"text/plain"), r.headers
    assert 0 < len(r.body) < 200, r.body


# -- 1. routing and forwarded headers ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_routed_request_keeps_path_query_and_host(cleanup):
    """A routed request reaches its upstream with path, query and Host untouched and X-Forwarded-* set (a trusted peer's X-Forwarded-For kept and appended to)."""
    up = await upstream(cleanup)
    port, _ = await proxy(
        cleanup, "--route", f"blog.example.com={up.address}", "--trusted-proxies", "127.0.0.1"
    )
    c = await client(cleanup, port)
    target = b"/a/b%20c/../d;p?x=1&y=%2F&y=2#"
    r = await c.get(target, b"blog.example.com", b"X-Forwarded-For: 10.0.0.1, 10.0.0.2")
    assert r.code == 200, r
    seen = r.json()
    headers = [(n.lower(), v) for n, v in seen["headers"]]
    assert seen["target"] == target.decode()
    assert [v for n, v in headers if n == "host"] == ["blog.example.com"]
    assert [v for n, v in headers if n == "x-forwarded-for"] == [
        "10.0.0.1, 10.0.0.2, 127.0.0.1"
    ]
    assert [v for n, v in headers if n == "x-forwarded-host"] == ["blog.example.com"]
    assert [v for n, v in headers if n == "x-forwarded-proto"] == ["http"]

    r = await c.get(b"/", b"blog.example.com:8080")
    headers = [(n.lower(), v) for n, v in r.json()["headers"]]
    assert [v for n, v in headers if n == "host"] == ["blog.example.com:8080"]
    assert [v for n, v in headers if n == "x-forwarded-for"] == ["127.0.0.1"]
    assert [v for n, v in headers if n == "x-forwarded-host"] == [
        "blog.example.com:8080"
    ]


# -- 2. balancing -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_round_robin_alternates_strictly(cleanup):
    """Round robin over two upstreams alternates strictly, request after request."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    port, _ = await proxy(
        cleanup, "--route", f"blog.example.com={a.address},{b.address}"
    )
    c = await client(cleanup, port)
    seen = [(await c.get(b"/", b"blog.example.com")).json()["port"] for _ in range(20)]
    assert set(seen) == {a.port, b.port}
    assert all(x != y for x, y in itertools.pairwise(seen)), seen


@pytest_twisted.ensureDeferred
async def test_random_balancing_reaches_both_upstreams(cleanup):
    """Random balancing over two upstreams sends requests to both."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    port, _ = await proxy(
        cleanup,
        "--balance",
        "random",
        "--route",
        f"blog.example.com={a.address},{b.address}",
    )
    c = await client(cleanup, port)
    seen = [(await c.get(b"/", b"blog.example.com")).json()["port"] for _ in range(200)]
    assert 20 < seen.count(a.port) < 180, seen.count(a.port)


# -- 3. host matching ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_exact_wildcard_and_unknown_hosts(cleanup):
    """An exact host beats a wildcard, a wildcard matches subdomains only, and an unknown host gets a 404 naming it."""
    exact = await upstream(cleanup)
    wild = await upstream(cleanup)
    port, _ = await proxy(
        cleanup,
        "--route",
        f"blog.example.com={exact.address}",
        "--route",
        f"*.example.com={wild.address}",
    )
    c = await client(cleanup, port)
    for host, expected in [
        (b"blog.example.com", exact.port),
        (b"BLOG.Example.COM", exact.port),
        (b"blog.example.com.", exact.port),
        (b"Blog.Example.Com.:3000", exact.port),
        (b"www.example.com", wild.port),
        (b"a.b.EXAMPLE.com:80", wild.port),
    ]:
        r = await c.get(b"/", host)
        assert (r.code, r.json()["port"]) == (200, expected), host
    for host in [b"example.com", b"other.org", b"blog.example.com.evil.org"]:
        r = await c.get(b"/", host)
        assert r.code == 404, (host, r)
        assert host in r.body, r.body
        noTraceback(r)


@pytest_twisted.ensureDeferred
async def test_default_route_catches_unknown_hosts(cleanup):
    """The * route answers every host that no other route matches."""
    exact = await upstream(cleanup)
    default = await upstream(cleanup)
    port, _ = await proxy(
        cleanup,
        "--route",
        f"blog.example.com={exact.address}",
        "--route",
        f"*={default.address}",
    )
    c = await client(cleanup, port)
    assert (await c.get(b"/", b"blog.example.com")).json()["port"] == exact.port
    assert (await c.get(b"/", b"other.org")).json()["port"] == default.port
    assert (await c.get(b"/", b"127.0.0.1:9")).json()["port"] == default.port


# -- 4. single-upstream mode with a base path ---------------------------------


@pytest.mark.parametrize(
    "base, target, expected",
    [
        ("/base/", b"/foo?q=1", "/base/foo?q=1"),
        ("/base/", b"/", "/base/"),
        ("/base", b"/foo?q=1", "/base/foo?q=1"),
        ("/base/", b"/a//b?x=%2F", "/base/a//b?x=%2F"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_upstream_base_path_joins_go_style(cleanup, base, target, expected):
    """--upstream with a base path joins it to the request path with one slash, query kept."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--upstream", f"http://{up.address}{base}")
    r = await get(cleanup, port, target, b"anything.example")
    assert r.code == 200
    assert r.json()["target"] == expected


# -- 5. hop-by-hop and repeated headers ---------------------------------------

_RESPONSE_HOP = [
    (b"Connection", b"X-Upstream-Secret"),
    (b"Keep-Alive", b"timeout=5"),
    (b"X-Upstream-Secret", b"s"),
    (b"Upgrade", b"h2c"),
    (b"Proxy-Connection", b"keep-alive"),
    (b"TE", b"trailers"),
    (b"Set-Cookie", b"a=1; Path=/"),
    (b"X-Multi", b"one"),
    (b"Set-Cookie", b"b=2; Path=/"),
    (b"X-Multi", b"two"),
]


def _hopHandler(conn: UpstreamConnection, req: UpstreamRequest) -> None:
    if req.target == b"/response":
        conn.respond(200, b"ok", _RESPONSE_HOP)
    else:
        echo(conn, req)


@pytest_twisted.ensureDeferred
async def test_hop_by_hop_headers_are_dropped_both_ways(cleanup):
    """Hop-by-hop headers are dropped in both directions and repeated headers arrive all, in order."""
    up = await upstream(cleanup, _hopHandler)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    r = await c.get(
        b"/request",
        b"blog.example.com",
        b"Connection: keep-alive, X-Client-Secret",
        b"Keep-Alive: timeout=5",
        b"TE: trailers",
        b"Upgrade: websocket",
        b"Proxy-Connection: keep-alive",
        b"X-Client-Secret: s",
        b"X-Multi: one",
        b"X-Multi: two",
    )
    assert r.code == 200
    names = [n.lower() for n, v in r.json()["headers"]]
    for hop in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
        "transfer-encoding",
        "x-client-secret",
    ]:
        assert hop not in names, (hop, r.json()["headers"])
    assert [v for n, v in r.json()["headers"] if n.lower() == "x-multi"] == [
        "one",
        "two",
    ]

    r = await c.get(b"/response", b"blog.example.com")
    assert (r.code, r.body) == (200, b"ok")
    names = [n.lower() for n, v in r.headers]
    for hop in [
        b"connection",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"proxy-connection",
        b"x-upstream-secret",
        b"transfer-encoding",
    ]:
        assert hop not in names, (hop, r.headers)
    assert r.header(b"set-cookie") == [b"a=1; Path=/", b"b=2; Path=/"]
    assert r.header(b"x-multi") == [b"one", b"two"]


# -- 6. request bodies ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_chunked_request_body_is_reframed_once(cleanup):
    """A chunked request body reaches the upstream with a Content-Length and no Transfer-Encoding."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    r = await c.send(
        b"POST /upload HTTP/1.1\r\nHost: blog.example.com\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    assert r.code == 200
    [seen] = up.requests
    assert seen.header(b"transfer-encoding") == []
    assert b"chunked" not in seen.rawHead.lower()
    assert seen.header(b"content-length") == [b"11"]
    assert seen.body == b"hello world"
    # The connection still frames requests correctly afterwards.
    r = await c.get(b"/after", b"blog.example.com")
    assert r.json()["target"] == "/after"
    assert len(up.requests) == 2


@pytest_twisted.ensureDeferred
async def test_request_with_both_framings_is_not_smuggled(cleanup):
    """A request with both Content-Length and Transfer-Encoding is refused or forwarded with one framing."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    try:
        r = await c.send(
            b"POST /upload HTTP/1.1\r\nHost: blog.example.com\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
            b"GET /smuggled HTTP/1.1\r\nHost: blog.example.com\r\n\r\n"
        )
    except ProtocolError:
        r = None  # the proxy closed the connection: refused
    if r is not None and r.code == 200:
        [seen] = up.requests
        assert seen.header(b"transfer-encoding") == []
        assert seen.header(b"content-length") == [b"5"]
        assert seen.body == b"hello"
    else:
        assert r is None or r.code == 400, r
    await deferLater(reactor, 0.2, lambda: None)
    assert all(req.target != b"/smuggled" or req.body == b"" for req in up.requests)
    assert len(up.requests) <= 2


@pytest_twisted.ensureDeferred
async def test_large_request_body_arrives_intact(cleanup):
    """A 3 MiB POST body arrives at the upstream intact."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    body = os.urandom(3 << 20)
    r = await c.send(request(b"POST", b"/big", b"blog.example.com", body=body))
    assert r.code == 200
    seen = r.json()
    assert seen["bodyLength"] == len(body)
    assert seen["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert up.requests[0].header(b"content-length") == [b"%d" % len(body)]


# -- 7. upstream keep-alive -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_keep_alive_reuses_upstream_connections(cleanup):
    """300 sequential requests over one client connection use at most 4 upstream connections."""
    up = await upstream(cleanup)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    for i in range(300):
        r = await c.get(b"/%d" % i, b"blog.example.com")
        assert r.code == 200
    assert len(up.requests) == 300
    assert up.accepted <= 4, up.accepted


# -- 8. response framing ----------------------------------------------------------


def _framingHandler(conn: UpstreamConnection, req: UpstreamRequest) -> None:
    if req.target == b"/chunked":
        chunked([b"hello ", b"chunked ", b"world"], [(b"X-Kind", b"chunked")])(
            conn, req
        )
    elif req.target == b"/head":
        conn.respondHead(
            200, [(b"Content-Length", b"1234"), (b"Content-Type", b"text/html")]
        )
        conn.done()
    elif req.target == b"/204":
        conn.respond(204, contentLength=False)
    elif req.target == b"/304":
        conn.respond(304, headers=[(b"ETag", b'"v1"')], contentLength=False)
    else:
        echo(conn, req)


@pytest_twisted.ensureDeferred
async def test_chunked_head_204_304_keep_framing(cleanup):
    """Chunked, HEAD, 204 and 304 responses pass with correct framing and the client connection stays usable."""
    up = await upstream(cleanup, _framingHandler)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)

    r = await c.get(b"/chunked", b"blog.example.com")
    assert (r.code, r.body) == (200, b"hello chunked world")
    assert r.header(b"x-kind") == [b"chunked"]
    assert r.framing in ("chunked", "length")
    assert len(r.header(b"transfer-encoding")) <= 1

    r = await c.send(request(b"HEAD", b"/head", b"blog.example.com"), head=True)
    assert r.code == 200
    assert r.header(b"content-length") == [b"1234"]
    assert r.header(b"transfer-encoding") == []
    assert (await c.get(b"/after-head", b"blog.example.com")).json()[
        "target"
    ] == "/after-head"

    for code in (204, 304):
        r = await c.get(b"/%d" % code, b"blog.example.com")
        assert r.code == code
        assert r.header(b"transfer-encoding") == []
        assert r.header(b"content-length") in ([], [b"0"])
        if code == 304:
            assert r.header(b"etag") == [b'"v1"']
        after = await c.get(b"/after-%d" % code, b"blog.example.com")
        assert after.json()["target"] == f"/after-{code}"


@pytest_twisted.ensureDeferred
async def test_close_delimited_response_is_reframed(cleanup):
    """An HTTP/1.0 response delimited by the upstream's close reaches the client whole and framed."""
    up = await upstream(
        cleanup, raw(b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nuntil close")
    )
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    r = await c.get(b"/", b"blog.example.com")
    assert (r.code, r.body, r.framing) == (200, b"until close", "chunked")
    assert r.header(b"x-old") == [b"yes"]
    assert (await c.get(b"/", b"blog.example.com")).code == 200


# -- 9. backpressure toward a slow client -----------------------------------------


class SlowReader(Protocol):
    """
    Reads until C{limit} bytes arrived, then stops reading.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(request(b"GET", b"/huge", b"blog.example.com"))

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.limit:
            self.transport.pauseProducing()

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_upstream_without_memory_growth(cleanup, tmp_path):
    """A client that stops reading a 1 GiB response pauses the upstream and the proxy's memory stays flat."""
    up = await upstream(cleanup, generated(1 << 30))
    proc = ProxyProcess(
        [
            "--listen",
            LISTEN,
            "--no-access-log",
            "--route",
            f"blog.example.com={up.address}",
        ],
        tmp_path,
    )
    cleanup.add(proc.kill)
    port = await proc.listeningPort()
    before = proc.rss()
    reader = SlowReader(4 << 20)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)

    async def close() -> None:
        reader.transport.abortConnection()
        await reader.closed

    cleanup.add(close)
    await wait(lambda: reader.received >= reader.limit, 10, "the first 4 MiB")
    await deferLater(reactor, 3, lambda: None)
    written = up.bytesWritten
    await deferLater(reactor, 2, lambda: None)
    growth = proc.rss() - before
    assert up.bytesWritten - written < 1 << 20, "the upstream was not paused"
    assert up.bytesWritten < 128 << 20, up.bytesWritten
    assert growth < 64 << 20, f"RSS grew by {growth >> 20} MiB"


# -- 10. client disconnect ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_disconnect_closes_upstream_connection(cleanup):
    """A client disconnect while the upstream delays its response closes the upstream connection."""
    up = await upstream(cleanup, delayed(30))
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    c.get(b"/slow", b"blog.example.com").addErrback(lambda f: None)
    await wait(lambda: len(up.requests) == 1, 5, "the request at the upstream")
    [conn] = up.connections
    c.transport.loseConnection()
    await c.closed
    await wait(lambda: conn.lost.called, 5, "the upstream connection to close")


# -- 11. upstream failures ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_refused_upstream_fails_over_to_the_next(cleanup):
    """A refused connection sends the request, even a POST, to the route's next upstream."""
    up = await upstream(cleanup)
    route = f"blog.example.com=127.0.0.1:{refusedPort()},{up.address}"
    # A small body, and one large enough to be spooled to a file.
    for body in [b"data", os.urandom(200 * 1024)]:
        # A new proxy each time, so that round robin picks the refused one first.
        port, _ = await proxy(cleanup, "--route", route)
        c = await client(cleanup, port)
        r = await c.send(request(b"POST", b"/p", b"blog.example.com", body=body))
        assert r.code == 200, r
        assert r.json()["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert len(up.requests) == 2


@pytest_twisted.ensureDeferred
async def test_all_upstreams_refused_is_503(cleanup):
    """When every upstream refuses, the host is down: the client gets a 503 with Retry-After and a short plain-text body (a 502 before issue 11)."""
    port, _ = await proxy(
        cleanup,
        "--route",
        f"blog.example.com=127.0.0.1:{refusedPort()},127.0.0.1:{refusedPort()}",
    )
    c = await client(cleanup, port)
    r = await c.get(b"/", b"blog.example.com")
    assert r.code == 503
    assert r.header(b"retry-after"), r
    noTraceback(r)
    assert (await c.get(b"/", b"blog.example.com")).code == 503


@pytest_twisted.ensureDeferred
async def test_upstream_without_headers_in_time_is_504(cleanup):
    """An upstream that sends no headers within --timeout gets the client a 504."""
    up = await upstream(cleanup, delayed(10))
    port, _ = await proxy(
        cleanup, "--timeout", "1", "--route", f"blog.example.com={up.address}"
    )
    c = await client(cleanup, port)
    started = time.monotonic()
    r = await c.get(b"/", b"blog.example.com")
    assert r.code == 504
    assert 0.9 < time.monotonic() - started < 5
    noTraceback(r)
    await wait(
        lambda: up.lostCount == 1, 5, "the timed-out upstream connection to close"
    )


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"",  # closes without an answer
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_upstream_response_is_502(cleanup, response):
    """A malformed upstream response (or none) gets the client a 502 with a plain body, or a cut-off response once headers were sent."""
    up = await upstream(cleanup, raw(response))
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    try:
        r = await c.get(b"/", b"blog.example.com")
    except ProtocolError:
        # The head was valid and already forwarded: the client must see a
        # cut-off response, never a complete one.
        assert response.startswith(b"HTTP/1.1 200 OK\r\nTransfer-Encoding"), response
        return
    assert r.code == 502, r
    noTraceback(r)


@pytest_twisted.ensureDeferred
async def test_upstream_closing_on_accept_is_502(cleanup):
    """An upstream that closes each connection as it accepts it gets the client a 502."""
    up = await upstream(cleanup, closeOnAccept=True)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    r = await get(cleanup, port, b"/", b"blog.example.com")
    assert r.code == 502
    noTraceback(r)


# -- 12. stale pooled connections --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_closing_idle_connection_is_not_an_error(cleanup):
    """An upstream that closes an idle pooled connection does not fail the next request."""

    def answerThenClose(conn: UpstreamConnection, req: UpstreamRequest) -> None:
        echo(conn, req)
        reactor.callLater(0.1, conn.transport.loseConnection)

    up = await upstream(cleanup, answerThenClose)
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    assert (await c.get(b"/1", b"blog.example.com")).code == 200
    await wait(
        lambda: up.lostCount == 1, 5, "the upstream to close the idle connection"
    )
    await deferLater(reactor, 0.05, lambda: None)
    assert (await c.get(b"/2", b"blog.example.com")).code == 200
    assert up.accepted == 2


@pytest_twisted.ensureDeferred
async def test_request_racing_upstream_close_is_retried(cleanup):
    """A GET on a pooled connection that the upstream closes unanswered is retried on a fresh connection."""
    up = await upstream(cleanup, closeWhenIdle(answered=1))
    port, _ = await proxy(cleanup, "--route", f"blog.example.com={up.address}")
    c = await client(cleanup, port)
    for i in range(3):
        r = await c.get(b"/%d" % i, b"blog.example.com")
        assert r.code == 200, r
        assert r.json()["target"] == f"/{i}"
    assert up.accepted >= 3
