"""
The attack battery: raw requests over real sockets to a real
C{twistd -n revproxy} routed to a recording upstream (see
L{tests.integration.battery} and the case table in
L{tests.integration.battery_framing} and
L{tests.integration.battery_semantics}).

Each case asserts the exact status the client gets (within 5 s: a proxy
that hangs fails), that the proxy closed the connection after a framing
error, and what the upstream saw: nothing for a refused request; for an
accepted one exactly the requests sent, with one Host, one framing, no
smuggled request, no underscore header, no forwarding header a client
made up.

Six proxies serve the battery, each started on first use and killed at
the end of the module: C{default} (only C{--route}: every default limit),
C{limits} (C{--max-body-size 1024 --max-headers 20 --header-timeout 1
--body-timeout 1}), C{trusted} (C{--trusted-proxies 127.0.0.1/32}),
C{underscore} (C{--allow-underscore-headers}), C{maxconn}
(C{--max-connections 4}) and C{forwarded} (C{--forwarded}).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import battery_framing, battery_semantics
from tests.integration.battery import (
    Exchange,
    ProxyUnderTest,
    RecordingUpstream,
    exchange,
    startProxy,
)
from tests.integration.battery_checks import HOST, Case, chunks, req

CASES = battery_framing.CASES + battery_semantics.CASES

SETTLE = 0.2
"""Seconds to let whatever the proxy forwards reach the upstream before
the upstream's recording is judged."""

PROXY_ARGS = {
    "default": [],
    "limits": [
        "--max-body-size",
        "1024",
        "--max-headers",
        "20",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
    ],
    "trusted": ["--trusted-proxies", "127.0.0.1/32"],
    "underscore": ["--allow-underscore-headers"],
    "maxconn": ["--max-connections", "4"],
    "forwarded": ["--forwarded"],
}


class Battery:
    """
    The recording upstream and the proxies in front of it, each started
    on first use and killed at the end of the module.
    """

    def __init__(self, outputDir: Path) -> None:
        self.outputDir = outputDir
        self.upstream = RecordingUpstream()
        self._proxies: dict[str, ProxyUnderTest] = {}

    def proxy(self, name: str) -> ProxyUnderTest:
        if name not in self._proxies:
            args = ["--route", f"{HOST.decode()}={self.upstream.address}", *PROXY_ARGS[name]]
            self._proxies[name] = startProxy(args, self.outputDir / name)
        proxy = self._proxies[name]
        if proxy.error is not None:
            pytest.fail(proxy.error, pytrace=False)
        return proxy

    def close(self) -> None:
        for proxy in self._proxies.values():
            proxy.process.kill()
        self.upstream.stop()


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Battery]:
    b = Battery(tmp_path_factory.mktemp("battery"))
    try:
        yield b
    finally:
        b.close()


def assertStatus(case: Case, got: Exchange) -> None:
    """
    The client got exactly one status, the case's (no 100 before it).
    """
    wanted = case.status if isinstance(case.status, frozenset) else frozenset({case.status})
    expected = [min(wanted)] * case.answers if len(wanted) == 1 else None
    if expected is not None:
        assert got.statuses == expected, f"expected {expected}, got {got.describe()}"
    else:
        assert len(got.statuses) == 1 and got.statuses[0] in wanted, (
            f"expected one of {sorted(wanted)}, got {got.describe()}"
        )


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}:{c.id}" for c in CASES])
def test_case(case: Case, battery: Battery) -> None:
    """The proxy answers the raw request with the case's status, closes when it must, and forwards only what it should."""
    proxy = battery.proxy(case.proxy)
    battery.upstream.reset()
    got = exchange(proxy.port, case.data, answers=case.answers)
    time.sleep(SETTLE)
    assertStatus(case, got)
    if case.close:
        assert got.closed, f"the connection stayed open after {got.statuses}"
    case.upstream(battery.upstream)


def test_case_count() -> None:
    """The battery has at least 60 raw cases, each with a unique id."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 60
    assert len(set(ids)) == len(ids)


def test_expect_continue_routed(battery: Battery) -> None:
    """A routed request with Expect: 100-continue gets a 100, then its final answer once the body is sent."""
    proxy = battery.proxy("default")
    battery.upstream.reset()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(req(b"POST", b"/", b"Content-Length: 5", b"Expect: 100-continue"))
        first = _readUntil(s, b"\r\n\r\n", 5.0)
        assert first.startswith(b"HTTP/1.1 100 "), f"first answer {first[:200]!r}"
        s.sendall(b"hello")
        rest = first[first.index(b"\r\n\r\n") + 4 :]
        rest += _readUntil(s, b"upstream saw", 5.0, rest)
    assert b"HTTP/1.1 200 " in rest, rest[:300]
    seen = battery.upstream.requests()
    assert [r.body for r in seen] == [b"hello"]


def _readUntil(s: socket.socket, marker: bytes, timeout: float, have: bytes = b"") -> bytes:
    """
    Read from C{s} until C{marker} appears (in C{have} plus what was read),
    the peer closes or C{timeout} passes; return what was read.
    """
    got = b""
    end = time.monotonic() + timeout
    while marker not in have + got and time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            data = s.recv(65536)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        got += data
    return got


def test_slowloris_header_timeout(battery: Battery) -> None:
    """A client trickling its head one byte at a time gets 408 and is closed within --header-timeout + 1 s, while a normal client is served meanwhile."""
    proxy = battery.proxy("limits")
    battery.upstream.reset()
    normal: list[tuple[list[int], float]] = []
    stop = threading.Event()

    def serveNormally() -> None:
        while not stop.is_set():
            started = time.monotonic()
            got = exchange(proxy.port, req(b"GET", b"/normal", b"Connection: close"), deadline=2.0)
            normal.append((got.statuses, time.monotonic() - started))
            stop.wait(0.1)

    worker = threading.Thread(target=serveNormally, daemon=True)
    worker.start()
    try:
        head = req(b"GET", b"/slow", b"X-Slow: " + b"s" * 40)
        slow = exchange(proxy.port, [bytes([b]) for b in head], deadline=5.0, pause=0.1)
    finally:
        stop.set()
        worker.join(5)
    assert slow.statuses == [408], slow.describe()
    assert slow.closed and slow.closedAfter is not None and slow.closedAfter <= 2.0, slow.describe()
    assert len(normal) >= 3, normal
    assert all(statuses == [200] and took < 1.0 for statuses, took in normal), normal
    assert b"/slow" not in battery.upstream.raw()


def test_keepalive_idle_is_not_a_slow_head(battery: Battery) -> None:
    """A keep-alive client idle between requests for longer than --header-timeout is still served: the header deadline counts from a request's first byte."""
    proxy = battery.proxy("limits")
    battery.upstream.reset()
    got = exchange(
        proxy.port, [req(b"GET", b"/first"), req(b"GET", b"/second")], pause=1.5, answers=2
    )
    assert got.statuses == [200, 200], got.describe()
    assert [r.target for r in battery.upstream.requests()] == [b"/first", b"/second"]


