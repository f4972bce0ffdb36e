"""
Tests for L{revproxy.ops.snapshot}: the last-good route snapshot, written
and served on the in-memory store, a fake clock and a temporary directory.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.ops.tempdirs import temporary

from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.sync import EtcdRouteSync
from revproxy.ops.snapshot import FILENAME, RouteSnapshot, readSnapshot
from revproxy.routing.balancing import roundRobin
from revproxy.routing.resolver import RouteResolver


class Node:
    def __init__(self, directory: Path, store: MemoryRouteStore | None = None) -> None:
        self.clock = Clock()
        self.store = store if store is not None else MemoryRouteStore()
        self.resolver = RouteResolver()
        self.sync = EtcdRouteSync(self.store, self.resolver, "/hosts/", self.clock,
                                  rng=random.Random(0), backoffInitial=1, backoffMax=1)
        self.snapshot = RouteSnapshot(self.resolver, self.sync, directory, self.clock, 2.0)

    def start(self) -> None:
        self.snapshot.startService()
        self.sync.startService()

    def hosts(self) -> dict[str, list[str]]:
        table = self.resolver.table
        assert table is not None
        return {h: [str(u) for u in r.upstreams] for h, r in table.routes.items()}


class SnapshotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(temporary(self))
        self.dir.mkdir()
        self.warnings: list[str] = []

        def observe(event: dict[str, object]) -> None:
            if event.get("log_namespace") == "revproxy.ops.snapshot":
                self.warnings.append(str(event["log_format"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_writtenAfterChangesAtMostOncePerSecond(self) -> None:
        """
        The routes served are written with their revision after changes,
        at most once a second, and read back to the same table.
        """
        n = Node(self.dir)
        n.store.put(b"/hosts/a.com/10.0.0.1:80", b'{"weight": 3}')
        n.start()
        n.clock.advance(0)
        self.assertEqual(n.snapshot.writes, 1)
        for i in range(20):
            n.store.put(f"/hosts/b.com/10.0.0.{i}:80".encode(), b"")
            n.clock.advance(0.05)
        # Twenty changes within the second after the first write: one more.
        self.assertEqual(n.snapshot.writes, 2)
        n.clock.advance(5)
        self.assertEqual(n.snapshot.writes, 2)
        loaded = readSnapshot(self.dir / FILENAME, "/hosts/", roundRobin)
        assert isinstance(loaded, tuple)
        revision, table = loaded
        self.assertEqual(revision, n.store.revision)
        self.assertEqual(set(table.routes), {"a.com", "b.com"})
        self.assertEqual(table.routes["a.com"].upstreams[0].weight, 3)
        self.assertEqual(len(table.routes["b.com"].upstreams), 20)
        self.assertEqual([p.name for p in self.dir.iterdir()], [FILENAME])

    def test_servedWhenEtcdDownThenReplaced(self) -> None:
        """
        When etcd cannot be read within the timeout the snapshot is served,
        marked stale; etcd's first read replaces it whole (a host gone from
        etcd meanwhile goes) and clears the mark.
        """
        first = Node(self.dir)
        first.store.put(b"/hosts/a.com/10.0.0.1:80", b"")
        first.store.put(b"/hosts/old.com/10.0.0.2:80", b"")
        first.start()
        first.clock.advance(1)
        store = MemoryRouteStore()
        store.put(b"/hosts/a.com/10.0.0.9:80", b"")
        store.unavailable = True
        n = Node(self.dir, store)
        n.start()
        n.clock.advance(1.9)
        self.assertIsNone(n.resolver.table)
        n.clock.advance(0.1)
        self.assertEqual(n.hosts(), {"a.com": ["10.0.0.1:80"], "old.com": ["10.0.0.2:80"]})
        self.assertTrue(n.snapshot.stale)
        self.assertIn("stale", n.snapshot.describe())
        store.unavailable = False
        n.clock.advance(2)
        self.assertEqual(n.hosts(), {"a.com": ["10.0.0.9:80"]})
        self.assertFalse(n.snapshot.stale)

    def test_notServedWhenEtcdAnswers(self) -> None:
        """
        With etcd up, the snapshot is never loaded.
        """
        (self.dir / FILENAME).write_text("garbage")
        n = Node(self.dir)
        n.start()
        n.clock.advance(5)
        self.assertFalse(n.snapshot.stale)
        self.assertEqual(self.warnings, [])

    def test_corruptOrForeignIgnoredWithOneWarning(self) -> None:
        """
        A snapshot that is not JSON, of another format, another prefix, or
        whose keys fail the checksum is ignored with one warning: the node
        serves nothing rather than something untrusted.
        """
        good = Node(self.dir)
        good.store.put(b"/hosts/a.com/10.0.0.1:80", b"")
        good.start()
        good.clock.advance(1)
        text = (self.dir / FILENAME).read_text()
        doc = json.loads(text)
        tampered = dict(doc, keys=[["/hosts/a.com/10.6.6.6:80", ""]])
        variants = [
            "{not json",
            json.dumps({"format": "something-else"}),
            json.dumps(dict(doc, prefix="/other/")),
            json.dumps(tampered),
            json.dumps(dict(doc, version=99)),
        ]
        for variant in variants:
            self.warnings.clear()
            (self.dir / FILENAME).write_text(variant)
            store = MemoryRouteStore()
            store.unavailable = True
            n = Node(self.dir, store)
            n.start()
            n.clock.advance(2)
            self.assertIsNone(n.resolver.table, variant)
            self.assertEqual(len(self.warnings), 1, (variant, self.warnings))
            self.assertIn("ignoring", self.warnings[0])
            n.sync.stopService()
            n.snapshot.stopService()
