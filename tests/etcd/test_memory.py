"""
Tests for L{revproxy.etcd.memory}: the in-memory route store.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.types import (
    Delete,
    DeleteResult,
    EndReason,
    Entry,
    EtcdUnavailable,
    EventType,
    IRouteStore,
    IWatch,
    ModRevisionIs,
    Put,
    Snapshot,
    TxnResult,
    ValueIs,
    WatchEvent,
    WatchEvents,
)


class MemoryRouteStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryRouteStore}.
    """

    def setUp(self) -> None:
        self.store = MemoryRouteStore()
        self.batches: list[WatchEvents] = []

    def test_interface(self) -> None:
        """
        L{MemoryRouteStore} and its watches provide the interfaces.
        """
        verifyObject(IRouteStore, self.store)
        verifyObject(IWatch, self.store.watch(b"/", 0, self.batches.append))

    def test_revisions(self) -> None:
        """
        Each change increments the revision; reads see keys under a prefix.
        """
        self.assertEqual(self.successResultOf(self.store.put(b"/h/a", b"1")), 2)
        self.assertEqual(self.successResultOf(self.store.put(b"/h/b", b"2")), 3)
        self.successResultOf(self.store.put(b"/x", b"3"))
        self.assertEqual(
            self.successResultOf(self.store.getPrefix(b"/h/")),
            Snapshot(4, [Entry(b"/h/a", b"1", 2), Entry(b"/h/b", b"2", 3)]),
        )
        self.assertEqual(
            self.successResultOf(self.store.delete(b"/h/a")), DeleteResult(5, 1)
        )
        self.assertEqual(
            self.successResultOf(self.store.delete(b"/h/a")), DeleteResult(5, 0)
        )
        self.assertEqual(
            self.successResultOf(self.store.deletePrefix(b"/")), DeleteResult(6, 2)
        )
        self.assertEqual(self.store.items(), {})

    def test_txn(self) -> None:
        """
        A transaction applies its success operations at one revision when its
        comparisons hold, else its failure operations.
        """
        ops = [Put(b"/h/a", b"1"), Put(b"/h/b", b"2")]
        self.assertEqual(
            self.successResultOf(self.store.txn([ModRevisionIs(b"/h/a", 0)], ops)),
            TxnResult(True, 2),
        )
        self.assertEqual(
            self.successResultOf(
                self.store.txn([ValueIs(b"/h/a", b"9")], ops, [Delete(b"/h/b")])
            ),
            TxnResult(False, 3),
        )
        self.assertEqual(self.store.items(), {b"/h/a": b"1"})

    def test_watch(self) -> None:
        """
        A watch gets the changes under its prefix synchronously, each batch
        one revision.
        """
        self.store.watch(b"/h/", 0, self.batches.append)
        self.successResultOf(self.store.txn([], [Put(b"/h/a", b"1"), Put(b"/x", b"2")]))
        self.successResultOf(self.store.delete(b"/h/a"))
        self.assertEqual(
            self.batches,
            [
                WatchEvents(2, (WatchEvent(EventType.PUT, b"/h/a", b"1", 2),)),
                WatchEvents(3, (WatchEvent(EventType.DELETE, b"/h/a", b"", 3),)),
            ],
        )

    def test_watch_history_and_clock(self) -> None:
        """
        A watch from a past revision replays history; with a clock, delivery
        waits for the clock.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        store = MemoryRouteStore(clock)
        store.put(b"/h/a", b"1")
        store.put(b"/h/b", b"2")
        watch = store.watch(b"/h/", 3, self.batches.append)
        self.assertEqual(self.batches, [])
        clock.advance(0)
        self.assertEqual([b.revision for b in self.batches], [3])
        self.assertEqual(watch.nextRevision, 4)

    def test_compacted(self) -> None:
        """
        A watch from a compacted revision ends as COMPACTED.
        """
        self.store.put(b"/h/a", b"1")
        self.store.compact(2)
        ended = self.successResultOf(
            self.store.watch(b"/h/", 2, self.batches.append).ended
        )
        self.assertEqual(
            (ended.reason, ended.compactRevision), (EndReason.COMPACTED, 2)
        )

    def test_callback_exception(self) -> None:
        """
        An exception from a watch callback is logged and fails the watch.
        """

        def explode(batch: WatchEvents) -> None:
            raise ZeroDivisionError()

        watch = self.store.watch(b"/", 0, explode)
        self.store.put(b"/a", b"1")
        self.failureResultOf(watch.ended, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.store.watches, [])

    def test_unavailable_and_disconnect(self) -> None:
        """
        An unavailable store fails calls and new watches; C{disconnect} ends
        running watches as CONNECTION_LOST.
        """
        watch = self.store.watch(b"/", 0, self.batches.append)
        self.store.disconnect()
        self.assertEqual(
            self.successResultOf(watch.ended).reason, EndReason.CONNECTION_LOST
        )
        self.store.unavailable = True
        self.failureResultOf(self.store.put(b"/a", b"1"), EtcdUnavailable)
        self.failureResultOf(self.store.getPrefix(b"/"), EtcdUnavailable)
        late = self.store.watch(b"/", 0, self.batches.append)
        self.assertEqual(
            self.successResultOf(late.ended).reason, EndReason.CONNECTION_LOST
        )

    def test_progress_and_cancel(self) -> None:
        """
        C{progress} notifies the store's revision; C{cancel} ends the watch.
        """
        progress: list[int] = []
        watch = self.store.watch(b"/", 0, self.batches.append, progress.append)
        self.store.put(b"/elsewhere", b"x")
        watch.progress()
        self.assertEqual(progress, [2])
        watch.cancel()
        self.assertEqual(self.successResultOf(watch.ended).reason, EndReason.CANCELLED)
