"""
Tests for L{revproxy.etcd.sync}: the etcd route sync, on the in-memory route
store and a fake clock.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd import types as etcd
from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.types import EventType, WatchEvent, WatchEvents
from revproxy.routing.resolver import RouteResolver
from revproxy.etcd.sync import EtcdRouteSync


class Harness:
    def __init__(self, store: MemoryRouteStore | None = None) -> None:
        self.clock = Clock()
        self.store = store if store is not None else MemoryRouteStore()
        self.resolver = RouteResolver()
        self.sync = EtcdRouteSync(
            self.store,
            self.resolver,
            "/hosts/",
            self.clock,
            rng=random.Random(1),
            backoffInitial=1,
            backoffMax=8,
            probeInterval=5,
        )

    def put(self, key: str, value: bytes = b"") -> None:
        self.store.put(key.encode(), value)

    def delete(self, key: str) -> None:
        self.store.delete(key.encode())

    def hosts(self) -> dict[str, list[str]]:
        table = self.resolver.table
        assert table is not None
        return {h: [str(u) for u in r.upstreams] for h, r in table.routes.items()}


class LoadTests(SynchronousTestCase):
    def test_initialLoad(self) -> None:
        """
        Starting reads every route key and builds the table from them, at
        the read's revision, then watches from the next one.
        """
        h = Harness()
        h.put("/hosts/blog.example.com/127.0.0.1:4000")
        h.put("/hosts/blog.example.com/127.0.0.1:4001")
        h.put("/hosts/*.example.org/http://10.0.0.1:8080/base")
        h.put("/other/x/1.2.3.4:1")
        h.sync.startService()
        self.assertEqual(
            h.hosts(),
            {
                "blog.example.com": ["127.0.0.1:4000", "127.0.0.1:4001"],
                "*.example.org": ["http://10.0.0.1:8080/base"],
            },
        )
        self.assertEqual(h.sync.revision, h.store.revision)
        self.assertTrue(h.sync.live)
        self.assertEqual(h.sync.lastContact, 0)

    def test_keysOf(self) -> None:
        """
        The keys of a host's upstreams are listed as spelled in etcd, in the
        order of the route's upstreams, and follow changes.
        """
        h = Harness()
        h.put("/hosts/h.com/http://127.0.0.1:4001")
        h.put("/hosts/h.com/127.0.0.1:4000")
        h.sync.startService()
        self.assertEqual(h.hosts(), {"h.com": ["127.0.0.1:4000", "127.0.0.1:4001"]})
        self.assertEqual(
            h.sync.keysOf("h.com"),
            ["/hosts/h.com/127.0.0.1:4000", "/hosts/h.com/http://127.0.0.1:4001"],
        )
        h.delete("/hosts/h.com/127.0.0.1:4000")
        self.assertEqual(h.sync.keysOf("h.com"), ["/hosts/h.com/http://127.0.0.1:4001"])
        self.assertEqual(h.sync.keysOf("nothing.com"), [])

    def test_emptyPrefix(self) -> None:
        """
        No keys at all still loads a table: unknown hosts get 404, not 503.
        """
        h = Harness()
        h.sync.startService()
        self.assertEqual(h.hosts(), {})

    def test_weights(self) -> None:
        """
        A JSON value's weight reaches the route's upstream.
        """
        h = Harness()
        h.put("/hosts/a/h:1", b'{"weight": 3}')
        h.sync.startService()
        [u] = h.resolver.table.routes["a"].upstreams  # type: ignore[union-attr]
        self.assertEqual(u.weight, 3)

    def test_unreachableAtStart(self) -> None:
        """
        With etcd unreachable at start there is no table (503s) and the
        read is retried with growing delays until it works.
        """
        h = Harness()
        h.store.unavailable = True
        h.sync.startService()
        self.assertIsNone(h.resolver.table)
        delays = []
        for _ in range(4):
            [call] = h.clock.getDelayedCalls()
            delays.append(call.getTime() - h.clock.seconds())
            h.clock.advance(delays[-1])
        self.assertTrue(all(b >= a / 2 for a, b in zip(delays, delays[1:])), delays)
        self.assertLessEqual(max(delays), 8)
        h.store.unavailable = False
        h.put("/hosts/a/h:1")
        [call] = h.clock.getDelayedCalls()
        h.clock.advance(call.getTime() - h.clock.seconds())
        self.assertEqual(h.hosts(), {"a": ["h:1"]})


class LiveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.h.put("/hosts/a/h:1")
        self.h.sync.startService()

    def test_add(self) -> None:
        """
        A new key adds its host, a second key a second upstream.
        """
        h = self.h
        h.put("/hosts/b/h:2")
        self.assertEqual(h.hosts()["b"], ["h:2"])
        h.put("/hosts/b/h:3")
        self.assertEqual(h.hosts()["b"], ["h:2", "h:3"])
        self.assertEqual(h.sync.revision, h.store.revision)

    def test_delete(self) -> None:
        """
        Deleting one key removes that upstream; deleting the last removes
        the host.
        """
        h = self.h
        h.put("/hosts/a/h:2")
        h.delete("/hosts/a/h:1")
        self.assertEqual(h.hosts(), {"a": ["h:2"]})
        h.delete("/hosts/a/h:2")
        self.assertEqual(h.hosts(), {})

    def test_deletePrefixOneRevision(self) -> None:
        """
        Several events of one revision are applied together.
        """
        h = self.h
        h.put("/hosts/a/h:2")
        tables = []
        original = h.resolver.replace
        h.resolver.replace = lambda t: (tables.append(t), original(t))  # type: ignore[method-assign]
        h.store.deletePrefix(b"/hosts/a/")
        self.assertEqual(len(tables), 1)
        self.assertEqual(h.hosts(), {})

    def test_unchangedHostKeepsRoute(self) -> None:
        """
        A change to one host leaves the route (and balancer) of the others.
        """
        h = self.h
        before = h.resolver.table.routes["a"]  # type: ignore[union-attr]
        h.put("/hosts/b/h:2")
        self.assertIs(h.resolver.table.routes["a"], before)  # type: ignore[union-attr]

    def test_rewriteSameValue(self) -> None:
        """
        Writing the same key again keeps the host's route.
        """
        h = self.h
        before = h.resolver.table.routes["a"]  # type: ignore[union-attr]
        h.put("/hosts/a/h:1")
        self.assertIs(h.resolver.table.routes["a"], before)  # type: ignore[union-attr]

    def test_duplicateEventsIgnored(self) -> None:
        """
        Events at or below the applied revision are ignored (etcd's
        duplicate-event bugs).
        """
        h = self.h
        old = h.sync.revision
        h.sync._onEvents(
            WatchEvents(old, (WatchEvent(EventType.PUT, b"/hosts/z/h:9", b"", old),))
        )
        self.assertNotIn("z", h.hosts())

    def test_progress(self) -> None:
        """
        A progress notification counts as contact and advances the revision.
        """
        h = self.h
        h.clock.advance(3)
        h.store.revision += 5
        h.store.watches[0].progress()
        self.assertEqual(h.sync.lastContact, 3)
        self.assertEqual(h.sync.revision, h.store.revision)

    def test_orderByKey(self) -> None:
        """
        A host's upstreams are ordered by key, whatever the order of the
        writes, so every node builds the same table.
        """
        h = self.h
        h.put("/hosts/c/h:3")
        h.put("/hosts/c/h:1")
        h.put("/hosts/c/h:2")
        self.assertEqual(h.hosts()["c"], ["h:1", "h:2", "h:3"])


class BadKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warnings(self) -> list[str]:
        return [
            str(e["key"]) for e in self.events
            if e.get("log_level") == LogLevel.warn and "key" in e
        ]

    def test_skippedAtLoad(self) -> None:
        """
        Keys that do not parse are skipped with one warning naming each;
        the good keys load.
        """
        h = Harness()
        h.put("/hosts/a/h:1")
        h.put("/hosts/nohost")
        h.put("/hosts/b/not-an-address")
        h.put("/hosts/c/h:1", b"{bad json")
        h.sync.startService()
        self.assertEqual(h.hosts(), {"a": ["h:1"]})
        self.assertEqual(
            sorted(self.warnings()),
            ["/hosts/b/not-an-address", "/hosts/c/h:1", "/hosts/nohost"],
        )
        self.assertEqual(len(h.sync.skipped), 3)

    def test_fixed(self) -> None:
        """
        Fixing a bad key takes effect; breaking a good one removes it.
        """
        h = Harness()
        h.put("/hosts/c/h:1", b"{bad json")
        h.sync.startService()
        self.assertEqual(h.hosts(), {})
        h.put("/hosts/c/h:1", b'{"weight": 2}')
        self.assertEqual(h.hosts(), {"c": ["h:1"]})
        self.assertEqual(h.sync.skipped, set())
        h.put("/hosts/c/h:1", b"{bad")
        self.assertEqual(h.hosts(), {})
        self.assertEqual(h.sync.skipped, {"/hosts/c/h:1"})
        h.delete("/hosts/c/h:1")
        self.assertEqual(h.sync.skipped, set())

    def test_notUtf8(self) -> None:
        """
        A key that is not UTF-8 is skipped, not a crash.
        """
        h = Harness()
        h.store.put(b"/hosts/\xff/h:1", b"")
        h.sync.startService()
        self.assertEqual(h.hosts(), {})
        self.assertEqual(len(h.sync.skipped), 1)


class ReconnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.h.put("/hosts/a/h:1")
        self.h.sync.startService()

    def test_reconnectResumes(self) -> None:
        """
        When the watch is lost the table keeps serving; after a backoff the
        watch resumes from the next revision and gets what changed meanwhile.
        """
        h = self.h
        table = h.resolver.table
        h.store.disconnect()
        self.assertFalse(h.sync.live)
        self.assertIs(h.resolver.table, table)
        h.put("/hosts/b/h:2")
        self.assertNotIn("b", h.hosts())
        h.clock.advance(1)
        self.assertTrue(h.sync.live)
        self.assertEqual(h.hosts()["b"], ["h:2"])
        self.assertEqual(h.sync.reconnects, 1)

    def test_compactedRelists(self) -> None:
        """
        A watch cancelled by compaction re-lists and applies the difference,
        keeping unchanged hosts' routes.
        """
        h = self.h
        h.put("/hosts/keep/h:5")
        keep = h.resolver.table.routes["keep"]  # type: ignore[union-attr]
        h.store.disconnect()
        h.put("/hosts/b/h:2")
        h.delete("/hosts/a/h:1")
        h.store.compact(h.store.revision)
        h.clock.advance(1)
        self.assertEqual(h.hosts(), {"b": ["h:2"], "keep": ["h:5"]})
        self.assertIs(h.resolver.table.routes["keep"], keep)  # type: ignore[union-attr]
        self.assertEqual(h.sync.resyncs, 1)
        self.assertTrue(h.sync.live)
        h.put("/hosts/c/h:3")
        self.assertIn("c", h.hosts())

    def test_backoffGrowsAndResets(self) -> None:
        """
        Repeated failures wait longer each time, up to the maximum; a
        working watch resets the delay.
        """
        h = self.h
        h.store.unavailable = True
        h.store.disconnect()
        delays = []
        for _ in range(6):
            [call] = [c for c in h.clock.getDelayedCalls() if c.func.__name__ == "_startWatch"]
            delays.append(call.getTime() - h.clock.seconds())
            h.clock.advance(delays[-1])
        self.assertTrue(delays[0] <= 1 and 4 <= delays[-1] <= 8, delays)
        h.store.unavailable = False
        [call] = [c for c in h.clock.getDelayedCalls() if c.func.__name__ == "_startWatch"]
        h.clock.advance(call.getTime() - h.clock.seconds())
        h.put("/hosts/b/h:2")
        self.assertEqual(h.sync._backoff.attempt, 0)

    def test_probeFailureRestartsWatch(self) -> None:
        """
        A failed liveness probe restarts the watch, which resumes without a
        gap.
        """
        h = self.h
        h.clock.advance(5)
        self.assertEqual(h.sync.lastContact, 5)
        original = h.store.getPrefix
        h.store.getPrefix = lambda p, revision=None: fail(  # type: ignore[method-assign]
            etcd.EtcdUnavailable(["x"])
        )
        h.clock.advance(5)
        self.assertFalse(h.sync.live)
        h.store.getPrefix = original  # type: ignore[method-assign]
        h.put("/hosts/b/h:2")
        [call] = [c for c in h.clock.getDelayedCalls() if c.func.__name__ == "_startWatch"]
        h.clock.advance(call.getTime() - h.clock.seconds())
        self.assertTrue(h.sync.live)
        self.assertIn("b", h.hosts())
        self.assertEqual(h.sync.reconnects, 1)

    def test_stopService(self) -> None:
        """
        Stopping cancels the watch and every timer.
        """
        h = self.h
        self.successResultOf(h.sync.stopService())
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.store.watches, [])

    def test_stopWhileRetrying(self) -> None:
        """
        Stopping while waiting to reconnect leaves no timer.
        """
        h = self.h
        h.store.disconnect()
        self.successResultOf(h.sync.stopService())
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopWhileLoading(self) -> None:
        """
        Stopping during the first read cancels it.
        """
        h = Harness()
        pending: Deferred[object] = Deferred()
        h.store.getPrefix = lambda p, revision=None: pending  # type: ignore[method-assign]
        h.sync.startService()
        self.successResultOf(h.sync.stopService())
        self.assertTrue(pending.called)
        self.assertEqual(h.clock.getDelayedCalls(), [])



class OwnWriteTests(SynchronousTestCase):
    def test_ownWriteRightAfterAdvances(self) -> None:
        """
        A write of the node's own (its record) at the revision right after
        the applied one moves the applied revision to it; one further on
        (another write came between) does not; route changes still apply.
        """
        h = Harness()
        h.put("/hosts/a.com/10.0.0.1:80")
        h.sync.startService()
        applied = h.sync.revision
        own = self.successResultOf(h.store.put(b"/nodes/n1", b"{}"))
        h.sync.ownWrite(own)
        self.assertEqual(h.sync.revision, own)
        self.assertEqual(own, applied + 1)
        h.store.put(b"/elsewhere/x", b"")
        h.sync.ownWrite(self.successResultOf(h.store.put(b"/nodes/n1", b"{}")))
        self.assertEqual(h.sync.revision, own)
        h.put("/hosts/b.com/10.0.0.2:80")
        self.assertEqual(h.hosts()["b.com"], ["10.0.0.2:80"])
        self.assertEqual(h.sync.revision, h.store.revision)
