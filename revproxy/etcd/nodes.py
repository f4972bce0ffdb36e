# -*- test-case-name: tests.etcd.test_nodes -*-
"""
Node registration: each proxy node keeps a record of itself under
C{<nodes prefix><node-id>} in etcd, attached to a lease, so that operators
(C{revproxyctl nodes}, C{add --wait}, the status page) can tell which nodes
are live and which etcd revision each has applied.

The record (L{NodeRecord}) is JSON: the node id, version, start time, admin
URL, applied revision, whether the watch is live, and the route count.

L{NodeRegistration} grants a lease of C{ttl} seconds, writes the record
with it and keeps the lease alive every C{ttl / 3} seconds.  After the node
applies a change it writes the record again, at most once every
C{reportInterval} seconds, so a burst of changes costs a few writes, not
one per change: the first change after a quiet spell is reported at once
(on the next turn of the reactor), the rest of a burst at most every
interval.  A node that dies disappears when its lease expires; a node cut
off from etcd finds its lease gone when etcd answers again (the keepalive
says TTL 0, or a write says "lease not found") and registers again.
Stopping the service revokes the lease, so a node that stops cleanly
disappears at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from revproxy.etcd.types import EtcdError, ILeaseStore

__all__ = [
    "DEFAULT_NODES_PREFIX",
    "NodeRecord",
    "NodeRegistration",
    "nodeKey",
    "parseNodeRecord",
]

log = Logger()

DEFAULT_NODES_PREFIX = "/revproxy/nodes/"


@dataclass(frozen=True)
class NodeRecord:
    """
    What a node says of itself in etcd.

    @ivar started: when the node started, Unix time.
    @ivar admin: the node's admin URL, or L{None} without C{--admin}.
    @ivar revision: the last etcd revision the node has applied.
    @ivar live: whether its etcd watch is running.
    @ivar routes: how many host routes it serves.
    """

    id: str
    version: str
    started: float
    admin: str | None
    revision: int
    live: bool
    routes: int

    def toJSON(self) -> bytes:
        """
        The record as the value of its key.
        """
        obj = asdict(self)
        obj["watch"] = "live" if obj.pop("live") else "down"
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def parseNodeRecord(value: bytes) -> NodeRecord | str:
    """
    Parse the value of a node key: the record, or why it does not parse.
    """
    try:
        obj = json.loads(value)
        if not isinstance(obj, dict):
            return "not a JSON object"
        admin = obj.get("admin")
        return NodeRecord(
            id=str(obj["id"]),
            version=str(obj.get("version", "")),
            started=float(obj.get("started", 0)),
            admin=None if admin is None else str(admin),
            revision=int(obj["revision"]),
            live=obj.get("watch") == "live",
            routes=int(obj.get("routes", 0)),
        )
    except (ValueError, KeyError, TypeError) as e:
        return f"not a node record ({type(e).__name__}: {e})"


def nodeKey(prefix: str, nodeId: str) -> bytes:
    """
    The key of node C{nodeId}'s record.
    """
    return (prefix + nodeId).encode("utf-8")


class NodeRegistration(Service):
    """
    Keeps this node's L{NodeRecord} in etcd under a lease (see the module).

    @param describe: the node's record now.
    @param ready: called at start; registration begins once its Deferred
        fires (e.g. when the listening ports, which name the node, are
        bound).
    @param written: called with the revision of each write of the record.
    @ivar registered: whether the record is in etcd under a live lease, as
        far as this node knows.
    @ivar reports: how many times the record was written.
    @ivar registrations: how many times a lease was granted.
    """

    name = "node-registration"

    def __init__(
        self,
        leases: ILeaseStore,
        prefix: str,
        describe: Callable[[], NodeRecord],
        clock: IReactorTime,
        ttl: int = 10,
        reportInterval: float = 0.2,
        ready: Callable[[], Deferred[Any]] | None = None,
        written: Callable[[int], object] | None = None,
    ) -> None:
        self._leases = leases
        self.prefix = prefix
        self._describe = describe
        self._clock = clock
        self.ttl = ttl
        self.reportInterval = reportInterval
        self._ready = ready
        self._onWritten = written
        self.lease: int | None = None
        self.registered = False
        self.reports = 0
        self.registrations = 0
        self._generation = 0
        self._timer: IDelayedCall | None = None
        self._reportCall: IDelayedCall | None = None
        self._inflight: Deferred[Any] | None = None
        self._writing = False
        self._dirty = False
        self._lastReport = -1e9
        #: the record last written, but for its revision (L{None}: unknown)
        self._written: NodeRecord | None = None
        self._warned = False

    @property
    def key(self) -> bytes:
        """
        The key of this node's record.
        """
        return nodeKey(self.prefix, self._describe().id)

    # -- service

    def startService(self) -> None:
        super().startService()
        generation = self._generation
        ready = self._ready() if self._ready is not None else succeed(None)

        def begin(_: object) -> None:
            if self.running and generation == self._generation:
                self._register()

        ready.addCallback(begin)
        ready.addErrback(lambda f: log.failure("node registration: not started", f))

    def stopService(self) -> Deferred[None]:
        """
        Stop reporting and revoke the lease (bounded: at most one second),
        so that the node leaves the fleet at once.
        """
        super().stopService()
        self._generation += 1
        for call in (self._timer, self._reportCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._reportCall = None
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        lease, self.lease = self.lease, None
        self.registered = False
        if lease is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        revoking = self._leases.revokeLease(lease)
        bound = self._clock.callLater(1.0, revoking.cancel)

        def finished(_: object) -> None:
            if bound.active():
                bound.cancel()
            done.callback(None)

        revoking.addBoth(finished)
        return done

    # -- registering

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._inflight = d
        generation = self._generation

        def untrack(result: object) -> object:
            if self._inflight is d:
                self._inflight = None
            if generation != self._generation:
                return None  # stopped meanwhile: drop the result
            return result

        d.addBoth(untrack)
        return d

    def _later(self, delay: float, f: Callable[[], None]) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(delay, f)

    def _retryDelay(self) -> float:
        return float(min(2.0, self.ttl / 3))

    def _register(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()  # a keepalive due: the new lease has its own
        self._timer = None
        self.registered = False
        generation = self._generation

        async def register() -> None:
            lease = await self._leases.grantLease(self.ttl)
            if generation != self._generation:
                return
            self.lease = lease
            described = self._describe()
            self._writing = True
            try:
                revision = await self._leases.putLeased(self.key, described.toJSON(), lease)
            finally:
                self._writing = False
            if generation != self._generation:
                return
            if self._onWritten is not None:
                self._onWritten(revision)
            self._written = replace(described, revision=0)
            self._lastReport = self._clock.seconds()
            self.reports += 1
            self.registrations += 1
            self.registered = True
            if self._warned:
                log.info("node registration: registered again as {key}",
                         key=self.key.decode("utf-8", "replace"))
            self._warned = False
            self._later(self.ttl / 3, self._keepAlive)
            if self._dirty:
                self._dirty = False
                self.changed()

        d = self._track(Deferred.fromCoroutine(register()))
        d.addErrback(self._registerFailed, generation)

    def _registerFailed(self, reason: Failure, generation: int) -> None:
        if generation != self._generation:
            return
        if not self._warned:
            self._warned = True
            log.warn(
                "node registration: cannot register in etcd ({error}); "
                "retrying every {delay:.1f}s",
                error=reason.getErrorMessage(),
                delay=self._retryDelay(),
            )
        self._later(self._retryDelay(), self._register)

    def _keepAlive(self) -> None:
        self._timer = None
        lease = self.lease
        if lease is None:
            self._register()
            return
        generation = self._generation

        def alive(ttl: int) -> None:
            if generation != self._generation:
                return
            if ttl <= 0:
                self._lost("its lease expired")
                return
            self._later(self.ttl / 3, self._keepAlive)
            # The revision is reported after each change; here only the rest
            # (the watch state, the route count), or a report that failed.
            # (Comparing the revision too would rewrite the record at every
            # tick: the node's own write moves its applied revision.)
            if replace(self._describe(), revision=0) != self._written:
                self.changed()

        def failed(reason: Failure) -> None:
            if generation != self._generation:
                return
            # Try again soon: if etcd stays away past the TTL, the next
            # answer will say the lease is gone and we register again.
            self._later(self._retryDelay(), self._keepAlive)

        d = self._leases.keepAliveLease(lease)
        d.addCallbacks(alive, failed)

    def _lost(self, why: str) -> None:
        log.warn("node registration: the node record is gone ({why}); "
                 "registering again", why=why)
        self._warned = True
        self.lease = None
        self._register()

    # -- reporting

    def changed(self) -> None:
        """
        The node applied a change (or its state changed): write the record
        again, at most every C{reportInterval} seconds.
        """
        if not self.registered or self._writing:
            self._dirty = True
            return
        if self._reportCall is not None and self._reportCall.active():
            return
        delay = max(0.0, self._lastReport + self.reportInterval - self._clock.seconds())
        self._reportCall = self._clock.callLater(delay, self._report)

    def _report(self) -> None:
        self._reportCall = None
        lease = self.lease
        if lease is None or not self.registered:
            self._dirty = True
            return
        generation = self._generation
        described = self._describe()
        record = described.toJSON()
        self._lastReport = self._clock.seconds()
        self._writing = True

        def written(revision: int) -> None:
            self._writing = False
            if generation != self._generation:
                return
            if self._onWritten is not None:
                self._onWritten(revision)
            self.reports += 1
            self._written = replace(described, revision=0)
            if self._dirty:
                self._dirty = False
                self.changed()

        def failed(reason: Failure) -> None:
            self._writing = False
            if generation != self._generation:
                return
            error = reason.value
            if isinstance(error, EtcdError) and error.code == 5:
                self._lost("etcd no longer knows its lease")
            else:
                # The keepalive tick writes it again once etcd answers.
                self._written = None

        self._leases.putLeased(self.key, record, lease).addCallbacks(written, failed)
