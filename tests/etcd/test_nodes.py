"""
Tests for L{revproxy.etcd.nodes}: node records under a lease, on the
in-memory store (with its leases) and a fake clock.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.nodes import NodeRecord, NodeRegistration, nodeKey, parseNodeRecord

PREFIX = "/revproxy/nodes/"
KEY = nodeKey(PREFIX, "n1")


class Node:
    """
    A registration of node C{n1} whose applied revision the test sets.
    """

    def __init__(self, interval: float = 0.2, ttl: int = 9) -> None:
        self.clock = Clock()
        self.store = MemoryRouteStore()
        self.revision = 0
        self.live = True
        self.registration = NodeRegistration(
            self.store, PREFIX, self.describe, self.clock, ttl=ttl, reportInterval=interval
        )

    def describe(self) -> NodeRecord:
        return NodeRecord("n1", "0.1.0", 100.0, "http://127.0.0.1:9901", self.revision, self.live, 3)

    def record(self) -> dict[str, Any] | None:
        value = self.store.items().get(KEY)
        return None if value is None else dict(json.loads(value))


class RecordTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A record's JSON names the node, version, start time, admin URL,
        applied revision, watch state and route count, and parses back.
        """
        record = NodeRecord("h:80:1", "0.1.0", 5.0, None, 42, False, 7)
        obj = json.loads(record.toJSON())
        self.assertEqual(
            obj,
            {"id": "h:80:1", "version": "0.1.0", "started": 5.0, "admin": None,
             "revision": 42, "watch": "down", "routes": 7},
        )
        self.assertEqual(parseNodeRecord(record.toJSON()), record)

    def test_badRecords(self) -> None:
        """
        A value that is not a node record parses as why, never raises.
        """
        for value in (b"", b"[]", b"{}", b'{"id": "x", "revision": "no"}', b"\xff"):
            self.assertIsInstance(parseNodeRecord(value), str, value)


class RegistrationTests(SynchronousTestCase):
    def test_registersUnderALease(self) -> None:
        """
        Starting grants a lease of the TTL and writes the record under the
        prefix with it.
        """
        n = Node()
        n.registration.startService()
        self.assertEqual(n.record()["id"], "n1")  # type: ignore[index]
        lease = n.registration.lease
        self.assertIsNotNone(lease)
        self.assertEqual(n.store.leases[lease][0], 9)  # type: ignore[index]
        self.assertIn(KEY, n.store.leases[lease][1])  # type: ignore[index]
        self.assertTrue(n.registration.registered)

    def test_keptAlive(self) -> None:
        """
        The lease is kept alive every TTL/3 seconds, with no write.
        """
        n = Node()
        n.registration.startService()
        calls: list[int] = []
        original = n.store.keepAliveLease
        n.store.keepAliveLease = lambda lease: calls.append(lease) or original(lease)  # type: ignore[method-assign]
        n.clock.advance(3)
        n.clock.advance(3)
        self.assertEqual(len(calls), 2)
        self.assertEqual(n.registration.reports, 1)

    def test_burstIsBatched(self) -> None:
        """
        The first change after a quiet spell is reported at once; the rest
        of a burst at most once per report interval, with the latest
        revision.
        """
        n = Node(interval=0.2)
        n.registration.startService()
        n.clock.advance(1)
        for revision in range(10, 110):
            n.revision = revision
            n.registration.changed()
            n.clock.advance(0.01)
        # 100 changes over 1 s: one at once, then one per 0.2 s.
        n.clock.advance(1)
        self.assertLessEqual(n.registration.reports, 1 + 1 + 6)
        self.assertEqual(n.record()["revision"], 109)  # type: ignore[index]

    def test_quietChangeReportedAtOnce(self) -> None:
        """
        A change long after the last report is written on the next turn.
        """
        n = Node(interval=0.2)
        n.registration.startService()
        n.clock.advance(5)
        n.revision = 7
        n.registration.changed()
        n.clock.advance(0)
        self.assertEqual(n.record()["revision"], 7)  # type: ignore[index]

    def test_expiredLeaseRegistersAgain(self) -> None:
        """
        A node whose lease expired (cut off from etcd for longer than the
        TTL) registers again with a new lease when the keepalive says so.
        """
        n = Node()
        n.registration.startService()
        first = n.registration.lease
        n.store.expireLease(first)  # type: ignore[arg-type]
        self.assertIsNone(n.record())
        n.clock.advance(3)
        self.assertIsNotNone(n.record())
        self.assertNotEqual(n.registration.lease, first)
        self.assertEqual(n.registration.registrations, 2)

    def test_lostLeaseOnReportRegistersOnce(self) -> None:
        """
        A report that finds the lease gone registers again, once: the
        keepalive that was due meanwhile does not register a second time.
        """
        n = Node()
        n.registration.startService()
        n.clock.advance(1)
        n.store.leases.pop(n.registration.lease)  # type: ignore[arg-type]
        grants: list[Deferred[int]] = []
        n.store.grantLease = lambda ttl: grants.append(Deferred()) or grants[-1]  # type: ignore[method-assign]
        n.revision = 3
        n.registration.changed()
        n.clock.advance(0)
        n.clock.advance(10)  # a keepalive was due at 3 s
        self.assertEqual(len(grants), 1)
        n.store.leases[4242] = (9, set())
        grants[0].callback(4242)
        self.assertEqual(n.registration.lease, 4242)
        self.assertEqual(n.record()["revision"], 3)  # type: ignore[index]

    def test_unavailableRetries(self) -> None:
        """
        While etcd is unreachable registration is retried; it succeeds once
        etcd answers.
        """
        n = Node()
        n.store.unavailable = True
        n.registration.startService()
        self.assertIsNone(n.record())
        n.clock.advance(2)
        self.assertIsNone(n.record())
        n.store.unavailable = False
        n.clock.advance(2)
        self.assertIsNotNone(n.record())

    def test_watchStateRewritten(self) -> None:
        """
        A change of watch state is written at the next keepalive even with
        no applied change.
        """
        n = Node()
        n.registration.startService()
        n.live = False
        n.clock.advance(3)
        n.clock.advance(0)
        self.assertEqual(n.record()["watch"], "down")  # type: ignore[index]

    def test_writtenRevisionsTold(self) -> None:
        """
        The revision of each write of the record is handed to C{written}.
        """
        n = Node()
        seen: list[int] = []
        n.registration = NodeRegistration(n.store, PREFIX, n.describe, n.clock, written=seen.append)
        n.registration.startService()
        n.clock.advance(1)
        n.revision = 4
        n.registration.changed()
        n.clock.advance(0)
        self.assertEqual(seen, [n.store.revision - 1, n.store.revision])

    def test_ownWriteDoesNotLoop(self) -> None:
        """
        A quiet node does not rewrite its record at every keepalive though
        its own write moves its applied revision (as the route sync does).
        """
        n = Node()

        def written(revision: int) -> None:
            n.revision = revision

        n.registration = NodeRegistration(n.store, PREFIX, n.describe, n.clock, ttl=9, written=written)
        n.registration.startService()
        n.clock.advance(0)
        before = n.store.revision
        for _ in range(10):
            n.clock.advance(3)
        self.assertEqual(n.store.revision, before)

    def test_stopRevokes(self) -> None:
        """
        Stopping revokes the lease (the record goes at once) and leaves no
        timer behind.
        """
        n = Node()
        n.registration.startService()
        n.revision = 5
        n.registration.changed()
        d = n.registration.stopService()
        self.successResultOf(d)
        self.assertIsNone(n.record())
        self.assertEqual(n.clock.getDelayedCalls(), [])
