"""
Integration tests of the etcd route sync (L{revproxy.etcd.sync.EtcdRouteSync}):
the proxy built by L{revproxy.tap.makeService} with C{--etcd}, in this
process, in front of real loopback upstreams, following a real etcd (see
C{etcd_fixture}): loading, live changes, etcd going away and coming back,
bursts, two proxies converging, bad keys, compaction, and a three-member
cluster losing the proxy's preferred member.

Blocking work (starting, stopping and killing etcd, health checks) runs in
the reactor's thread pool (L{deferToThread}) or in the synchronous fixtures,
never in the reactor thread; every wait has a deadline.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredSemaphore, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols import portforward

from revproxy.etcd.types import EtcdError, EtcdUnavailable
from tests.integration import test_proxy
from tests.integration.etcd_fixture import EtcdCluster, EtcdMember
from tests.integration.test_etcd_adapter import Connected
from tests.integration.test_proxy import (
    Cleanup,
    client,
    proxy,
    upstream,
    wait,
)
from tests.integration.upstreams import HTTPClient

R: Any = reactor

#: The clean-up fixture of the proxy's integration tests.
cleanup = test_proxy.cleanup

#: Small reconnection delays, so that the tests see recoveries quickly.
FAST = ["--etcd-backoff", "0.1", "--etcd-backoff-max", "1", "--etcd-timeout", "2"]

#: The longest a live change may take to reach requests.
LIVE = 1.0

#: Measured change-to-effect times of test_live_changes_apply_within_a_second.
TIMINGS: dict[str, float] = {}


# -- harness ------------------------------------------------------------------


async def writer(cleanup: Cleanup, urls: list[str]) -> Connected:
    """
    An etcd client of the test's own (not the proxy's), closed afterwards.
    """
    w = Connected(urls)
    cleanup.add(w.close)
    return w


async def etcdProxy(cleanup: Cleanup, urls: list[str], *args: str) -> tuple[int, Any]:
    """
    Start a proxy on C{urls} with fast reconnection; its port and service.
    """
    return await proxy(cleanup, "--etcd", ",".join(urls), *FAST, *args)


def syncOf(service: Any) -> Any:
    return service.getServiceNamed("etcd").getServiceNamed("etcd-sync")


def routesOf(service: Any) -> dict[str, list[tuple[str, int]]] | None:
    """
    The resolver's table as host -> [(upstream, weight)] in table order.
    """
    table = service.getServiceNamed("route-resolver").table
    if table is None:
        return None
    return {
        host: [(str(u), u.weight) for u in route.upstreams]
        for host, route in table.routes.items()
    }


async def ask(c: HTTPClient, host: bytes) -> tuple[int, int | None]:
    """
    One GET for C{host}: the status and, if an upstream answered, its port.
    """
    r = await c.get(b"/", host)
    return r.code, (r.json()["port"] if r.code == 200 else None)


async def until(
    c: HTTPClient,
    host: bytes,
    accept: Callable[[tuple[int, int | None]], bool],
    timeout: float,
    what: str,
) -> float:
    """
    Send requests for C{host} until one's answer is accepted, for at most
    C{timeout} seconds; the seconds it took.
    """
    start = time.monotonic()
    seen: tuple[int, int | None] | None = None
    while True:
        seen = await ask(c, host)
        if accept(seen):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; last answer {seen}"
            )
        await deferLater(R, 0.005, lambda: None)


async def offThread(f: Callable[..., object], *args: object) -> None:
    """
    Run blocking C{f} (etcd process control) in the thread pool.
    """
    await deferToThread(f, *args)


async def retrying(
    f: Callable[..., Awaitable[Any]], *args: object, timeout: float = 10.0
) -> Any:
    """
    Call C{f} until etcd accepts it (a cluster may be electing a leader).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await f(*args)
        except (EtcdError, EtcdUnavailable):
            if time.monotonic() > deadline:
                raise
        await deferLater(R, 0.1, lambda: None)


async def compact(w: Connected, url: str, revision: int) -> None:
    """
    Compact etcd's history up to C{revision}, physically.
    """
    response = await w.http.post(
        url + "/v3/kv/compaction",
        json={"revision": str(revision), "physical": True},
        reactor=R,
        timeout=10,
    )
    assert response.code == 200, await response.text()


async def etcdRevision(w: Connected) -> int:
    return int((await w.client.getPrefix(b"/hosts/")).revision)


