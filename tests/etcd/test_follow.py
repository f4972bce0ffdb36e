"""
Tests for L{revproxy.etcd.follow}: the one follow loop of a key prefix, on
the in-memory route store and a fake clock.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from revproxy.etcd.follow import Backoff, IFollowListener, PrefixFollower
from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.types import (
    EndReason,
    EtcdUnavailable,
    EventType,
    Snapshot,
    WatchEnded,
    WatchEvent,
    WatchEvents,
)


@implementer(IFollowListener)
class RecordingListener:
    """
    Records what the follower tells, as tuples, in order.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.delays: list[float] = []
        self.raiseOnEvents = False

    def names(self) -> list[object]:
        return [c[0] for c in self.calls]

    def snapshot(self, snapshot: Snapshot, first: bool) -> None:
        keys = sorted(e.key for e in snapshot.entries)
        self.calls.append(("snapshot", snapshot.revision, first, keys))

    def events(self, batch: WatchEvents) -> None:
        if self.raiseOnEvents:
            raise RuntimeError("listener broke")
        self.calls.append(("events", batch.revision, [e.key for e in batch.events]))

    def progress(self, revision: int) -> None:
        self.calls.append(("progress", revision))

    def reconnected(self) -> None:
        self.calls.append(("reconnected",))

    def listFailed(self, reason: Failure, delay: float) -> None:
        self.delays.append(delay)
        self.calls.append(("listFailed", delay))

    def interrupted(self, ended: WatchEnded, delay: float) -> None:
        self.delays.append(delay)
        self.calls.append(("interrupted", ended.reason, delay))

    def compacted(self, ended: WatchEnded) -> None:
        self.calls.append(("compacted", ended.compactRevision))

    def probeFailed(self, reason: Failure) -> None:
        self.calls.append(("probeFailed",))

    def watchFailed(self, reason: Failure, delay: float) -> None:
        self.calls.append(("watchFailed", str(reason.value), delay))


class Harness:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.clock = Clock()
        self.store = MemoryRouteStore()
        self.listener = RecordingListener()
        self.follower = PrefixFollower(
            self.store,
            b"/hosts/",
            self.listener,
            self.clock,
            Backoff(1, 8, rng if rng is not None else random.Random(1)),
            probeInterval=5,
        )

    def put(self, key: str) -> None:
        self.store.put(key.encode(), b"")

    def advanceToNext(self) -> float:
        """
        Run the next timer of the follower's and say how far ahead it was.
        """
        calls = [c for c in self.clock.getDelayedCalls() if c.func.__name__ != "_probe"]
        [call] = calls
        delay = call.getTime() - self.clock.seconds()
        self.clock.advance(delay)
        return delay


