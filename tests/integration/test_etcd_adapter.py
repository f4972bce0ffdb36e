"""
L{revproxy.etcd.client.EtcdClient} against a real etcd (see C{etcd_fixture}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.internet.tcp import Client as TCPClient
from twisted.web.client import Agent, HTTPConnectionPool

from revproxy.etcd.client import EtcdClient
from revproxy.etcd.types import (
    Delete,
    EndReason,
    EventType,
    ModRevisionIs,
    Put,
    WatchEvent,
    WatchEvents,
)
from tests.integration.etcd_fixture import EtcdMember

R: Any = reactor


class Connected:
    """
    An L{EtcdClient} on the global reactor with its own connection pool.
    """

    def __init__(self, urls: list[str]) -> None:
        self.pool = HTTPConnectionPool(R, persistent=True)
        self.http = HTTPClient(Agent(R, pool=self.pool))
        self.client = EtcdClient(R, urls, self.http)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


@pytest.fixture
def connected(etcd: EtcdMember) -> Connected:
    return Connected([etcd.url])


def connections_to(port: int) -> list[TCPClient]:
    """
    The reactor's open TCP client connections to C{port}.
    """
    return [
        r
        for r in R.getReaders() + R.getWriters()
        if isinstance(r, TCPClient) and r.getPeer().port == port
    ]


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        await task.deferLater(R, 0.02)
        waited += 0.02


@pytest_twisted.ensureDeferred
async def test_discovers_v3(etcd: EtcdMember, connected: Connected) -> None:
    """
    On etcd 3.5 the client finds the gateway under /v3/ and reads its status.
    """
    try:
        status = await connected.client.status()
        assert connected.client.apiPrefix(etcd.url) == "/v3/"
        assert status.version.startswith("3.")
        assert status.revision >= 1
    finally:
        await connected.close()


@pytest_twisted.ensureDeferred
async def test_put_get_delete(connected: Connected) -> None:
    """
    Keys put under a prefix are read back with their revisions and deleted.
    """
    c = connected.client
    try:
        r1 = await c.put(b"/hosts/a.example/u1", b"http://10.0.0.1:80")
        r2 = await c.put(b"/hosts/a.example/u2", b"")
        await c.put(b"/hostsX", b"outside the prefix")
        snap = await c.getPrefix(b"/hosts/")
        assert snap.revision >= r2 > r1
        assert [tuple(e) for e in snap.entries] == [
            (b"/hosts/a.example/u1", b"http://10.0.0.1:80", r1),
            (b"/hosts/a.example/u2", b"", r2),
        ]
        deleted = await c.delete(b"/hosts/a.example/u1")
        assert deleted.deleted == 1
        gone = await c.deletePrefix(b"/hosts/")
        assert gone.deleted == 1
        assert (await c.getPrefix(b"/hosts/")).entries == []
        assert [e.key for e in (await c.getPrefix(b"/hostsX")).entries] == [b"/hostsX"]
    finally:
        await connected.close()


@pytest_twisted.ensureDeferred
async def test_txn_atomic(connected: Connected) -> None:
    """
    A transaction applies several keys at one revision, only if its
    comparisons hold.
    """
    c = connected.client
    try:
        ops = [Put(b"/hosts/h%d/u" % i, b"v%d" % i) for i in range(50)]
        ok = await c.txn([ModRevisionIs(b"/hosts/h0/u", 0)], ops)
        assert ok.succeeded
        snap = await c.getPrefix(b"/hosts/")
        assert len(snap.entries) == 50
        assert {e.modRevision for e in snap.entries} == {ok.revision}
        again = await c.txn(
            [ModRevisionIs(b"/hosts/h0/u", 0)],
            [Put(b"/hosts/h0/u", b"new")],
            [Delete(b"/hosts/h1/u")],
        )
        assert not again.succeeded
        snap = await c.getPrefix(b"/hosts/")
        assert len(snap.entries) == 49
        assert (b"/hosts/h0/u", b"v0") in [(e.key, e.value) for e in snap.entries]
    finally:
        await connected.close()


@pytest_twisted.ensureDeferred
async def test_watch_put_delete_in_order(
    etcd: EtcdMember, connected: Connected
) -> None:
    """
    A watch receives PUT and DELETE events in order, with their revisions,
    and its cancel closes the stream and leaves no timer behind.
    """
    c = connected.client
    calls_before = set(R.getDelayedCalls())
    batches: list[WatchEvents] = []
    try:
        start = (await c.getPrefix(b"/hosts/")).revision + 1
        watch = c.watch(b"/hosts/", start, batches.append)
        r1 = await c.put(b"/hosts/a/1", b"one")
        r2 = await c.put(b"/hosts/other", b"x")
        r3 = await c.delete(b"/hosts/a/1")
        await c.put(b"/elsewhere", b"not watched")
        await wait_for(lambda: sum(len(b.events) for b in batches) >= 3)
        events = [e for b in batches for e in b.events]
        assert events == [
            WatchEvent(EventType.PUT, b"/hosts/a/1", b"one", r1),
            WatchEvent(EventType.PUT, b"/hosts/other", b"x", r2),
            WatchEvent(EventType.DELETE, b"/hosts/a/1", b"", r3.revision),
        ]
        assert watch.nextRevision == r3.revision + 1
        assert connections_to(etcd.clientPort)
        watch.cancel()
        ended = await watch.ended
        assert ended.reason is EndReason.CANCELLED
        assert ended.nextRevision == r3.revision + 1
    finally:
        await connected.close()
    await wait_for(lambda: not connections_to(etcd.clientPort))
    assert set(R.getDelayedCalls()) <= calls_before


@pytest_twisted.ensureDeferred
async def test_watch_burst_complete(connected: Connected) -> None:
    """
    300 puts of 200-byte values all arrive through a live watch and through a
    watch catching up from the first of them (one large, split message).
    """
    c = connected.client
    try:
        start = (await c.getPrefix(b"/burst/")).revision + 1
        live: list[WatchEvent] = []
        live_watch = c.watch(b"/burst/", start, lambda b: live.extend(b.events))
        sem = defer.DeferredSemaphore(16)
        expected = {b"/burst/%04d" % i: bytes([65 + i % 26]) * 200 for i in range(300)}
        await defer.gatherResults(
            [sem.run(c.put, k, v) for k, v in expected.items()], consumeErrors=True
        )
        await wait_for(lambda: len(live) >= 300)
        late: list[WatchEvent] = []
        late_watch = c.watch(b"/burst/", start, lambda b: late.extend(b.events))
        await wait_for(lambda: len(late) >= 300)
        for events in (live, late):
            assert len(events) == 300
            assert {e.key: e.value for e in events} == expected
            revisions = [e.modRevision for e in events]
            assert revisions == list(range(start, start + 300))
        live_watch.cancel()
        late_watch.cancel()
        await live_watch.ended
        await late_watch.ended
    finally:
        await connected.close()


@pytest_twisted.ensureDeferred
async def test_watch_compacted(etcd: EtcdMember, connected: Connected) -> None:
    """
    A watch from a compacted revision ends as COMPACTED with etcd's
    compaction revision, and its connection is closed.
    """
    c = connected.client
    try:
        for i in range(5):
            revision = await c.put(b"/hosts/k", b"%d" % i)
        response = await connected.http.post(
            etcd.url + "/v3/kv/compaction",
            json={"revision": str(revision), "physical": True},
            reactor=R,
        )
        assert response.code == 200, await response.text()
        watch = c.watch(b"/hosts/", 2, lambda b: None)
        ended = await watch.ended
        assert ended.reason is EndReason.COMPACTED
        assert ended.compactRevision == revision
    finally:
        await connected.close()
    await wait_for(lambda: not connections_to(etcd.clientPort))


@pytest_twisted.ensureDeferred
async def test_watch_ends_when_etcd_stops(
    etcd: EtcdMember, connected: Connected
) -> None:
    """
    A watch ends as CONNECTION_LOST when etcd stops, and a new one from its
    next revision sees the changes made after etcd came back.
    """
    c = connected.client
    try:
        first = await c.put(b"/hosts/a", b"1")
        watch = c.watch(b"/hosts/", first + 1, lambda b: None)
        await wait_for(lambda: bool(connections_to(etcd.clientPort)))
        etcd.stop()
        ended = await watch.ended
        assert ended.reason is EndReason.CONNECTION_LOST
        assert ended.nextRevision == first + 1
        etcd.start()
        second = await c.put(b"/hosts/b", b"2")
        seen: list[WatchEvent] = []
        again = c.watch(
            b"/hosts/", ended.nextRevision, lambda b: seen.extend(b.events)
        )
        await wait_for(lambda: len(seen) >= 1)
        assert [(e.key, e.modRevision) for e in seen] == [(b"/hosts/b", second)]
        again.cancel()
        await again.ended
    finally:
        await connected.close()


@pytest_twisted.ensureDeferred
async def test_endpoint_rotation(etcd: EtcdMember) -> None:
    """
    A client whose first endpoint refuses connections uses the next one.
    """
    from tests.integration.etcd_fixture import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    connected = Connected([dead, etcd.url])
    try:
        assert (await connected.client.put(b"/k", b"v")) > 1
        assert connected.client.apiPrefix(etcd.url) == "/v3/"
        assert connected.client.apiPrefix(dead) is None
    finally:
        await connected.close()
