# -*- test-case-name: tests.etcd.test_sync -*-
"""
The etcd route sync: keeps the L{RouteResolver}'s table equal to the route
keys under a prefix in etcd, live.

The algorithm, and why:

 1. Range-read the prefix, note the revision R, build the table.
 2. Watch the prefix from R+1; apply each revision's events as a diff of the
    hosts they touch (O(1) in the size of the table: no re-list per event,
    which is what makes Traefik's etcd provider slow at scale).  Events at
    or below the last applied revision are ignored: the etcd 3.4/3.5 builds
    users run have known duplicate-event bugs.
 3. When the watch ends (stream closed, connection lost, an error object in
    the stream, endpoint down), watch again from the last applied revision
    + 1 after an exponential backoff with jitter; the client rotates
    through the endpoints.  Meanwhile the last good table keeps serving.
 4. When the watch is cancelled because its start revision was compacted,
    re-list at a fresh revision and apply the difference: no restart, no
    gap.
 5. Liveness: a member that lost its quorum keeps a plain watch open and
    silent, and progress notifications come only every 10 minutes by
    default.  The watch asks for the require-leader header (the adapter
    sends it), and a probe of our own reads through the same client every
    C{probeInterval} seconds; a read needs a leader, so a failed probe means
    the endpoint is no good: the watch is restarted, on the next endpoint.

A key that does not parse is skipped with one warning naming it; it never
stops the sync, and fixing the key takes effect as any change does.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from revproxy.etcd.types import EndReason, EventType
from revproxy.routing.resolver import RouteResolver
from revproxy.routing import RouteError, RouteTable, Upstream, parseRouteKey

__all__ = ["EtcdRouteSync", "Backoff"]

log = Logger()



class Backoff:
    """
    Exponential backoff with jitter: the n-th delay is drawn uniformly from
    [d/2, d] where d = min(maximum, initial * 2**n).
    """

    def __init__(
        self, initial: float, maximum: float, rng: random.Random
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
        return float(d / 2 + self._rng.uniform(0, d / 2))

    def reset(self) -> None:
        """
        Start again from the initial delay.
        """
        self.attempt = 0


class EtcdRouteSync(Service):
    """
    Loads the routes under C{prefix} from an C{IRouteStore} into a
    L{RouteResolver} and follows every change.

    @ivar revision: the last etcd revision applied (0 before the first
        load).
    @ivar lastContact: when etcd last answered (a read, a watch message or a
        probe), on the injected clock; L{None} before the first answer.
    @ivar reconnects: how many times the watch was started again after it
        ended.
    @ivar resyncs: how many times the routes were re-listed because history
        was compacted.
    @ivar skipped: the keys skipped because they do not parse.
    """

    name = "etcd-sync"

    def __init__(
        self,
        store: Any,
        resolver: RouteResolver,
        prefix: str,
        clock: IReactorTime,
        rng: random.Random | None = None,
        backoffInitial: float = 0.5,
        backoffMax: float = 30.0,
        probeInterval: float = 5.0,
    ) -> None:
        self._store = store
        self._resolver = resolver
        self.prefix = prefix
        self._prefixBytes = prefix.encode("utf-8")
        self._probeKey = self._prefixBytes + b"\x00"
        self._clock = clock
        self._backoff = Backoff(
            backoffInitial, backoffMax, rng if rng is not None else random.Random()
        )
        self.probeInterval = probeInterval
        # key -> (host, upstream) for every key that parses.
        self._keys: dict[str, tuple[str, Upstream]] = {}
        # host -> {key: upstream}
        self._hosts: dict[str, dict[str, Upstream]] = {}
        self.skipped: set[str] = set()
        self.revision = 0
        self.lastContact: float | None = None
        self.reconnects = 0
        self.resyncs = 0
        self._watch: Any = None
        self._restartWatch = False
        self._pending: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._probeCall: IDelayedCall | None = None
        self._probing: Deferred[Any] | None = None
        self._unreachableLogged = False

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._load()

    def stopService(self) -> Deferred[None]:
        """
        Stop watching, retrying and probing; fires once the watch's
        connection is closed.
        """
        super().stopService()
        for name in ("_retry", "_probeCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        for name in ("_pending", "_probing"):
            d = getattr(self, name)
            setattr(self, name, None)
            if d is not None:
                d.cancel()
        watch, self._watch = self._watch, None
        if watch is None:
            return succeed(None)
        ended: Deferred[Any] = watch.ended
        watch.cancel()
        done: Deferred[None] = Deferred()
        ended.addBoth(lambda _: done.callback(None))
        return done

    @property
    def endpoint(self) -> str | None:
        """
        The etcd endpoint in use, if the store tells.
        """
        return getattr(self._store, "endpoint", None)

    @property
    def live(self) -> bool:
        """
        Whether a watch is running.
        """
        return self._watch is not None

    # -- loading -------------------------------------------------------------

    def _load(self) -> None:
        self._retry = None
        d = self._store.getPrefix(self._prefixBytes)
        self._pending = d
        d.addCallbacks(self._loaded, self._loadFailed)
        d.addErrback(self._unexpected)

    def _loaded(self, snapshot: Any) -> None:
        self._pending = None
        self._contact()
        self._backoff.reset()
        first = self._resolver.table is None
        touched = self._replaceAll(
            (e.key, e.value) for e in snapshot.entries
        )
        self.revision = snapshot.revision
        if first:
            self._resolver.replace(
                RouteTable().withChanges(
                    self._changes(set(self._hosts)), self._resolver.balancer
                )
            )
            log.info(
                "etcd: loaded {hosts} hosts from {prefix} at revision {revision}",
                hosts=len(self._hosts),
                prefix=self.prefix,
                revision=self.revision,
            )
        else:
            self._publish(touched)
            log.info(
                "etcd: re-listed {prefix} at revision {revision}: "
                "{changed} hosts changed",
                prefix=self.prefix,
                revision=self.revision,
                changed=len(touched),
            )
        self._startWatch()

    def _loadFailed(self, reason: Failure) -> None:
        self._pending = None
        if not self.running:
            return
        delay = self._backoff.next()
        serving = (
            "serving 503 until routes load"
            if self._resolver.table is None
            else "the last routes keep serving"
        )
        log.warn(
            "etcd: cannot read routes under {prefix}: {error}; retrying in "
            "{delay:.1f}s ({serving})",
            prefix=self.prefix,
            error=reason.getErrorMessage(),
            delay=delay,
            serving=serving,
        )
        self._retry = self._clock.callLater(delay, self._load)

    def _replaceAll(self, entries: Iterable[tuple[bytes, bytes]]) -> set[str]:
        """
        Replace the mirror of etcd's keys with C{entries}; return the hosts
        whose upstreams may have changed.
        """
        oldHosts = self._hosts
        self._keys = {}
        self._hosts = {}
        skipped: set[str] = set()
        for key, value in entries:
            self._put(key, value, skipped)
        self.skipped = skipped
        touched = set(oldHosts) | set(self._hosts)
        return {
            h for h in touched if oldHosts.get(h) != self._hosts.get(h)
        }

    # -- applying changes ----------------------------------------------------

    def _put(self, rawKey: bytes, value: bytes, skipped: set[str]) -> set[str]:
        """
        Record a PUT of C{rawKey}; return the hosts it touched.
        """
        touched = self._delete(rawKey)
        try:
            key = rawKey.decode("utf-8")
        except UnicodeDecodeError:
            key = rawKey.decode("utf-8", "backslashreplace")
            self._skip(key, skipped, f"key {key!r} is not UTF-8")
            return touched
        try:
            host, upstream = parseRouteKey(key, self.prefix, value)
        except RouteError as e:
            self._skip(key, skipped, str(e))
            return touched
        self._keys[key] = (host, upstream)
        self._hosts.setdefault(host, {})[key] = upstream
        touched.add(host)
        return touched

    def _skip(self, key: str, skipped: set[str], why: str) -> None:
        if key not in self.skipped:
            log.warn("etcd: skipping route {why}", key=key, why=why)
        skipped.add(key)

    def _delete(self, rawKey: bytes) -> set[str]:
        """
        Forget C{rawKey}; return the host it touched, if any.
        """
        key = rawKey.decode("utf-8", "backslashreplace")
        self.skipped.discard(key)
        old = self._keys.pop(key, None)
        if old is None:
            return set()
        host = old[0]
        upstreams = self._hosts[host]
        del upstreams[key]
        if not upstreams:
            del self._hosts[host]
        return {host}

    def _changes(self, hosts: set[str]) -> dict[str, tuple[Upstream, ...] | None]:
        """
        The current upstreams of C{hosts}, in key order (so that every proxy
        node builds the same table), L{None} for a host with none left.
        """
        changes: dict[str, tuple[Upstream, ...] | None] = {}
        for host in hosts:
            upstreams = self._hosts.get(host)
            changes[host] = (
                tuple(upstreams[k] for k in sorted(upstreams)) if upstreams else None
            )
        return changes

    def _publish(self, hosts: set[str]) -> None:
        """
        Swap in a table with the current upstreams of C{hosts}.
        """
        if hosts:
            self._resolver.apply(self._changes(hosts))

    def _onEvents(self, batch: Any) -> None:
        if batch.revision <= self.revision:
            return
        self._contact()
        self._backoff.reset()
        put = EventType.PUT
        touched: set[str] = set()
        for event in batch.events:
            if event.type == put:
                touched |= self._put(event.key, event.value, self.skipped)
            else:
                touched |= self._delete(event.key)
        self.revision = batch.revision
        self._publish(touched)

    def _onProgress(self, revision: int) -> None:
        self._contact()
        if revision > self.revision:
            self.revision = revision

    def _contact(self) -> None:
        self.lastContact = self._clock.seconds()
        if self._unreachableLogged:
            self._unreachableLogged = False
            log.info("etcd: reachable again")

    # -- watching ------------------------------------------------------------

    def _startWatch(self) -> None:
        self._retry = None
        if not self.running:
            return
        watch = self._store.watch(
            self._prefixBytes, self.revision + 1, self._onEvents, self._onProgress
        )
        self._watch = watch
        watch.ended.addCallbacks(self._watchEnded, self._watchFailed)
        watch.ended.addErrback(self._unexpected)
        self._scheduleProbe()

    def _watchEnded(self, ended: Any) -> None:
        self._watch = None
        self._stopProbe()
        if not self.running:
            return
        reasons = EndReason
        if ended.reason == reasons.COMPACTED:
            self.resyncs += 1
            log.info(
                "etcd: history compacted at revision {compacted} past our "
                "revision {revision}; re-listing",
                compacted=ended.compactRevision,
                revision=self.revision,
            )
            self._load()
            return
        if ended.reason == reasons.CANCELLED and not self._restartWatch:
            return
        self._restartWatch = False
        self.reconnects += 1
        delay = self._backoff.next()
        self._unreachableLogged = True
        log.warn(
            "etcd: watch ended ({reason}: {detail}); watching again from "
            "revision {next} in {delay:.1f}s, the last routes keep serving",
            reason=ended.reason.value,
            detail=ended.detail,
            next=self.revision + 1,
            delay=delay,
        )
        self._retry = self._clock.callLater(delay, self._startWatch)

    def _watchFailed(self, reason: Failure) -> None:
        # Our own callback raised: the mirror may be inconsistent, so start
        # over from a fresh read.
        self._watch = None
        self._stopProbe()
        log.failure("etcd: applying a route change failed; re-listing", reason)
        if self.running:
            self._retry = self._clock.callLater(self._backoff.next(), self._load)

    # -- liveness ------------------------------------------------------------

    def _scheduleProbe(self) -> None:
        self._stopProbe()
        self._probeCall = self._clock.callLater(self.probeInterval, self._probe)

    def _stopProbe(self) -> None:
        if self._probeCall is not None and self._probeCall.active():
            self._probeCall.cancel()
        self._probeCall = None

    def _probe(self) -> None:
        self._probeCall = None
        d = self._store.getPrefix(self._probeKey)
        self._probing = d

        def ok(_: object) -> None:
            self._probing = None
            self._contact()
            if self._watch is not None:
                self._scheduleProbe()

        def failed(reason: Failure) -> None:
            self._probing = None
            watch = self._watch
            if watch is None or not self.running:
                return
            log.warn(
                "etcd: liveness probe failed ({error}); restarting the watch",
                error=reason.getErrorMessage(),
            )
            self._restartWatch = True
            watch.cancel()

        d.addCallbacks(ok, failed)
        d.addErrback(self._unexpected)

    def _unexpected(self, reason: Failure) -> None:
        if not reason.check(CancelledError):
            log.failure("etcd sync: unexpected error", reason)
