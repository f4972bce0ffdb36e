"""
Integration tests of tunnels: a real C{twistd revproxy} between a real
WebSocket server and client (the C{websockets} package), and a raw upstream
that switches to a line protocol.  The tests are synchronous: the proxy is
another process, the servers run in threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.etcd_fixture import EtcdMember
from tests.integration.tunnels import (
    MiB,
    EchoServer,
    LineServer,
    Proxy,
    etcdDelete,
    etcdPut,
    readHead,
    waitFor,
)

HOST = "chat.example.com"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture
def lines() -> Iterator[LineServer]:
    server = LineServer()
    yield server
    server.stop()


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    """
    Start C{twistd revproxy ARGS}; killed after the test.
    """
    started: list[Proxy] = []

    def start(*args: str, logs: bool = False) -> Proxy:
        proxy = Proxy(list(args) if logs else ["--no-access-log", *args], tmp_path)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.kill()


def test_websocket_echo_ping_and_accounting(echo, start):
    """Text and binary messages echo and pings are answered through the proxy; /metrics and one access-log line account for the tunnel."""
    proxy = start("--route", f"{HOST}={echo.address}", logs=True)
    with proxy.websocket(HOST) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01\xff" * 1000)
        assert ws.recv(timeout=5) == b"\x00\x01\xff" * 1000
        assert ws.ping(b"p").wait(5)
        assert proxy.metric("revproxy_tunnels_open", host=HOST) == 1
        assert proxy.metric("revproxy_tunnels_draining", host=HOST) == 0
    waitFor(lambda: proxy.metric("revproxy_tunnels_open", host=HOST) == 0, 5, "the end")
    up = proxy.metric("revproxy_tunnel_bytes_total", direction="upstream")
    down = proxy.metric("revproxy_tunnel_bytes_total", direction="downstream")
    assert 3005 < up < 3400 and 3005 < down < 3400, (up, down)
    assert proxy.metric("revproxy_inflight_requests") == 0
    waitFor(lambda: "tunnel_bytes_in=" in proxy.text(), 5, "the access log line")
    [line] = [t for t in proxy.text().splitlines() if "tunnel_bytes_in=" in t]
    assert '"GET /echo HTTP/1.1" 101 ' in line, line
    assert f"upstream={echo.address} duration=" in line, line
    assert f"tunnel_bytes_in={int(up)} tunnel_bytes_out={int(down)}" in line, line


def test_websocket_64mib_message(echo, start):
    """A 64 MiB message echoes intact and the proxy's peak RSS stays small."""
    proxy = start("--route", f"{HOST}={echo.address}")
    before = proxy.rss()
    payload = os.urandom(64 * MiB)
    with proxy.websocket(HOST) as ws:
        began = time.monotonic()
        ws.send(payload)
        back = ws.recv(timeout=60)
        took = time.monotonic() - began
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
    peak = proxy.peakRSS()
    print(f"\n64 MiB echo: {took:.2f} s; proxy RSS {before >> 20} MiB before, "
          f"peak {peak >> 20} MiB")
    assert peak - before < 32 * MiB, (before, peak)


def test_slow_websocket_client_keeps_proxy_memory_bounded(echo, start):
    """A client that stops reading pauses the upstream and the proxy's memory stays flat."""
    proxy = start("--route", f"{HOST}={echo.address}")
    before = proxy.rss()
    sock = proxy.raw()
    sock.sendall(
        f"GET /flood HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    head, _ = readHead(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    # Then it reads nothing more.
    waitFor(lambda: echo.flooded >= 4 * MiB, 10, "the flood to start")
    time.sleep(2)
    flooded = echo.flooded
    time.sleep(2)
    growth = proxy.rss() - before
    print(f"\nslow client: upstream sent {flooded >> 20} MiB then stopped; "
          f"proxy RSS grew {growth >> 20} MiB")
    assert echo.flooded - flooded <= 2 * MiB, "the upstream was not paused"
    assert echo.flooded < 64 * MiB, echo.flooded
    assert growth < 32 * MiB, growth
    sock.close()


def test_server_and_client_initiated_close(echo, start):
    """A close from the server reaches the client with its code and reason; a close from the client completes and ends the tunnel."""
    proxy = start("--route", f"{HOST}={echo.address}")
    with proxy.websocket(HOST) as ws:
        ws.send("close-me")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "server closes")

    with proxy.websocket(HOST) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        ws.close(1000, "client closes")
        assert ws.close_code == 1000
    waitFor(lambda: echo.closes[-1:] == [1000] and len(echo.closes) == 2, 5, "the server's close")
    waitFor(lambda: proxy.metric("revproxy_tunnels_open", host=HOST) == 0, 5, "the end")


