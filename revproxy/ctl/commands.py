# -*- test-case-name: tests.ctl.test_commands -*-
"""
The commands of C{revproxyctl} on an L{IRouteStore}: C{add}, C{rm} and
C{import} apply a plan in one transaction guarded by the revision of every
key it touches (L{applyPlan}); C{ls} and C{export} read; C{watch}
(L{RouteWatcher}) prints each change as it happens.  L{describeFailure}
puts a failure in one line.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from revproxy.ctl.args import EXIT_OK, PROG, Config
from revproxy.ctl.documents import Routes, routeDocument
from revproxy.ctl.plans import (
    CommandError,
    Plan,
    RouteState,
    StoredRoute,
    addition,
    formatChange,
    formatTable,
    planAdd,
    planImport,
    planRm,
    readState,
    removal,
    summary,
    tooLarge,
    weightChange,
)
from revproxy.etcd.follow import Backoff, IFollowListener, PrefixFollower
from revproxy.etcd.types import (
    Delete,
    EtcdError,
    EtcdTimeout,
    EtcdUnavailable,
    IRouteStore,
    ModRevisionIs,
    Put,
    Snapshot,
    WatchEnded,
    WatchEvents,
)
from revproxy.routing.codec import parseStored, routeValue

__all__ = [
    "ATTEMPTS",
    "applyPlan",
    "describeFailure",
    "readRoutes",
    "RouteWatcher",
    "runAdd",
    "runExport",
    "runImport",
    "runLs",
    "runRm",
    "writeLine",
]

#: How many times a change is re-read and re-planned when a concurrent writer
#: touched one of its keys between our read and our transaction.
ATTEMPTS = 5


def writeLine(stream: TextIO, line: str) -> None:
    """
    Write one line to C{stream} and flush it, so that a pipe sees it now.
    """
    stream.write(line + "\n")
    stream.flush()


def _warnSkipped(state: RouteState, err: TextIO) -> None:
    for key, reason in state.skipped:
        writeLine(err, f"{PROG}: warning: skipping key {key!r}: {reason}")


async def readRoutes(store: IRouteStore, prefix: str) -> RouteState:
    """
    Read and parse the routes under C{prefix}.
    """
    snapshot = await store.getPrefix(prefix.encode("utf-8"))
    return readState(
        snapshot.revision,
        ((e.key, e.value, e.modRevision) for e in snapshot.entries),
        prefix,
    )


async def applyPlan(
    store: IRouteStore,
    config: Config,
    planner: Callable[[RouteState], Plan],
    out: TextIO,
    dryRun: bool = False,
    written: list[int] | None = None,
) -> int:
    """
    Read the routes, plan a change and apply it in one transaction, guarded
    by the revision of every key it touches.  If a concurrent writer touched
    one of them, nothing was written: read and plan again (up to
    L{ATTEMPTS} times).

    Why not several transactions for a change above etcd's limit of
    operations per transaction: the proxies would see, and a failure would
    leave, a half-applied change, and a later chunk's guard can only detect
    a conflict, not undo the earlier chunks.  A change that does not fit is
    refused before anything is written (L{tooLarge}).

    @param written: if given, gets the revision the routes are at once the
        change is applied (for C{--wait}): the transaction's, or with
        nothing to change the newest route key's.
    @return: the exit status.
    @raise CommandError: from the planner, or when the change is too large
        or the keys kept changing.
    """
    for _ in range(ATTEMPTS):
        state = await readRoutes(store, config.prefix)
        plan = planner(state)
        for note in plan.notes:
            writeLine(out, note)
        if not plan.changes:
            if not plan.notes:
                writeLine(out, "nothing to change")
            if written is not None:
                written.append(max((r.modRevision for r in state.routes), default=0))
            return EXIT_OK
        if dryRun:
            for change in plan.changes:
                writeLine(out, formatChange(change))
            writeLine(out, f"dry run: {summary(plan.changes)}; nothing was written")
        if len(plan.changes) > config.maxTxnOps:
            raise CommandError(tooLarge(len(plan.changes), config.maxTxnOps))
        if dryRun:
            return EXIT_OK
        compare = [ModRevisionIs(c.key, c.modRevision) for c in plan.changes]
        operations = [
            Delete(c.key)
            if c.kind == "-"
            else Put(
                c.key,
                routeValue(c.upstream.weight, c.upstream.health, c.upstream.balance),
            )
            for c in plan.changes
        ]
        try:
            result = await store.txn(compare, operations)
        except EtcdError as e:
            if "too many operations" in e.message:
                raise CommandError(
                    tooLarge(len(plan.changes), config.maxTxnOps).replace(
                        f"more than the limit of {config.maxTxnOps}",
                        "more than etcd allows",
                    )
                ) from None
            raise
        if result.succeeded:
            for change in plan.changes:
                writeLine(out, formatChange(change, result.revision))
            if written is not None:
                written.append(result.revision)
            return EXIT_OK
    raise CommandError(
        f"the routes kept changing while this change was applied ({ATTEMPTS} "
        "attempts); nothing was written; try again"
    )


async def runAdd(
    store: IRouteStore, config: Config, out: TextIO, written: list[int] | None = None
) -> int:
    """
    C{add HOST UPSTREAM... [--weight N]}.
    """
    assert config.host is not None
    host = config.host
    return await applyPlan(
        store,
        config,
        lambda s: planAdd(s, config.prefix, host, config.upstreams, config.weight),
        out,
        written=written,
    )


async def runRm(
    store: IRouteStore, config: Config, out: TextIO, written: list[int] | None = None
) -> int:
    """
    C{rm HOST [UPSTREAM...]}.
    """
    assert config.host is not None
    host = config.host
    return await applyPlan(
        store, config, lambda s: planRm(s, host, config.upstreams), out, written=written
    )


async def runImport(
    store: IRouteStore,
    config: Config,
    routes: Routes,
    out: TextIO,
    written: list[int] | None = None,
) -> int:
    """
    C{import FILE [--dry-run] [--replace]}, with the already validated
    document C{routes}.
    """
    return await applyPlan(
        store,
        config,
        lambda s: planImport(s, config.prefix, routes, config.replace),
        out,
        dryRun=config.dryRun,
        written=None if config.dryRun else written,
    )


def _dump(document: object) -> str:
    return json.dumps(document, indent=2) + "\n"


async def runLs(
    store: IRouteStore,
    config: Config,
    out: TextIO,
    err: TextIO,
    fetch: Callable[[str], Awaitable[bytes]] | None = None,
) -> int:
    """
    C{ls [HOST] [--json] [--admin URL]}: with C{--admin}, C{fetch} reads
    the node's C{/routes} for each upstream's health.
    """
    state = await readRoutes(store, config.prefix)
    _warnSkipped(state, err)
    health = None
    if config.admin is not None and fetch is not None and not config.json:
        health = await adminHealth(config.admin, fetch)
    if config.host is not None and config.host not in state.hosts():
        raise CommandError(f"no such host: {config.host}")
    if config.json:
        document, _ = routeDocument(state)
        if config.host is not None:
            document = {config.host: document[config.host]}
        out.write(_dump(document))
    elif state.routes:
        out.write(formatTable(state, config.host, health))
    else:
        writeLine(err, f"no routes under {config.prefix}")
    out.flush()
    return EXIT_OK


async def adminHealth(
    admin: str, fetch: Callable[[str], Awaitable[bytes]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """
    Each upstream's health entry in the C{/routes} of the node at C{admin},
    by host and upstream.

    @raise CommandError: if it cannot be read.
    """
    url = admin + "/routes"
    try:
        document = json.loads(await fetch(url))
        hosts = document["hosts"]
        return {
            host: {entry["upstream"]: entry for entry in entries}
            for host, entries in hosts.items()
        }
    except CommandError:
        raise
    except Exception as e:
        raise CommandError(f"cannot read {url}: {e}") from None


async def runExport(
    store: IRouteStore, config: Config, out: TextIO, err: TextIO
) -> int:
    """
    C{export}: every route as an import document.
    """
    state = await readRoutes(store, config.prefix)
    _warnSkipped(state, err)
    document, warnings = routeDocument(state)
    for warning in warnings:
        writeLine(err, f"{PROG}: warning: {warning}")
    out.write(_dump(document))
    out.flush()
    return EXIT_OK


@implementer(IFollowListener)
class RouteWatcher:
    """
    C{watch}: print one line per route change, as it happens, until
    L{stop}.

    The loop is L{PrefixFollower}'s, the proxy's own: it reads the routes
    first (so that a weight change shows as C{~} and a delete names its
    upstream) and watches from the next revision.  When the watch is
    interrupted (connection lost, an etcd error, a failed liveness probe) it
    resumes from the next revision after a delay that doubles from
    C{retryDelay} up to C{maxRetryDelay} (no jitter: one watcher has no
    herd to spread); when that revision was compacted, it re-reads and
    prints the difference.

    @ivar done: fires with the exit status once stopped, or fails if the
        first read fails.
    """

    def __init__(
        self,
        store: IRouteStore,
        prefix: str,
        clock: IReactorTime,
        out: TextIO,
        err: TextIO,
        retryDelay: float = 1.0,
        maxRetryDelay: float = 10.0,
        probeInterval: float | None = 5.0,
    ) -> None:
        self._prefix = prefix
        self._out = out
        self._err = err
        self._follower = PrefixFollower(
            store,
            prefix.encode("utf-8"),
            self,
            clock,
            Backoff(retryDelay, maxRetryDelay, None),
            probeInterval,
        )
        self._known: dict[bytes, StoredRoute] = {}
        self._listed = False
        self._probeError: str | None = None
        self.done: Deferred[int] = Deferred()

    def start(self) -> Deferred[int]:
        """
        Read the routes and start watching; return L{done}.
        """
        self._follower.start()
        return self.done

    def stop(self) -> Deferred[int]:
        """
        Stop watching; return L{done}, which fires with 0 once the watch has
        ended.
        """
        self._follower.stop().addCallback(lambda _: self._finish(EXIT_OK))
        return self.done

    def _fail(self, failure: Failure) -> None:
        self._follower.stop().addCallback(lambda _: self._finish(failure))

    def _finish(self, result: int | Failure) -> None:
        if self.done.called:
            return
        if isinstance(result, Failure):
            self.done.errback(result)
        else:
            self.done.callback(result)

    # -- IFollowListener

    def snapshot(self, snapshot: Snapshot, first: bool) -> None:
        state = readState(
            snapshot.revision,
            ((e.key, e.value, e.modRevision) for e in snapshot.entries),
            self._prefix,
        )
        new = {r.key: r for r in state.routes}
        self._listed = True
        if first:
            writeLine(
                self._err,
                f"watching {self._prefix} from revision {snapshot.revision + 1}",
            )
        else:
            for key in sorted(set(self._known) | set(new)):
                self._show(self._known.get(key), new.get(key), snapshot.revision)
        self._known = new

    def events(self, batch: WatchEvents) -> None:
        for event in batch.events:
            old = self._known.pop(event.key, None)
            new = None
            if event.type.value == "PUT":
                parsed = parseStored(event.key, event.value, self._prefix)
                if isinstance(parsed, str):
                    writeLine(self._err, f"{PROG}: warning: skipping key: {parsed}")
                else:
                    new = StoredRoute(event.key, parsed[0], parsed[1], event.modRevision)
                    self._known[event.key] = new
            self._show(old, new, event.modRevision)

    def progress(self, revision: int) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def listFailed(self, reason: Failure, delay: float) -> None:
        if not self._listed:
            # The routes could not be read at all: fail at once.
            self._fail(reason)
        else:
            self._retrying(f"cannot read the routes: {reason.getErrorMessage()}", delay)

    def interrupted(self, ended: WatchEnded, delay: float) -> None:
        detail = ended.detail or ended.reason.value
        if self._probeError is not None:
            # The watch was cancelled because the probe failed: say why.
            detail, self._probeError = f"liveness probe failed: {self._probeError}", None
        self._retrying(f"watch interrupted ({detail})", delay)

    def compacted(self, ended: WatchEnded) -> None:
        writeLine(
            self._err,
            f"{PROG}: revision {ended.nextRevision} was compacted; "
            "re-reading the routes",
        )

    def probeFailed(self, reason: Failure) -> None:
        self._probeError = reason.getErrorMessage()

    def watchFailed(self, reason: Failure, delay: float) -> None:
        self._fail(reason)

    def _retrying(self, why: str, delay: float) -> None:
        writeLine(self._err, f"{PROG}: {why}; retrying in {delay:g}s")

    def _show(
        self, old: StoredRoute | None, new: StoredRoute | None, revision: int
    ) -> None:
        if old is None and new is not None:
            change = addition(self._prefix, new.host, new.upstream)
        elif new is None and old is not None:
            change = removal(old)
        elif old is not None and new is not None and (
            old.upstream.weight != new.upstream.weight
        ):
            change = weightChange(old, new.upstream.weight)
        else:
            return
        writeLine(self._out, formatChange(change, revision))


def describeFailure(failure: Failure, endpoints: Sequence[str]) -> str:
    """
    A one-line account of why a command failed.
    """
    where = ", ".join(endpoints)
    if failure.check(CommandError):
        return str(failure.value)
    if failure.check(EtcdUnavailable):
        problems = "; ".join(str(p) for p in cast(Exception, failure.value).args[0])
        # Each problem names its endpoint.
        return f"cannot reach etcd: {problems or where}"
    if failure.check(EtcdTimeout):
        return f"etcd at {where} did not answer in time: {failure.value}"
    if failure.check(EtcdError):
        if cast(EtcdError, failure.value).code is None:  # e.g. "... is not etcd"
            return str(failure.value)
        return f"etcd at {where} failed: {failure.value}"
    return f"unexpected error talking to etcd at {where}: {failure.getErrorMessage()}"