def test_body_timeout(battery: Battery) -> None:
    """A body that stops arriving for --body-timeout gets 408 and the upstream never gets a complete request."""
    proxy = battery.proxy("limits")
    battery.upstream.reset()
    got = exchange(
        proxy.port, req(b"POST", b"/", b"Content-Length: 10", body=b"12345"), deadline=4.0
    )
    time.sleep(SETTLE)
    assert got.statuses == [408], got.describe()
    assert got.closed and got.closedAfter is not None and got.closedAfter <= 2.5, got.describe()
    assert battery.upstream.requests() == []


def test_chunked_body_streams(battery: Battery) -> None:
    """A chunked body sent in pieces, 0.3 s apart, reaches the upstream whole, in one request with one framing."""
    proxy = battery.proxy("default")
    battery.upstream.reset()
    body = chunks(b"a" * 100, b"b" * 100, b"c" * 100)
    head = req(b"POST", b"/stream", b"Transfer-Encoding: chunked")
    got = exchange(proxy.port, [head, body[:50], body[50:200], body[200:]], pause=0.3)
    assert got.statuses == [200], got.describe()
    seen = battery.upstream.requests()
    assert [s.body for s in seen] == [b"a" * 100 + b"b" * 100 + b"c" * 100]


def test_absolute_form_never_dials_the_target(battery: Battery) -> None:
    """An absolute-form target naming the upstream's own address, with a Host that has no route, is refused and no byte reaches that address."""
    proxy = battery.proxy("default")
    battery.upstream.reset()
    address = battery.upstream.address.encode()
    target = b"http://" + address + b"/dial"
    mismatched = exchange(proxy.port, req(b"GET", target, host=b"nowhere.test"))
    matching = exchange(proxy.port, req(b"GET", target, host=address))
    time.sleep(SETTLE)
    assert mismatched.statuses == [400], mismatched.describe()
    assert matching.statuses == [404], matching.describe()
    assert battery.upstream.raw() == b""


def test_pipelined_valid_then_malformed(battery: Battery) -> None:
    """A valid request followed on the same connection by a malformed one gets 200 then 400 and a close; the upstream sees only the first."""
    proxy = battery.proxy("default")
    battery.upstream.reset()
    bad = req(
        b"POST", b"/bad", b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"
    )
    got = exchange(proxy.port, req(b"GET", b"/good") + bad + req(b"GET", b"/smuggled"), answers=2)
    time.sleep(SETTLE)
    assert got.statuses == [200, 400], got.describe()
    assert got.closed, got.describe()
    assert [r.target for r in battery.upstream.requests()] == [b"/good"]


def test_max_connections(battery: Battery) -> None:
    """Past --max-connections a new connection is not served; once one closes, a new one is."""
    proxy = battery.proxy("maxconn")
    held = []
    try:
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            held.append(s)
            s.sendall(req(b"GET", b"/held%d" % i))
            assert b"HTTP/1.1 200 " in _readUntil(s, b"upstream saw", 5.0)
        extra = exchange(proxy.port, req(b"GET", b"/extra"), deadline=2.0)
        assert 200 not in extra.statuses, extra.describe()
        held.pop().close()
        time.sleep(0.5)
        again = exchange(proxy.port, req(b"GET", b"/again"), deadline=3.0)
        assert again.statuses == [200], again.describe()
    finally:
        for s in held:
            s.close()


def test_request_id_round_trip(battery: Battery) -> None:
    """The X-Request-Id the upstream gets is returned to the client, and two requests get two ids."""
    proxy = battery.proxy("default")
    battery.upstream.reset()
    got = exchange(proxy.port, req(b"GET", b"/id1") + req(b"GET", b"/id2"), answers=2)
    assert got.statuses == [200, 200], got.describe()
    upstreamIds = [r.header(b"x-request-id") for r in battery.upstream.requests()]
    clientIds = [a.header(b"x-request-id") for a in got.answers]
    assert clientIds == upstreamIds, (clientIds, upstreamIds)
    assert all(len(ids) == 1 and ids[0] for ids in clientIds), clientIds
    assert clientIds[0] != clientIds[1], clientIds
