# -*- test-case-name: tests.etcd.test_memory -*-
"""
The in-memory fake of etcd for unit tests: L{MemoryRouteStore} implements
L{IRouteStore} with etcd's revision semantics (history, compaction,
watches from a past revision, an unavailable store), L{MemoryWatch} its
watches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from revproxy.etcd.types import (
    Comparison,
    Delete,
    DeletePrefix,
    DeleteResult,
    EndReason,
    Entry,
    EtcdError,
    EtcdUnavailable,
    EventType,
    ILeaseStore,
    IRouteStore,
    IWatch,
    ModRevisionIs,
    OnEvents,
    OnProgress,
    Operation,
    Put,
    Snapshot,
    TxnResult,
    WatchEnded,
    WatchError,
    WatchEvent,
    WatchEvents,
)

__all__ = ["MemoryRouteStore", "MemoryWatch"]

log = Logger()


class _Record(NamedTuple):
    value: bytes
    modRevision: int


@implementer(IWatch)
class MemoryWatch:
    """
    A watch on a L{MemoryRouteStore}.
    """

    def __init__(
        self,
        store: MemoryRouteStore,
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None,
    ) -> None:
        self.ended: Deferred[WatchEnded] = Deferred()
        self.prefix = prefix
        self._store = store
        self._onEvents = onEvents
        self._onProgress = onProgress
        self._applied = max(startRevision - 1, 0)

    @property
    def nextRevision(self) -> int:
        return self._applied + 1

    def _deliver(self, revision: int, events: tuple[WatchEvent, ...]) -> None:
        if self.ended.called or revision <= self._applied:
            return
        mine = tuple(e for e in events if e.key.startswith(self.prefix))
        self._applied = revision
        if not mine:
            return
        try:
            self._onEvents(WatchEvents(revision, mine))
        except Exception:
            failure = Failure()
            log.failure("etcd watch callback failed; ending the watch", failure)
            self._store._forget(self)
            self.ended.errback(failure)

    def progress(self) -> None:
        """
        Send a progress notification at the store's revision.
        """
        if self.ended.called:
            return
        self._applied = max(self._applied, self._store.revision)
        if self._onProgress is not None:
            try:
                self._onProgress(self._store.revision)
            except Exception:
                failure = Failure()
                log.failure("etcd watch callback failed; ending the watch", failure)
                self._store._forget(self)
                self.ended.errback(failure)

    def end(
        self,
        reason: EndReason,
        compactRevision: int | None = None,
        error: WatchError | None = None,
        detail: str = "",
    ) -> None:
        """
        End the watch as etcd or the network would.
        """
        if self.ended.called:
            return
        self._store._forget(self)
        self.ended.callback(
            WatchEnded(reason, self.nextRevision, compactRevision, error, detail)
        )

    def cancel(self) -> None:
        self.end(EndReason.CANCELLED, detail="cancelled")


@implementer(IRouteStore, ILeaseStore)
class MemoryRouteStore:
    """
    An in-memory L{IRouteStore} with etcd's revision semantics, for unit
    tests.  Every change increments L{revision}; watches get the change
    synchronously, or through C{clock.callLater(0, ...)} if a clock is given.
    History is kept for watches from past revisions until L{compact}.

    @ivar unavailable: while true, every call fails with L{EtcdUnavailable}
        and new watches end with L{EndReason.CONNECTION_LOST}.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.revision = 1
        self.compactRevision = 0
        self.unavailable = False
        self._clock = clock
        self._data: dict[bytes, _Record] = {}
        self._history: list[tuple[int, tuple[WatchEvent, ...]]] = []
        self.watches: list[MemoryWatch] = []
        #: lease id -> (TTL, the keys attached to it)
        self.leases: dict[int, tuple[int, set[bytes]]] = {}
        self._nextLease = 1000

    def items(self) -> dict[bytes, bytes]:
        """
        The current keys and values.
        """
        return {k: r.value for k, r in self._data.items()}

    def _check(self) -> None:
        if self.unavailable:
            raise EtcdUnavailable(["memory store is unavailable"])

    def _commit(self, events: list[WatchEvent]) -> None:
        batch = tuple(events)
        self._history.append((self.revision, batch))
        for watch in list(self.watches):
            self._schedule(watch._deliver, self.revision, batch)

    def _schedule(self, f: Callable[..., object], *args: object) -> None:
        if self._clock is None:
            f(*args)
        else:
            self._clock.callLater(0, f, *args)

    def _forget(self, watch: MemoryWatch) -> None:
        if watch in self.watches:
            self.watches.remove(watch)

    def _apply(self, ops: Sequence[Operation]) -> tuple[int, list[WatchEvent]]:
        revision = self.revision + 1
        events: list[WatchEvent] = []
        deleted = 0
        for op in ops:
            if isinstance(op, Put):
                self._detach(op.key)
                self._data[op.key] = _Record(op.value, revision)
                events.append(WatchEvent(EventType.PUT, op.key, op.value, revision))
                continue
            if isinstance(op, Delete):
                keys = [op.key] if op.key in self._data else []
            else:
                keys = sorted(k for k in self._data if k.startswith(op.prefix))
            for k in keys:
                self._detach(k)
                del self._data[k]
                events.append(WatchEvent(EventType.DELETE, k, b"", revision))
                deleted += 1
        if events:
            self.revision = revision
            self._commit(events)
        return deleted, events

    def getPrefix(
        self, prefix: bytes, revision: int | None = None
    ) -> Deferred[Snapshot]:
        try:
            self._check()
            if revision is not None:
                raise NotImplementedError("reads at a past revision")
        except Exception:
            return fail()
        entries = [
            Entry(k, r.value, r.modRevision)
            for k, r in sorted(self._data.items())
            if k.startswith(prefix)
        ]
        return succeed(Snapshot(self.revision, entries))

    def put(self, key: bytes, value: bytes) -> Deferred[int]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        self._apply([Put(key, value)])
        return succeed(self.revision)

    def delete(self, key: bytes) -> Deferred[DeleteResult]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        deleted, _ = self._apply([Delete(key)])
        return succeed(DeleteResult(self.revision, deleted))

    def deletePrefix(self, prefix: bytes) -> Deferred[DeleteResult]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        deleted, _ = self._apply([DeletePrefix(prefix)])
        return succeed(DeleteResult(self.revision, deleted))

    def txn(
        self,
        compare: Sequence[Comparison],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> Deferred[TxnResult]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()

        def holds(c: Comparison) -> bool:
            record = self._data.get(c.key)
            if isinstance(c, ModRevisionIs):
                return (record.modRevision if record else 0) == c.revision
            return record is not None and record.value == c.value

        succeeded = all(holds(c) for c in compare)
        self._apply(success if succeeded else failure)
        return succeed(TxnResult(succeeded, self.revision))

    def compact(self, revision: int) -> None:
        """
        Forget the history up to C{revision}, as etcd's compaction does:
        watches from at or below it are cancelled with L{EndReason.COMPACTED}.
        """
        self.compactRevision = max(self.compactRevision, revision)
        self._history = [(r, e) for r, e in self._history if r > revision]

    def watch(
        self,
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None = None,
    ) -> MemoryWatch:
        if startRevision <= 0:
            startRevision = self.revision + 1
        w = MemoryWatch(self, prefix, startRevision, onEvents, onProgress)
        if self.unavailable:
            self._schedule(
                w.end,
                EndReason.CONNECTION_LOST,
                None,
                None,
                "memory store is unavailable",
            )
            return w
        if startRevision <= self.compactRevision:
            self._schedule(
                w.end,
                EndReason.COMPACTED,
                self.compactRevision,
                None,
                f"revision {startRevision} compacted",
            )
            return w
        self.watches.append(w)
        for revision, events in self._history:
            if revision >= startRevision:
                self._schedule(w._deliver, revision, events)
        return w

    def disconnect(self, reason: EndReason = EndReason.CONNECTION_LOST) -> None:
        """
        End every running watch with C{reason}, as a lost connection would.
        """
        for w in list(self.watches):
            w.end(reason, detail="disconnected")

    # -- leases (ILeaseStore)

    def _detach(self, key: bytes) -> None:
        for _, keys in self.leases.values():
            keys.discard(key)

    def grantLease(self, ttl: int) -> Deferred[int]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        self._nextLease += 1
        self.leases[self._nextLease] = (ttl, set())
        return succeed(self._nextLease)

    def keepAliveLease(self, lease: int) -> Deferred[int]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        known = self.leases.get(lease)
        return succeed(0 if known is None else known[0])

    def revokeLease(self, lease: int) -> Deferred[None]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        self.expireLease(lease)
        return succeed(None)

    def putLeased(self, key: bytes, value: bytes, lease: int) -> Deferred[int]:
        try:
            self._check()
            if lease not in self.leases:
                raise EtcdError(5, "etcdserver: requested lease not found", 400)
        except Exception:
            return fail()
        self._apply([Put(key, value)])
        self.leases[lease][1].add(key)
        return succeed(self.revision)

    def expireLease(self, lease: int) -> None:
        """
        Let C{lease} expire, as etcd does when it is not kept alive: its
        keys are deleted in one revision.
        """
        known = self.leases.pop(lease, None)
        if known is not None and known[1]:
            self._apply([Delete(k) for k in sorted(known[1])])
