# -*- test-case-name: tests.etcd.test_sync -*-
"""
The etcd route sync: keeps the L{RouteResolver}'s table equal to the route
keys under a prefix in etcd, live.

The loop (read, watch from the next revision, back off, re-read after a
compaction, probe) is L{revproxy.etcd.follow.PrefixFollower}'s; this module
is its listener for the proxy.  It keeps a mirror of the keys (key ->
host and upstream, parsed by L{revproxy.routing.codec}, the one key and
value codec) and applies each revision's events as a diff of the hosts they
touch (O(1) in the size of the table: no re-list per event, which is what
makes Traefik's etcd provider slow at scale).  After a re-read it applies
the difference, so the routes of unchanged hosts are kept.  While etcd is
unreachable the last good table keeps serving.

A key that does not parse is skipped with one warning naming it; it never
stops the sync, and fixing the key takes effect as any change does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from revproxy.etcd.follow import Backoff, IFollowListener, PrefixFollower
from revproxy.etcd.types import (
    EventType,
    IRouteStore,
    Snapshot,
    WatchEnded,
    WatchEvents,
)
from revproxy.routing import RouteTable, Upstream
from revproxy.routing.codec import parseStored
from revproxy.routing.resolver import RouteResolver

__all__ = ["EtcdRouteSync"]

log = Logger()


@implementer(IFollowListener)
class EtcdRouteSync(Service):
    """
    Loads the routes under C{prefix} from an C{IRouteStore} into a
    L{RouteResolver} and follows every change.

    @ivar revision: the last etcd revision applied (0 before the first
        load).
    @ivar skipped: the keys skipped because they do not parse.
    @ivar appliedObservers: called after each read or batch of events is
        applied (and when the watch stops or resumes), with C{True} after a
        full read of the prefix: node reporting and the snapshot listen.
    @ivar replaceNext: when true, the next read replaces the resolver's
        table whole (one loaded from a snapshot) rather than as a diff.
    """

    name = "etcd-sync"

    def __init__(
        self,
        store: IRouteStore,
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
        self._follower = PrefixFollower(
            store,
            prefix.encode("utf-8"),
            self,
            clock,
            Backoff(
                backoffInitial,
                backoffMax,
                rng if rng is not None else random.Random(),
            ),
            probeInterval,
        )
        self.probeInterval = probeInterval
        # key -> (host, upstream) for every key that parses.
        self._keys: dict[str, tuple[str, Upstream]] = {}
        # host -> {key: upstream}
        self._hosts: dict[str, dict[str, Upstream]] = {}
        self.skipped: set[str] = set()
        self.revision = 0
        self.appliedObservers: list[Callable[[bool], object]] = []
        self.replaceNext = False

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._follower.start()

    def stopService(self) -> Deferred[None]:
        """
        Stop watching, retrying and probing; fires once the watch's
        connection is closed.
        """
        super().stopService()
        return self._follower.stop()

    def relist(self) -> str:
        """
        Read every route from etcd again and apply the difference (on
        C{SIGHUP}); return what was done, in words.
        """
        if not self.running:
            return "etcd sync not running"
        self._follower.relist()
        return f"re-listing etcd routes under {self.prefix}"

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
        return self._follower.live

    @property
    def lastContact(self) -> float | None:
        """
        When etcd last answered (a read, a watch message or a probe), on the
        injected clock; L{None} before the first answer.
        """
        return self._follower.lastContact

    @property
    def reconnects(self) -> int:
        """
        How many times the watch was started again after it ended.
        """
        return self._follower.reconnects

    @property
    def resyncs(self) -> int:
        """
        How many times the routes were re-listed because history was
        compacted.
        """
        return self._follower.resyncs

    @property
    def _backoff(self) -> Backoff:
        return self._follower.backoff

    # -- loading -------------------------------------------------------------

    def keysOf(self, host: str) -> list[str]:
        """
        The etcd keys of C{host}'s upstreams, in the order of the upstreams
        of its route (key order), as they are spelled in etcd.
        """
        upstreams = self._hosts.get(host)
        return sorted(upstreams) if upstreams else []

    def snapshot(self, snapshot: Snapshot, first: bool) -> None:
        """
        Replace the mirror with a full read and publish what changed.  The
        first table is the one the resolver did not have yet.
        """
        first = self._resolver.table is None or self.replaceNext
        self.replaceNext = False
        touched = self._replaceAll(
            (e.key, e.value) for e in snapshot.entries
        )
        self.revision = snapshot.revision  # before _publish names it
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
        self._tellApplied(True)

    def ownWrite(self, revision: int) -> None:
        """
        etcd applied a write of this node's own outside the route prefix
        (its node record) at C{revision}.  If that is the revision right
        after the applied one, no route changed in between, so the routes
        applied are etcd's at C{revision} too: the applied revision moves
        to it (the observers are not told: it changes no route).
        """
        if revision == self.revision + 1:
            self.revision = revision

    @property
    def store(self) -> IRouteStore:
        """
        The store the routes come from.
        """
        return self._store

    def _tellApplied(self, listed: bool = False) -> None:
        for observer in self.appliedObservers:
            try:
                observer(listed)
            except Exception:
                log.failure("etcd: an observer of applied revisions failed")

    def listFailed(self, reason: Failure, delay: float) -> None:
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
        key = rawKey.decode("utf-8", "backslashreplace")
        parsed = parseStored(rawKey, value, self.prefix)
        if isinstance(parsed, str):
            self._skip(key, skipped, parsed)
            return touched
        host, upstream = parsed
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
            self._resolver.apply(
                self._changes(hosts), cause=f"revision {self.revision}"
            )

    def events(self, batch: WatchEvents) -> None:
        """
        Apply one revision's events as a diff of the hosts they touch.
        Events at or below the applied revision are ignored.
        """
        if batch.revision <= self.revision:
            return
        put = EventType.PUT
        touched: set[str] = set()
        for event in batch.events:
            if event.type == put:
                touched |= self._put(event.key, event.value, self.skipped)
            else:
                touched |= self._delete(event.key)
        self.revision = batch.revision
        self._publish(touched)
        self._tellApplied()

    _onEvents = events

    def progress(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            self._tellApplied()

    def reconnected(self) -> None:
        log.info("etcd: reachable again")
        self._tellApplied()

    # -- watching ------------------------------------------------------------

    def interrupted(self, ended: WatchEnded, delay: float) -> None:
        log.warn(
            "etcd: watch ended ({reason}: {detail}); watching again from "
            "revision {next} in {delay:.1f}s, the last routes keep serving",
            reason=ended.reason.value,
            detail=ended.detail,
            next=self.revision + 1,
            delay=delay,
        )
        self._tellApplied()

    def compacted(self, ended: WatchEnded) -> None:
        log.info(
            "etcd: history compacted at revision {compacted} past our "
            "revision {revision}; re-listing",
            compacted=ended.compactRevision,
            revision=self.revision,
        )

    def probeFailed(self, reason: Failure) -> None:
        log.warn(
            "etcd: liveness probe failed ({error}); restarting the watch",
            error=reason.getErrorMessage(),
        )

    def watchFailed(self, reason: Failure, delay: float) -> None:
        log.failure("etcd: applying a route change failed; re-listing", reason)