class FollowTests(SynchronousTestCase):
    def test_listener(self) -> None:
        """The test's listener provides IFollowListener."""
        verifyObject(IFollowListener, RecordingListener())

    def test_listThenWatch(self) -> None:
        """Starting reads the prefix at revision R, then watches from R+1."""
        h = Harness()
        h.put("/hosts/a/h:1")
        h.put("/other/x/h:1")
        h.follower.start()
        self.assertEqual(h.listener.calls, [("snapshot", 3, True, [b"/hosts/a/h:1"])])
        [watch] = h.store.watches
        self.assertEqual(watch.nextRevision, 4)
        self.assertTrue(h.follower.live)
        self.assertEqual((h.follower.revision, h.follower.lastContact), (3, 0))
        h.put("/hosts/b/h:2")
        self.assertEqual(h.listener.calls[-1], ("events", 4, [b"/hosts/b/h:2"]))
        self.assertEqual(h.follower.revision, 4)

    def test_duplicatesDropped(self) -> None:
        """Events at or below the last revision delivered are not delivered."""
        h = Harness()
        h.follower.start()
        h.put("/hosts/a/h:1")
        # What a buggy etcd sends: the same revision again.
        again = WatchEvents(2, (WatchEvent(EventType.PUT, b"/hosts/a/h:1", b"", 2),))
        h.store.watches[0]._onEvents(again)
        self.assertEqual(h.listener.names(), ["snapshot", "events"])

    def test_progress(self) -> None:
        """A progress notification is contact and advances the revision."""
        h = Harness()
        h.follower.start()
        h.clock.advance(2)
        h.store.revision += 3
        h.store.watches[0].progress()
        self.assertEqual(h.listener.calls[-1], ("progress", 4))
        self.assertEqual((h.follower.revision, h.follower.lastContact), (4, 2))

    def test_backoffGrowsWithJitterAndResets(self) -> None:
        """
        Failed reads wait longer each time, each delay within [d/2, d], up
        to the maximum; a successful read resets the backoff.
        """
        h = Harness()
        h.store.unavailable = True
        h.follower.start()
        delays = [h.advanceToNext() for _ in range(6)]
        for n, delay in enumerate(delays):
            d = min(8, 2**n)
            self.assertTrue(d / 2 <= delay <= d, (n, delays))
        for told, waited in zip(h.listener.delays, delays):
            self.assertAlmostEqual(told, waited)
        self.assertNotEqual(len(set(delays)), 1)
        h.store.unavailable = False
        h.advanceToNext()
        self.assertEqual(h.follower.backoff.attempt, 0)
        self.assertTrue(h.follower.live)

    def test_noJitter(self) -> None:
        """Without a random source the delays are exactly d."""
        b = Backoff(1, 10, None)
        self.assertEqual([b.next() for _ in range(6)], [1, 2, 4, 8, 10, 10])

    def test_interruptedResumes(self) -> None:
        """
        A lost watch is started again after a delay from the next revision,
        losing nothing; the first answer after it is reported.
        """
        h = Harness()
        h.follower.start()
        h.store.disconnect()
        self.assertFalse(h.follower.live)
        self.assertEqual(h.listener.calls[-1][:2], ("interrupted", EndReason.CONNECTION_LOST))
        h.put("/hosts/b/h:2")
        h.advanceToNext()
        self.assertEqual(h.listener.calls[-2:], [("reconnected",), ("events", 2, [b"/hosts/b/h:2"])])
        self.assertEqual(h.follower.reconnects, 1)

    def test_compactionRelists(self) -> None:
        """
        A watch cancelled by compaction reads the prefix again at once and
        hands over the new snapshot, then watches from its revision.
        """
        h = Harness()
        h.put("/hosts/a/h:1")
        h.follower.start()
        h.store.disconnect()
        h.put("/hosts/b/h:2")
        h.store.delete(b"/hosts/a/h:1")
        h.store.compact(h.store.revision)
        h.advanceToNext()
        self.assertEqual(
            h.listener.calls[-3:],
            [("compacted", 4), ("reconnected",), ("snapshot", 4, False, [b"/hosts/b/h:2"])],
        )
        self.assertEqual(h.follower.resyncs, 1)
        h.put("/hosts/c/h:3")
        self.assertEqual(h.listener.calls[-1], ("events", 5, [b"/hosts/c/h:3"]))

    def test_probe(self) -> None:
        """A probe every probeInterval reads through the store and is contact."""
        h = Harness()
        h.follower.start()
        reads: list[bytes] = []
        original = h.store.getPrefix

        def getPrefix(prefix: bytes, revision: int | None = None) -> Deferred[Snapshot]:
            reads.append(prefix)
            return original(prefix)

        h.store.getPrefix = getPrefix  # type: ignore[method-assign]
        h.clock.advance(5)
        h.clock.advance(5)
        self.assertEqual(reads, [b"/hosts/\x00", b"/hosts/\x00"])
        self.assertEqual(h.follower.lastContact, 10)

    def test_failedProbeRestartsWatch(self) -> None:
        """A failed probe cancels the watch and starts it again after a delay."""
        h = Harness()
        h.follower.start()
        first = h.store.watches[0]
        original = h.store.getPrefix
        h.store.getPrefix = lambda p, revision=None: fail(  # type: ignore[method-assign]
            EtcdUnavailable(["x"])
        )
        h.clock.advance(5)
        self.assertFalse(h.follower.live)
        self.assertEqual(h.listener.names()[-2:], ["probeFailed", "interrupted"])
        h.store.getPrefix = original  # type: ignore[method-assign]
        h.put("/hosts/b/h:2")
        h.advanceToNext()
        self.assertTrue(h.follower.live)
        self.assertIsNot(h.store.watches[0], first)
        self.assertEqual(h.listener.calls[-1], ("events", 2, [b"/hosts/b/h:2"]))

    def test_listenerFailureRelists(self) -> None:
        """An exception from the listener re-reads the prefix after a delay."""
        h = Harness()
        h.follower.start()
        h.listener.raiseOnEvents = True
        h.put("/hosts/a/h:1")
        self.assertEqual(h.listener.calls[-1][:2], ("watchFailed", "listener broke"))
        self.assertFalse(h.follower.live)
        h.listener.raiseOnEvents = False
        h.advanceToNext()
        self.assertEqual(h.listener.calls[-1], ("snapshot", 2, False, [b"/hosts/a/h:1"]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopInListener(self) -> None:
        """A listener that stops the follower when told of a failure stops all retries."""
        h = Harness()
        h.store.unavailable = True
        stopped: list[Deferred[None]] = []
        h.listener.listFailed = lambda reason, delay: stopped.append(  # type: ignore[method-assign]
            h.follower.stop()
        )
        h.follower.start()
        self.successResultOf(stopped[0])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """Stopping cancels the watch and every timer; it fires once the watch ended."""
        h = Harness()
        h.follower.start()
        self.assertNotEqual(h.clock.getDelayedCalls(), [])
        self.successResultOf(h.follower.stop())
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.store.watches, [])
        self.assertFalse(h.follower.live)

    def test_stopWhileRetrying(self) -> None:
        """Stopping while waiting to watch again leaves no timer."""
        h = Harness()
        h.follower.start()
        h.store.disconnect()
        self.successResultOf(h.follower.stop())
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopWhileReading(self) -> None:
        """Stopping during a read cancels it and tells the listener nothing."""
        h = Harness()
        pending: Deferred[Snapshot] = Deferred()
        h.store.getPrefix = lambda p, revision=None: pending  # type: ignore[method-assign]
        h.follower.start()
        self.successResultOf(h.follower.stop())
        self.assertTrue(pending.called)
        self.assertEqual(h.listener.calls, [])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopWaitsForTheWatch(self) -> None:
        """stop fires only once the watch's ended has fired."""
        h = Harness()
        h.follower.start()
        watch = h.store.watches[0]
        ended: Deferred[WatchEnded] = Deferred()
        watch.ended, real = ended, watch.ended
        watch.cancel = lambda: None  # type: ignore[method-assign]
        d = h.follower.stop()
        self.assertNoResult(d)
        ended.callback(WatchEnded(EndReason.CANCELLED, 2))
        self.successResultOf(d)
        self.assertNoResult(real)


class BackoffTests(SynchronousTestCase):
    def test_bounds(self) -> None:
        """
        The n-th delay lies in [d/2, d] for d = min(max, initial * 2**n).
        """
        b = Backoff(0.5, 30, random.Random(3))
        for n in range(12):
            d = min(30, 0.5 * 2**n)
            delay = b.next()
            self.assertTrue(d / 2 <= delay <= d, (n, delay))
        b.reset()
        self.assertLessEqual(b.next(), 0.5)

    def test_jitter(self) -> None:
        """
        Two nodes with different random sources do not retry in lockstep.
        """
        a = [Backoff(1, 30, random.Random(1)).next() for _ in range(1)]
        b = [Backoff(1, 30, random.Random(2)).next() for _ in range(1)]
        self.assertNotEqual(a, b)


class RelistTests(SynchronousTestCase):
    def test_relist(self) -> None:
        """relist reads the prefix again as a later snapshot and watches from its revision."""
        h = Harness()
        h.put("/hosts/a/h:1")
        h.follower.start()
        h.put("/hosts/b/h:2")
        h.follower.relist()
        self.assertEqual(
            h.listener.calls[-1], ("snapshot", 3, False, [b"/hosts/a/h:1", b"/hosts/b/h:2"])
        )
        [watch] = h.store.watches
        self.assertEqual(watch.nextRevision, 4)
        self.successResultOf(h.follower.stop())
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_relistWhenStopped(self) -> None:
        """relist does nothing unless the follower runs."""
        h = Harness()
        h.follower.relist()
        self.assertEqual(h.listener.calls, [])