async def converged(
    service: Any,
    w: Connected,
    expected: dict[str, list[tuple[str, int]]],
    timeout: float,
    what: str,
) -> None:
    """
    Wait until the proxy's sync is at etcd's revision and its table is
    C{expected}.
    """
    revision = await etcdRevision(w)
    sync = syncOf(service)
    try:
        await wait(
            lambda: sync.revision >= revision and routesOf(service) == expected,
            timeout,
            what,
        )
    except AssertionError as e:
        raise AssertionError(
            f"{e}: sync at {sync.revision}, etcd at {revision}, "
            f"table {routesOf(service)}, expected {expected}"
        ) from None


class _RelayServer(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        self.factory.open.discard(self)
        super().connectionLost(reason)


class Relay:
    """
    A loopback TCP relay to an etcd member, which a test cuts (no listener,
    every relayed connection aborted) and restores on the same port: the
    proxy loses its watch while etcd itself keeps running.
    """

    def __init__(self, targetPort: int) -> None:
        self.factory = portforward.ProxyFactory("127.0.0.1", targetPort)
        self.factory.protocol = _RelayServer
        self.factory.noisy = False
        self.factory.open = set()
        self.port = 0
        self._listening: IListeningPort | None = None

    async def start(self) -> Relay:
        endpoint = TCP4ServerEndpoint(R, self.port, interface="127.0.0.1")
        self._listening = await endpoint.listen(self.factory)
        self.port = self._listening.getHost().port
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def cut(self) -> None:
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
        for server in list(self.factory.open):
            server.transport.abortConnection()
        await wait(lambda: not self.factory.open, 5, "relayed connections to close")


async def relay(cleanup: Cleanup, targetPort: int) -> Relay:
    r = await Relay(targetPort).start()
    cleanup.add(r.cut)
    return r


def key(host: str, address: str) -> bytes:
    return f"/hosts/{host}/{address}".encode()


def inKeyOrder(*upstreams: tuple[str, int]) -> list[tuple[str, int]]:
    """
    The upstreams of one host in the order of their keys, which is the
    table's order.
    """
    return sorted(upstreams)


# -- 1. loading ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_routes_in_etcd_before_start_are_loaded(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """Routes in etcd before start-up load: each host reaches its upstreams, an unknown host gets 404."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    c3 = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    await w.client.put(key("blog.example.com", a.address), b"")
    await w.client.put(key("shop.example.com", b.address), b"anything")
    await w.client.put(key("shop.example.com", c3.address), b'{"weight": 3}')
    await w.client.put(key("*.apps.test", c3.address), b"")
    await w.client.put(b"/elsewhere/x.test/127.0.0.1:1", b"")
    written = await etcdRevision(w)

    port, service = await etcdProxy(cleanup, [etcd.url])
    c = await client(cleanup, port)
    await until(c, b"blog.example.com", lambda s: s[0] != 503, 10, "routes to load")
    for _ in range(3):
        assert await ask(c, b"blog.example.com") == (200, a.port)
        assert await ask(c, b"x.apps.test") == (200, c3.port)
    shop = {(await ask(c, b"shop.example.com"))[1] for _ in range(8)}
    assert shop == {b.port, c3.port}
    assert (await ask(c, b"unknown.example.com"))[0] == 404
    assert (await ask(c, b"x.test"))[0] == 404
    assert routesOf(service) == {
        "blog.example.com": [(a.address, 1)],
        "shop.example.com": inKeyOrder((b.address, 1), (c3.address, 3)),
        "*.apps.test": [(c3.address, 1)],
    }
    # Everything written before the start is applied.  (Not "equal to
    # etcd's revision": the node's own record, issue 14, is a write too.)
    assert syncOf(service).revision >= written


# -- 2. live changes ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_live_changes_apply_within_a_second(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """Adding a host, adding and deleting an upstream and deleting the host each reach requests within a second."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    port, service = await etcdProxy(cleanup, [etcd.url])
    c = await client(cleanup, port)
    host = b"live.example.com"
    await until(c, host, lambda s: s[0] == 404, 10, "an empty table to load")
    await wait(lambda: syncOf(service).live, 5, "the watch to start")

    await w.client.put(key("live.example.com", a.address), b"")
    TIMINGS["add host"] = await until(
        c, host, lambda s: s == (200, a.port), 5, "the new host"
    )

    await w.client.put(key("live.example.com", b.address), b"")
    TIMINGS["add upstream"] = await until(
        c, host, lambda s: s == (200, b.port), 5, "the second upstream"
    )
    ports = [(await ask(c, host))[1] for _ in range(10)]
    assert set(ports) == {a.port, b.port}, ports
    assert all(p != q for p, q in itertools.pairwise(ports)), ports

    await w.client.delete(key("live.example.com", a.address))
    run: list[int | None] = []

    def onlyB(seen: tuple[int, int | None]) -> bool:
        # Round robin alternates: two answers from b in a row mean a is gone.
        run.append(seen[1])
        return run[-2:] == [b.port, b.port]

    TIMINGS["delete upstream"] = await until(c, host, onlyB, 5, "a to be dropped")
    assert [await ask(c, host) for _ in range(6)] == [(200, b.port)] * 6

    await w.client.delete(key("live.example.com", b.address))
    TIMINGS["delete host"] = await until(
        c, host, lambda s: s[0] == 404, 5, "the host to go"
    )
    print("change-to-effect:", {k: f"{v * 1000:.1f} ms" for k, v in TIMINGS.items()})
    assert all(t < LIVE for t in TIMINGS.values()), TIMINGS
    assert routesOf(service) == {}


# -- 3. etcd going away -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_routes_keep_serving_while_etcd_is_down(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """While etcd is down the last routes keep serving; once it is back, a new route arrives."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    await w.client.put(key("a.test", a.address), b"")
    port, service = await etcdProxy(cleanup, [etcd.url])
    sync = syncOf(service)
    c = await client(cleanup, port)
    await until(c, b"a.test", lambda s: s == (200, a.port), 10, "routes to load")
    await wait(lambda: sync.live, 5, "the watch to start")

    await offThread(etcd.stop)
    await wait(lambda: sync.reconnects >= 1, 5, "the sync to see the watch end")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert await ask(c, b"a.test") == (200, a.port)
        await deferLater(R, 0.05, lambda: None)
    assert (await ask(c, b"b.test"))[0] == 404

    await offThread(etcd.start)
    await w.close()
    await w.client.put(key("b.test", b.address), b"")
    await until(
        c, b"b.test", lambda s: s == (200, b.port), 15, "the route added after restart"
    )
    assert await ask(c, b"a.test") == (200, a.port)
    await converged(
        service,
        w,
        {"a.test": [(a.address, 1)], "b.test": [(b.address, 1)]},
        5,
        "the table after restart",
    )


@pytest_twisted.ensureDeferred
async def test_etcd_unreachable_at_start_then_routes_load(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """A proxy started with etcd down answers 503 for every host, and routes once etcd comes up."""
    a = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    await w.client.put(key("a.test", a.address), b"")
    await w.close()
    await offThread(etcd.stop)

    port, service = await etcdProxy(cleanup, [etcd.url])
    c = await client(cleanup, port)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for host in (b"a.test", b"unknown.test"):
            r = await c.get(b"/", host)
            assert r.code == 503, r
            assert b"no routes" in r.body
        await deferLater(R, 0.05, lambda: None)
    assert routesOf(service) is None

    await offThread(etcd.start)
    await until(c, b"a.test", lambda s: s == (200, a.port), 15, "routes to load")
    assert (await ask(c, b"unknown.test"))[0] == 404
    await converged(service, w, {"a.test": [(a.address, 1)]}, 5, "the table")


# -- 4. bursts and convergence ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_burst_of_300_puts_arrives_complete(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """300 puts of 200-byte values made in a burst all reach the table, at etcd's revision."""
    up = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    port, service = await etcdProxy(cleanup, [etcd.url])
    sync = syncOf(service)
    await wait(lambda: sync.live, 10, "the watch to start")

    def value(i: int) -> bytes:
        head = {"weight": i % 7 + 1, "pad": ""}
        size = len(json.dumps(head).encode())
        head["pad"] = "p" * (200 - size)
        data = json.dumps(head).encode()
        assert len(data) == 200
        return data

    puts = {key(f"h{i:03d}.burst.test", up.address): value(i) for i in range(300)}
    sem = DeferredSemaphore(32)
    revisions = await gatherResults(
        [sem.run(w.client.put, k, v) for k, v in puts.items()], consumeErrors=True
    )
    expected = {f"h{i:03d}.burst.test": [(up.address, i % 7 + 1)] for i in range(300)}
    await converged(service, w, expected, 15, "all 300 hosts")
    # At the revision of the last put or later: the proxy's own node record
    # (the revision it applied) is an etcd write too, which may come after.
    assert sync.revision >= max(revisions)
    assert sync.revision <= await etcdRevision(w)
    assert sync.skipped == set()
    c = await client(cleanup, port)
    for i in (0, 150, 299):
        assert await ask(c, f"h{i:03d}.burst.test".encode()) == (200, up.port)


@pytest_twisted.ensureDeferred
async def test_two_proxies_on_one_etcd_converge(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """Two proxies following one etcd through puts and deletes end with the same table, in the same order."""
    w = await writer(cleanup, [etcd.url])
    _, first = await etcdProxy(cleanup, [etcd.url])
    await wait(lambda: syncOf(first).live, 10, "the first proxy's watch")
    u = [f"127.0.0.1:{5000 + i}" for i in range(6)]
    await w.client.put(key("y.test", u[3]), b"")
    await w.client.put(key("y.test", u[1]), b'{"weight": 2}')
    await w.client.put(key("x.test", u[5]), b"")
    await w.client.put(key("y.test", u[2]), b"")
    await w.client.put(key("z.test", u[0]), b"")
    _, second = await etcdProxy(cleanup, [etcd.url])
    await w.client.delete(key("y.test", u[1]))
    await w.client.put(key("x.test", u[4]), b'{"weight": 5}')
    await w.client.put(key("y.test", u[0]), b"")
    await w.client.delete(key("z.test", u[0]))
    await w.client.put(key("*.w.test", u[1]), b"")
    await w.client.put(key("y.test", u[3]), b'{"weight": 4}')
    await w.client.deletePrefix(b"/hosts/x.test/")
    await w.client.put(key("x.test", u[2]), b"")
    await w.client.put(key("x.test", u[1]), b"")

    expected = {
        "y.test": [(u[0], 1), (u[2], 1), (u[3], 4)],
        "x.test": [(u[1], 1), (u[2], 1)],
        "*.w.test": [(u[1], 1)],
    }
    await converged(first, w, expected, 10, "the first proxy")
    await converged(second, w, expected, 10, "the second proxy")
    assert routesOf(first) == routesOf(second) == expected


# -- 5. bad keys --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_keys_are_skipped_and_fixing_one_takes_effect(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """Keys that do not parse are skipped, the good ones load, changes keep coming, and a fixed key takes effect."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    badJson = key("weighted.test", b.address)
    await w.client.put(b"/hosts/nohost", b"")
    await w.client.put(b"/hosts/h.test/not-an-address", b"")
    await w.client.put(badJson, b'{"weight": 1,')
    await w.client.put(key("good.test", a.address), b"")

    port, service = await etcdProxy(cleanup, [etcd.url])
    sync = syncOf(service)
    c = await client(cleanup, port)
    await until(c, b"good.test", lambda s: s == (200, a.port), 10, "the good route")
    assert (await ask(c, b"weighted.test"))[0] == 404
    assert (await ask(c, b"h.test"))[0] == 404
    assert sync.skipped == {
        "/hosts/nohost",
        "/hosts/h.test/not-an-address",
        badJson.decode(),
    }
    await wait(lambda: sync.live, 5, "the watch to start")

    await w.client.put(key("late-bad.test", a.address), b'{"weight": 0}')
    await w.client.put(key("late.test", b.address), b"")
    await until(
        c, b"late.test", lambda s: s == (200, b.port), 5, "a change after bad keys"
    )
    assert key("late-bad.test", a.address).decode() in sync.skipped
    assert (await ask(c, b"late-bad.test"))[0] == 404

    await w.client.put(badJson, b'{"weight": 2}')
    await until(c, b"weighted.test", lambda s: s == (200, b.port), 5, "the fixed key")
    await w.client.delete(b"/hosts/h.test/not-an-address")
    await converged(
        service,
        w,
        {
            "good.test": [(a.address, 1)],
            "late.test": [(b.address, 1)],
            "weighted.test": [(b.address, 2)],
        },
        5,
        "the table after the fixes",
    )
    assert sync.skipped == {"/hosts/nohost", key("late-bad.test", a.address).decode()}
    assert sync.live


# -- 6. compaction ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_relists_after_history_was_compacted_while_away(
    etcd: EtcdMember, cleanup: Cleanup
) -> None:
    """Changes and a compaction made while the proxy's watch is cut reach it by a re-list when it reconnects."""
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    await w.client.put(key("a.test", a.address), b"")
    await w.client.put(key("b.test", a.address), b"")
    link = await relay(cleanup, etcd.clientPort)
    port, service = await etcdProxy(cleanup, [link.url])
    sync = syncOf(service)
    c = await client(cleanup, port)
    await until(c, b"a.test", lambda s: s == (200, a.port), 10, "routes to load")
    await wait(lambda: sync.live, 5, "the watch to start")
    before = sync.revision

    await link.cut()
    await wait(lambda: sync.reconnects >= 1, 5, "the sync to see the watch end")
    await w.client.delete(key("a.test", a.address))
    await w.client.put(key("b.test", b.address), b'{"weight": 2}')
    await w.client.put(key("c.test", b.address), b"")
    for i in range(5):
        await w.client.put(key("churn.test", f"127.0.0.1:{6000 + i}"), b"")
    await w.client.deletePrefix(b"/hosts/churn.test/")
    revision = await etcdRevision(w)
    await compact(w, etcd.url, revision)
    assert revision > before + 1
    assert sync.resyncs == 0
    assert (await ask(c, b"a.test")) == (200, a.port)

    await link.start()
    await converged(
        service,
        w,
        {
            "b.test": inKeyOrder((a.address, 1), (b.address, 2)),
            "c.test": [(b.address, 1)],
        },
        10,
        "the re-listed table",
    )
    assert sync.resyncs >= 1
    assert (await ask(c, b"a.test"))[0] == 404
    assert await ask(c, b"c.test") == (200, b.port)
    await wait(lambda: sync.live, 5, "the watch to resume")
    await w.client.put(key("d.test", a.address), b"")
    await until(
        c, b"d.test", lambda s: s == (200, a.port), 5, "a change after the re-list"
    )


# -- 7. a cluster losing the preferred member ----------------------------------


@pytest_twisted.ensureDeferred
async def test_cluster_preferred_member_dies_while_routes_change_and_compact(
    etcd_cluster: EtcdCluster, cleanup: Cleanup
) -> None:
    """With its preferred member killed, the proxy follows changes on the other members and re-lists after a compaction it missed."""
    m0, m1, m2 = etcd_cluster.members
    a = await upstream(cleanup)
    b = await upstream(cleanup)
    w = await writer(cleanup, [m1.url, m2.url])
    await retrying(w.client.put, key("a.test", a.address), b"")
    await retrying(w.client.put, key("gone.test", a.address), b"")
    # The proxy reaches m1 and m2 through relays, so that the test can also
    # take them away from it while they keep serving each other.
    r1 = await relay(cleanup, m1.clientPort)
    r2 = await relay(cleanup, m2.clientPort)
    port, service = await etcdProxy(
        cleanup, [m0.url, r1.url, r2.url], "--etcd-probe-interval", "1"
    )
    sync = syncOf(service)
    c = await client(cleanup, port)
    await until(c, b"a.test", lambda s: s == (200, a.port), 10, "routes to load")
    # Make sure the proxy watches through m0, its preferred member: with m1
    # and m2 out of its reach, a change that arrives came through m0.  (It
    # may have moved on already: a watch request that fails, even once,
    # sends the client to the next endpoint.)
    await r1.cut()
    await r2.cut()
    await retrying(w.client.put, key("m0.test", a.address), b"")
    await until(c, b"m0.test", lambda s: s == (200, a.port), 10, "a change via m0")
    await r1.start()
    await r2.start()

    # Phase 1: m0 dies; the proxy moves to the next member and follows.
    await offThread(m0.kill)
    await offThread(m1.wait_healthy, 15.0)
    await retrying(w.client.put, key("b.test", b.address), b"")
    await until(c, b"b.test", lambda s: s == (200, b.port), 10, "a change via m1")
    assert sync.reconnects >= 1
    assert (await ask(c, b"a.test")) == (200, a.port)

    # Phase 2: the proxy loses m1 and m2 too; meanwhile routes change and
    # history is compacted past its revision on the surviving quorum.
    await r1.cut()
    await r2.cut()
    missed = sync.revision
    await retrying(w.client.delete, key("gone.test", a.address))
    await retrying(w.client.put, key("a.test", b.address), b'{"weight": 3}')
    await retrying(w.client.put, key("c.test", a.address), b"")
    revision = await etcdRevision(w)
    assert revision > missed + 1
    await retrying(compact, w, m1.url, revision)
    assert sync.resyncs == 0
    assert (await ask(c, b"gone.test")) == (200, a.port)

    await r1.start()
    await r2.start()
    await converged(
        service,
        w,
        {
            "a.test": inKeyOrder((a.address, 1), (b.address, 3)),
            "b.test": [(b.address, 1)],
            "c.test": [(a.address, 1)],
            "m0.test": [(a.address, 1)],
        },
        15,
        "the table after the cluster's changes",
    )
    assert sync.resyncs >= 1
    assert (await ask(c, b"gone.test"))[0] == 404
    assert await ask(c, b"c.test") == (200, a.port)