def test_tunnel_idle_timeout(echo, start):
    """A tunnel with no byte either way for --tunnel-idle-timeout is closed; one in use is not."""
    proxy = start("--route", f"{HOST}={echo.address}", "--tunnel-idle-timeout", "1.5")
    with proxy.websocket(HOST) as busy, proxy.websocket(HOST) as idle:
        for _ in range(12):
            busy.send("tick")
            assert busy.recv(timeout=5) == "tick"
            time.sleep(0.25)
        with pytest.raises(ConnectionClosed):
            idle.recv(timeout=5)
        busy.send("still here")
        assert busy.recv(timeout=5) == "still here"


def test_route_changes_never_cut_tunnels(echo, start, etcd: EtcdMember):
    """Changing another host, then removing the tunnel's upstream from its own host, leaves the tunnel open (draining)."""
    other = EchoServer()
    try:
        etcdPut(etcd.url, f"/hosts/{HOST}/{echo.address}")
        etcdPut(etcd.url, f"/hosts/other.example.com/{other.address}")
        proxy = start("--etcd", etcd.url)
        waitFor(lambda: "route table loaded" in proxy.text(), 10, "the routes")
        ws = proxy.websocket(HOST).__enter__()
        ws.send("a")
        assert ws.recv(timeout=5) == "a"

        etcdDelete(etcd.url, f"/hosts/other.example.com/{other.address}")
        etcdPut(etcd.url, f"/hosts/new.example.com/{other.address}")
        waitFor(lambda: b"404" in _get(proxy, "other.example.com"), 5, "the change")
        ws.send("b")
        assert ws.recv(timeout=5) == "b"
        assert proxy.metric("revproxy_tunnels_draining", host=HOST) == 0

        etcdPut(etcd.url, f"/hosts/{HOST}/{other.address}")
        etcdDelete(etcd.url, f"/hosts/{HOST}/{echo.address}")
        waitFor(
            lambda: proxy.metric("revproxy_tunnels_draining", host=HOST) == 1,
            5,
            "the tunnel to drain",
        )
        ws.send("c")
        assert ws.recv(timeout=5) == "c"
        assert proxy.metric("revproxy_tunnels_open", host=HOST) == 1
        # New tunnels go to the new upstream.
        with proxy.websocket(HOST) as fresh:
            fresh.send("d")
            assert fresh.recv(timeout=5) == "d"
        ws.close()
        waitFor(lambda: proxy.metric("revproxy_tunnels_open", host=HOST) == 0, 5, "the end")
    finally:
        other.stop()


def _get(proxy: Proxy, host: str) -> bytes:
    sock = proxy.raw()
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head, _ = readHead(sock)
    sock.close()
    return head


def test_sigterm_closes_tunnels_after_drain_timeout(echo, start):
    """On SIGTERM a tunnel keeps working until --drain-timeout, then is closed, and the proxy exits 0."""
    proxy = start("--route", f"{HOST}={echo.address}", "--drain-timeout", "2")
    ws = proxy.websocket(HOST).__enter__()
    ws.send("before")
    assert ws.recv(timeout=5) == "before"
    signaled = time.monotonic()
    os.kill(proxy.pid, signal.SIGTERM)
    time.sleep(0.5)
    ws.send("during")
    assert ws.recv(timeout=5) == "during"
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    closedAfter = time.monotonic() - signaled
    assert 1.5 < closedAfter < 5, closedAfter
    waitFor(lambda: proxy.process.process.poll() is not None, 10, "the exit")
    assert proxy.process.process.returncode == 0, proxy.text()
    assert "1 tunnels closed" in proxy.text(), proxy.text()
    assert "Traceback" not in proxy.text(), proxy.text()


