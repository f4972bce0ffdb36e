# -*- test-case-name: tests.etcd.test_follow -*-
"""
The one follow loop of a key prefix in etcd, shared by the proxy's route
sync (L{revproxy.etcd.sync}) and C{revproxyctl watch}.

The algorithm, and why:

 1. Range-read the prefix and note the revision R of the read.
 2. Watch the prefix from R+1, so that no change falls between the read and
    the watch.  Events at or below the last revision delivered are dropped:
    the etcd 3.4/3.5 builds users run have known duplicate-event bugs.
 3. When the watch ends (stream closed, connection lost, an error in the
    stream, the endpoint down), watch again from the last revision delivered
    + 1 after an exponential backoff with jitter (L{Backoff}); the client
    rotates through its endpoints on failure.  A read that fails is retried
    the same way.  A successful read, or events, reset the backoff.
 4. When the watch is cancelled because its start revision was compacted,
    read the prefix again at a fresh revision and hand the listener the new
    snapshot: it reports the difference.  No retry of the same revision,
    which etcd would cancel again.
 5. Liveness: a member that lost its quorum keeps a plain watch open and
    silent, and progress notifications come only every 10 minutes by
    default.  The watch asks for the require-leader header (the client sends
    it), and a probe reads through the same client every C{probeInterval}
    seconds; a read needs a leader, so a failed probe means the endpoint is
    no good: the watch is restarted (on the next endpoint, since the client
    has moved on).

The follower does not log: it tells its L{IFollowListener} what happened and
what it will do, and the listener says it its own way.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from revproxy.etcd.types import (
    EndReason,
    IRouteStore,
    IWatch,
    Snapshot,
    WatchEnded,
    WatchEvents,
)

__all__ = ["Backoff", "IFollowListener", "PrefixFollower"]

log = Logger()


class Backoff:
    """
    Exponential backoff with jitter: the n-th delay is drawn uniformly from
    [d/2, d] where d = min(maximum, initial * 2**n).  Without a random
    source, the n-th delay is d itself.
    """

    def __init__(
        self, initial: float, maximum: float, rng: random.Random | None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.attempt = 0

    def next(self) -> float:
        """
        The delay before the next attempt.
        """
        d = min(self.maximum, self.initial * 2 ** min(self.attempt, 32))
        self.attempt += 1
        if self._rng is None:
            return float(d)
        return float(d / 2 + self._rng.uniform(0, d / 2))

    def reset(self) -> None:
        """
        Start again from the initial delay.
        """
        self.attempt = 0


class IFollowListener(Interface):
    """
    What a L{PrefixFollower} tells its user.  The follower calls these in
    the order things happen; a listener may call L{PrefixFollower.stop} from
    any of them, and then nothing further is tried.  An exception raised by
    L{snapshot}, L{events} or L{progress} is treated as L{watchFailed}.
    """

    def snapshot(snapshot: Snapshot, first: bool) -> None:
        """
        The prefix was read: C{snapshot} holds every key under it.  C{first}
        is true for the first read since L{PrefixFollower.start}; a later
        one follows a compaction or a failure, and replaces what was known.
        """

    def events(batch: WatchEvents) -> None:
        """
        The changes of one revision (or more), each revision once, in order.
        """

    def progress(revision: int) -> None:
        """
        etcd says every change up to C{revision} has been delivered.
        """

    def reconnected() -> None:
        """
        etcd answered again after the watch had been interrupted.
        """

    def listFailed(reason: Failure, delay: float) -> None:
        """
        Reading the prefix failed; it is read again in C{delay} seconds.
        """

    def interrupted(ended: WatchEnded, delay: float) -> None:
        """
        The watch ended (C{ended} says how); it starts again from the next
        revision in C{delay} seconds.
        """

    def compacted(ended: WatchEnded) -> None:
        """
        The watch's start revision was compacted away: the prefix is read
        again now, and L{snapshot} follows.
        """

    def probeFailed(reason: Failure) -> None:
        """
        The liveness probe failed: the watch is restarted (L{interrupted}
        follows).
        """

    def watchFailed(reason: Failure, delay: float) -> None:
        """
        The listener raised C{reason} from a callback: what it holds may be
        inconsistent, so the prefix is read again in C{delay} seconds.
        """


class PrefixFollower:
    """
    Follows every key under C{prefix} in an L{IRouteStore}: lists, watches,
    backs off, resyncs and probes, telling C{listener} (an
    L{IFollowListener}).

    @ivar revision: the last revision delivered to the listener (0 before
        the first read).
    @ivar lastContact: when etcd last answered (a read, a watch message or a
        probe), on the injected clock; L{None} before the first answer.
    @ivar reconnects: how many times the watch was started again after it
        ended.
    @ivar resyncs: how many times the prefix was read again because history
        was compacted.
    @ivar backoff: the L{Backoff} of retries.
    @ivar probeInterval: seconds between liveness probes; L{None} for none.
    """

    def __init__(
        self,
        store: IRouteStore,
        prefix: bytes,
        listener: IFollowListener,
        clock: IReactorTime,
        backoff: Backoff,
        probeInterval: float | None = 5.0,
    ) -> None:
        self._store = store
        self.prefix = prefix
        # A key that cannot exist under the prefix: the probe reads nothing.
        self._probeKey = prefix + b"\x00"
        self._listener = listener
        self._clock = clock
        self.backoff = backoff
        self.probeInterval = probeInterval
        self.revision = 0
        self.lastContact: float | None = None
        self.reconnects = 0
        self.resyncs = 0
        self.running = False
        self._listed = False
        self._watch: IWatch | None = None
        self._restartWatch = False
        self._interrupted = False
        self._pending: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._probeCall: IDelayedCall | None = None
        self._probing: Deferred[Any] | None = None
        self._generation = 0

    @property
    def live(self) -> bool:
        """
        Whether a watch is running.
        """
        return self._watch is not None

    def start(self) -> None:
        """
        Read the prefix, then follow it until L{stop}.
        """
        self.running = True
        self._listed = False
        self._list()

    def relist(self) -> None:
        """
        Read the prefix again now and hand it to the listener as a snapshot
        (not the first), then watch from its revision: what an operator's
        reload asks for.  Nothing happens unless running.
        """
        if not self.running:
            return
        generation = self._generation + 1
        stopped = self.stop()

        def again(_: object) -> None:
            # Not if stop() was called again meanwhile.
            if self._generation == generation:
                self.running = True
                self._list()

        stopped.addCallback(again)

    def stop(self) -> Deferred[None]:
        """
        Stop reading, watching, retrying and probing; the Deferred fires once
        the watch's connection is closed, when no timer of ours is left.
        """
        self._generation += 1
        self.running = False
        for call in (self._retry, self._probeCall):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._probeCall = None
        for d in (self._pending, self._probing):
            if d is not None:
                d.cancel()
        self._pending = self._probing = None
        watch, self._watch = self._watch, None
        if watch is None:
            return succeed(None)
        ended: Deferred[Any] = watch.ended
        watch.cancel()
        done: Deferred[None] = Deferred()
        ended.addBoth(lambda _: done.callback(None))
        return done

    # -- reading

    def _list(self) -> None:
        self._retry = None
        d = self._store.getPrefix(self.prefix)
        self._pending = d
        d.addCallbacks(self._gotSnapshot, self._listFailed)
        d.addErrback(self._unexpected)

    def _gotSnapshot(self, snapshot: Snapshot) -> None:
        self._pending = None
        if not self.running:
            return
        self._contact()
        self.backoff.reset()
        first = not self._listed
        self._listed = True
        try:
            self._listener.snapshot(snapshot, first)
        except Exception:
            self._failed(Failure())
            return
        self.revision = snapshot.revision
        self._startWatch()

    def _listFailed(self, reason: Failure) -> None:
        self._pending = None
        if not self.running:
            return
        delay = self.backoff.next()
        self._listener.listFailed(reason, delay)
        if self.running:
            self._retry = self._clock.callLater(delay, self._list)

    # -- watching

    def _startWatch(self) -> None:
        self._retry = None
        if not self.running:
            return
        watch = self._store.watch(
            self.prefix, self.revision + 1, self._onEvents, self._onProgress
        )
        self._watch = watch
        ended: Deferred[WatchEnded] = watch.ended
        ended.addCallbacks(self._watchEnded, self._watchFailed)
        ended.addErrback(self._unexpected)
        if self._watch is watch:
            self._scheduleProbe()

    def _onEvents(self, batch: WatchEvents) -> None:
        if batch.revision <= self.revision:
            return
        self._contact()
        self.backoff.reset()
        self._listener.events(batch)
        self.revision = batch.revision

    def _onProgress(self, revision: int) -> None:
        self._contact()
        self.revision = max(self.revision, revision)
        self._listener.progress(revision)

    def _contact(self) -> None:
        self.lastContact = self._clock.seconds()
        if self._interrupted:
            self._interrupted = False
            self._listener.reconnected()

    def _watchEnded(self, ended: WatchEnded) -> None:
        self._watch = None
        self._stopProbe()
        if not self.running:
            return
        if ended.reason == EndReason.COMPACTED:
            self.resyncs += 1
            self._listener.compacted(ended)
            if self.running:
                self._list()
            return
        if ended.reason == EndReason.CANCELLED and not self._restartWatch:
            return
        self._restartWatch = False
        self.reconnects += 1
        delay = self.backoff.next()
        self._interrupted = True
        self._listener.interrupted(ended, delay)
        if self.running:
            self._retry = self._clock.callLater(delay, self._startWatch)

    def _watchFailed(self, reason: Failure) -> None:
        # The listener raised: what it holds may be inconsistent, so start
        # over from a fresh read.
        self._watch = None
        self._stopProbe()
        if self.running:
            self._failed(reason)

    def _failed(self, reason: Failure) -> None:
        delay = self.backoff.next()
        self._listener.watchFailed(reason, delay)
        if self.running:
            self._retry = self._clock.callLater(delay, self._list)

    # -- liveness

    def _scheduleProbe(self) -> None:
        self._stopProbe()
        if self.probeInterval is not None:
            self._probeCall = self._clock.callLater(self.probeInterval, self._probe)

    def _stopProbe(self) -> None:
        if self._probeCall is not None and self._probeCall.active():
            self._probeCall.cancel()
        self._probeCall = None

    def _probe(self) -> None:
        self._probeCall = None
        d = self._store.getPrefix(self._probeKey)
        self._probing = d
        d.addCallbacks(self._probed, self._probeFailed)
        d.addErrback(self._unexpected)

    def _probed(self, _: object) -> None:
        self._probing = None
        self._contact()
        if self._watch is not None:
            self._scheduleProbe()

    def _probeFailed(self, reason: Failure) -> None:
        self._probing = None
        watch = self._watch
        if watch is None or not self.running:
            return
        self._listener.probeFailed(reason)
        if self.running and self._watch is watch:
            self._restartWatch = True
            watch.cancel()

    def _unexpected(self, reason: Failure) -> None:
        if not reason.check(CancelledError):
            log.failure("etcd: following {prefix!r}: unexpected error", reason,
                        prefix=self.prefix)
