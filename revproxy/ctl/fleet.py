# -*- test-case-name: tests.ctl.test_fleet -*-
"""
The fleet commands of C{revproxyctl}: C{--wait} after C{add}, C{rm} and
C{import} (L{AppliedWaiter}), C{nodes} (L{runNodes}) and C{explain}
(L{runExplain}).  They read the node records that each proxy keeps under
the nodes prefix (L{revproxy.etcd.nodes}).

C{--wait} follows the nodes prefix with the proxy's own follow loop
(L{PrefixFollower}): it is done when every live node's record says an
applied revision at or above the write's.  A node that appears meanwhile
is waited for too; one whose lease expires meanwhile is not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from revproxy.ctl.args import EXIT_OK, PROG, Config
from revproxy.ctl.commands import readRoutes, writeLine
from revproxy.ctl.plans import CommandError
from revproxy.etcd.follow import Backoff, IFollowListener, PrefixFollower
from revproxy.etcd.nodes import NodeRecord, parseNodeRecord
from revproxy.etcd.types import IRouteStore, Snapshot, WatchEnded, WatchEvents
from revproxy.routing import RouteTable, normalizeRequestHost
from revproxy.routing.balancing import roundRobin

__all__ = ["AppliedWaiter", "readNodes", "runExplain", "runNodes", "waitApplied"]


def _record(key: bytes, value: bytes, prefix: str) -> NodeRecord:
    """
    The record of C{key}; one that does not parse stands for a node that
    has applied nothing we can tell, named by its key.
    """
    parsed = parseNodeRecord(value)
    if isinstance(parsed, str):
        name = key.decode("utf-8", "replace")[len(prefix):]
        return NodeRecord(name, "", 0.0, None, -1, False, 0)
    return parsed


async def readNodes(store: IRouteStore, prefix: str) -> tuple[int, list[NodeRecord]]:
    """
    etcd's revision and the live nodes' records, by node id.
    """
    snapshot = await store.getPrefix(prefix.encode("utf-8"))
    nodes = [_record(e.key, e.value, prefix) for e in snapshot.entries]
    return snapshot.revision, sorted(nodes, key=lambda n: n.id)


@implementer(IFollowListener)
class AppliedWaiter:
    """
    Waits until every live node has applied C{revision}.

    @ivar done: fires with C{True} when they all have, C{False} on
        timeout; fails if the nodes cannot be read at all.
    @ivar nodes: the live nodes' records by key.
    """

    def __init__(
        self, store: IRouteStore, prefix: str, revision: int, clock: IReactorTime
    ) -> None:
        self.prefix = prefix
        self.revision = revision
        self.nodes: dict[bytes, NodeRecord] = {}
        self.waitedFor: list[str] = []
        self.departed: list[str] = []
        self.done: Deferred[bool] = Deferred()
        self._clock = clock
        self._timer: IDelayedCall | None = None
        self._listed = False
        self._follower = PrefixFollower(
            store, prefix.encode("utf-8"), self, clock, Backoff(0.1, 1.0, None), None
        )

    def start(self, seconds: float) -> Deferred[bool]:
        """
        Start following the nodes; give up after C{seconds}.
        """
        self._timer = self._clock.callLater(seconds, self._finish, False)
        self._follower.start()
        return self.done

    def lagging(self) -> list[NodeRecord]:
        """
        The live nodes that have not applied the revision yet.
        """
        return sorted(
            (n for n in self.nodes.values() if n.revision < self.revision),
            key=lambda n: n.id,
        )

    def _check(self) -> None:
        for node in self.nodes.values():
            if node.id not in self.waitedFor:
                self.waitedFor.append(node.id)
        if self._listed and not self.lagging():
            self._finish(True)

    def _finish(self, result: bool | Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.done.called:
            return
        self._follower.stop().addCallback(lambda _: self.done.callback(result))

    # -- IFollowListener

    def snapshot(self, snapshot: Snapshot, first: bool) -> None:
        self._listed = True
        self.nodes = {e.key: _record(e.key, e.value, self.prefix) for e in snapshot.entries}
        self._check()

    def events(self, batch: WatchEvents) -> None:
        for event in batch.events:
            if event.type.value == "PUT":
                self.nodes[event.key] = _record(event.key, event.value, self.prefix)
            else:
                gone = self.nodes.pop(event.key, None)
                if gone is not None:
                    self.departed.append(gone.id)
        self._check()

    def listFailed(self, reason: Failure, delay: float) -> None:
        if not self._listed:
            self._finish(reason)

    def watchFailed(self, reason: Failure, delay: float) -> None:
        self._finish(reason)

    def progress(self, revision: int) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def interrupted(self, ended: WatchEnded, delay: float) -> None:
        pass

    def compacted(self, ended: WatchEnded) -> None:
        pass

    def probeFailed(self, reason: Failure) -> None:
        pass


async def waitApplied(
    store: IRouteStore, config: Config, revision: int, clock: IReactorTime, out: TextIO
) -> int:
    """
    C{--wait}: wait until every live node has applied C{revision}; print
    which nodes were waited for; the exit status (1 on timeout, naming the
    nodes that lag).
    """
    assert config.wait is not None
    waiter = AppliedWaiter(store, config.nodesPrefix, revision, clock)
    started = time.monotonic()
    ok = await waiter.start(config.wait)
    took = time.monotonic() - started
    names = ", ".join(waiter.waitedFor)
    if not waiter.waitedFor:
        writeLine(out, f"no live proxy node under {config.nodesPrefix}: nothing to wait for")
        return EXIT_OK
    left = [n for n in waiter.departed if n not in {r.id for r in waiter.nodes.values()}]
    gone = f"; {', '.join(left)} left the fleet meanwhile" if left else ""
    if ok:
        writeLine(
            out,
            f"applied by all {len(waiter.nodes)} nodes in {took:.3f}s "
            f"(revision {revision}; waited for {names}{gone})",
        )
        return EXIT_OK
    late = waiter.lagging()
    described = ", ".join(
        f"{n.id} (at revision {n.revision})" if n.revision >= 0 else f"{n.id} (unreadable record)"
        for n in late
    )
    raise CommandError(
        f"timed out after {config.wait:g}s waiting for revision {revision}: "
        f"{len(late)} of {len(waiter.nodes)} nodes lag: {described} (waited for {names})"
    )


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


async def runNodes(store: IRouteStore, config: Config, out: TextIO, err: TextIO) -> int:
    """
    C{nodes [--json]}: the live nodes, with their applied revision, lag
    (behind the newest route key's revision), watch state and age.
    """
    revision, nodes = await readNodes(store, config.nodesPrefix)
    state = await readRoutes(store, config.prefix)
    routesRevision = max((r.modRevision for r in state.routes), default=0)
    now = time.time()
    rows: list[dict[str, Any]] = [
        {
            "id": n.id,
            "revision": n.revision,
            "lag": max(0, routesRevision - n.revision),
            "watch": "live" if n.live else "down",
            "age": round(now - n.started, 3),
            "routes": n.routes,
            "version": n.version,
            "admin": n.admin,
        }
        for n in nodes
    ]
    if config.json:
        out.write(json.dumps({
            "etcd_revision": revision, "routes_revision": routesRevision, "nodes": rows,
        }, indent=2) + "\n")
        out.flush()
        return EXIT_OK
    if not rows:
        writeLine(err, f"no live proxy node under {config.nodesPrefix}")
        return EXIT_OK
    table: list[tuple[str, ...]] = [("NODE", "APPLIED", "LAG", "WATCH", "AGE", "ROUTES", "ADMIN")] + [
        (r["id"], str(r["revision"]), str(r["lag"]), r["watch"], _age(r["age"]),
         str(r["routes"]), r["admin"] or "-")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        writeLine(out, "  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip())
    writeLine(out, f"{len(rows)} nodes; etcd at revision {revision}, routes at {routesRevision}")
    return EXIT_OK


async def runExplain(
    store: IRouteStore,
    config: Config,
    out: TextIO,
    err: TextIO,
    fetch: Callable[[str], Awaitable[bytes]],
) -> int:
    """
    C{explain HOST [PATH]}: which route a request for HOST takes, and why,
    from etcd's routes; then each node's view of it (its policy and each
    upstream's health) from the node's admin URL.
    """
    assert config.host is not None
    host = config.host
    state = await readRoutes(store, config.prefix)
    changes = {h: tuple(r.upstream for r in routes) for h, routes in state.hosts().items()}
    table = RouteTable().withChanges(changes, roundRobin)
    route = table.lookup(normalizeRequestHost(host.encode("utf-8")))
    path = config.path or "/"
    writeLine(out, f"request: {host} {path}")
    if route is None:
        raise CommandError(f"no route matches host {host} (and there is no * default route)")
    if route.host == host:
        why = "the exact host"
    elif route.host == "*":
        why = "the default route *: no exact or wildcard pattern matches"
    else:
        why = f"the wildcard {route.host}: no exact pattern matches"
    writeLine(out, f"route: {route.host} ({why}); routes match on the host only, "
                   "the path is passed on unchanged")
    upstreams = route.upstreams
    balance = next((u.balance for u in upstreams if u.balance), None)
    policy = (
        f"{balance} (set in the host's keys)"
        if balance
        else "the proxy's --balance (default round-robin)"
    )
    writeLine(out, f"policy: {policy}")
    for u in upstreams:
        writeLine(out, f"  upstream {u} weight {u.weight}")
    _, nodes = await readNodes(store, config.nodesPrefix)
    for node in nodes:
        if not node.admin:
            writeLine(out, f"node {node.id}: no admin URL")
            continue
        url = f"{node.admin}/routes/{host}"
        try:
            view = json.loads(await fetch(url))
        except Exception as e:
            writeLine(out, f"node {node.id}: cannot read {url}: {e}")
            continue
        health = "; ".join(
            f"{u['upstream']} {u.get('state', '?')}"
            + ("" if u.get("eligible", True) else f" ({u.get('why', '')})")
            for u in view.get("upstreams", [])
        )
        writeLine(out, f"node {node.id}: pattern {view.get('pattern')}, policy "
                       f"{view.get('policy')}, {view.get('usable')} usable: {health}")
    if not nodes:
        writeLine(err, f"{PROG}: no live proxy node under {config.nodesPrefix}: no health view")
    return EXIT_OK