def test_raw_upgrade_with_pipelined_bytes_and_half_close(lines, start):
    """A non-WebSocket upgrade relays a line protocol, including bytes sent with the request, and passes a half-close on both ways."""
    proxy = start("--route", f"lines.example.com={lines.address}")
    sock = proxy.raw()
    sock.sendall(
        b"GET /line HTTP/1.1\r\nHost: lines.example.com\r\nConnection: upgrade\r\n"
        b"Upgrade: line\r\n\r\nfirst\n"
    )
    head, rest = readHead(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    fields = head.lower().split(b"\r\n")
    assert b"upgrade: line" in fields and b"connection: upgrade" in fields, head
    assert b"x-line: 1" in fields, head
    received = rest
    sock.sendall(b"second\n")
    while received.count(b"\n") < 2:
        received += sock.recv(65536)
    assert received == b"FIRST\nSECOND\n"
    sock.shutdown(2 - 1)  # SHUT_WR: the upstream sees the end, says BYE
    while not received.endswith(b"BYE\n"):
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    sock.settimeout(5)
    assert sock.recv(10) == b""  # and its half-close came through
    sock.close()
    [upgrade] = lines.heads
    assert b"\r\nConnection: upgrade\r\n" in upgrade and b"\r\nUpgrade: line\r\n" in upgrade


def test_h2c_never_reaches_the_upstream(lines, start):
    """Upgrade: h2c is stripped with HTTP2-Settings: the request goes on as plain HTTP/1.1."""
    proxy = start("--route", f"lines.example.com={lines.address}")
    sock = proxy.raw()
    sock.sendall(
        b"GET /plain HTTP/1.1\r\nHost: lines.example.com\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    head, body = readHead(sock)
    assert head.startswith(b"HTTP/1.1 200 "), head
    while len(body) < int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
        body += sock.recv(65536)
    seen = json.loads(body)["head"].lower()
    for name in ("upgrade", "http2-settings", "h2c", "connection: upgrade"):
        assert name not in seen, seen
    sock.close()


def test_refused_upgrade_is_a_normal_response(lines, start):
    """An upgrade answered without 101 is relayed as a response and both connections stay usable."""
    proxy = start("--route", f"lines.example.com={lines.address}")
    sock = proxy.raw()
    sock.sendall(
        b"GET /refuse HTTP/1.1\r\nHost: lines.example.com\r\nConnection: upgrade\r\n"
        b"Upgrade: websocket\r\n\r\n"
        b"GET /again HTTP/1.1\r\nHost: lines.example.com\r\n\r\n"
    )
    head, rest = readHead(sock)
    assert head.startswith(b"HTTP/1.1 426 "), head
    data = rest
    while b"/again" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data.startswith(b"no upgrade here"), data
    assert b"HTTP/1.1 200 " in data, data
    sock.close()
    assert len(lines.heads) == 2


def test_conformance_cases(echo, start):
    """Every case of the Autobahn-style conformance run has the same outcome through the proxy as against the echo server directly."""
    from tests.integration.wsconformance import compare, run

    proxy = start("--route", f"ws.example.com={echo.address}")
    figures = compare(
        lambda c: run(echo.port, "ws.example.com", c),
        lambda c: run(proxy.port, "ws.example.com", c),
    )
    print(f"\nconformance: {figures}")
    assert figures["differ"] == [], figures["differ"]
    assert figures["same"] == figures["cases"]
    assert figures["proxied"] == figures["direct"]
    assert figures["direct"] >= figures["cases"] - 1, figures["failedDirect"]  # type: ignore[operator]


def test_websocket_over_a_tls_listener(echo, tmp_path):
    """A wss:// client through an ssl: listener gets its echo and a clean close."""
    import re
    import socket
    import ssl

    from websockets.sync.client import connect

    from tests.integration.test_tls import selfSigned
    from tests.integration.upstreams import ProxyProcess

    ca, pem = selfSigned(tmp_path, HOST)
    (tmp_path / "server.pem").write_bytes(pem)
    proc = ProxyProcess(
        [
            "--no-access-log",
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={tmp_path / 'server.pem'}",
            "--route",
            f"{HOST}={echo.address}",
        ],
        tmp_path,
    )
    try:
        waitFor(lambda: "starting on" in proc.text(), 20, "the listener")
        port = int(re.search(r"starting on (\d+)", proc.text()).group(1))  # type: ignore[union-attr]
        context = ssl.create_default_context(cafile=str(ca))
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        with connect(
            f"wss://{HOST}/echo", sock=sock, ssl=context, server_hostname=HOST, max_size=None
        ) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            ws.send(b"x" * MiB)
            assert ws.recv(timeout=10) == b"x" * MiB
            ws.close()
            assert ws.close_code == 1000
    finally:
        proc.kill()
