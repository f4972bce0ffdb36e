# -*- test-case-name: tests.ctl.test_main -*-
"""
C{revproxyctl}: the operators' command line for the routes in etcd.

Routes live in etcd keys C{<prefix><host>/<upstream>} whose value is empty
or C{{"weight": N}}.  The commands::

    revproxyctl [--etcd URLS] [--prefix P] [--timeout S] [--max-txn-ops N]
        add HOST UPSTREAM [UPSTREAM...] [--weight N]
        rm HOST [UPSTREAM...]
        ls [HOST] [--json]
        watch
        export
        import FILE|- [--dry-run] [--replace]

The module has a pure part (argument parsing, reading a route document,
planning changes, formatting) that does no I/O, and an I/O part: command
functions that take an L{IRouteStore}, and L{main}, the composition root,
which builds an L{EtcdClient} on the global reactor and runs a command with
L{twisted.internet.task.react}.

Every host and upstream is validated by L{revproxy.routing}, the parser the
proxy uses, before anything is written.  Every change (one C{add}, one
C{rm}, one C{import}) is one etcd transaction, guarded by a comparison of
the revision of every key it touches with the revision it was planned from,
so a concurrent writer makes it re-plan, never half-apply.

Exit statuses: 0 success (an C{add} of what is already there included); 1 the
command could not be done (etcd unreachable or failing, C{rm} of something
absent, a change too large for one transaction, concurrent changes that did
not settle); 2 bad usage or input (a bad host, upstream, option or file),
found before anything was written; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, Union, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from revproxy.config import (
    ConfigError,
    parseEtcdEndpoints,
    parseKeyPrefix,
    parsePositiveCount,
    parseSeconds,
)
from revproxy.routing import RouteError, Upstream, parseHostPattern, parseUpstream
from revproxy.routing.codec import parseStored, routeKey, routeValue

if TYPE_CHECKING:
    from revproxy.etcd.types import IRouteStore, IWatch, Snapshot, WatchEnded, WatchEvents

__all__ = [
    "Change",
    "CommandError",
    "Config",
    "Plan",
    "RouteState",
    "RouteWatcher",
    "StoredRoute",
    "UsageError",
    "buildParser",
    "formatChange",
    "formatTable",
    "main",
    "parseArgs",
    "parseRouteDocument",
    "planAdd",
    "planImport",
    "planRm",
    "readState",
    "routeDocument",
    "routeKey",
    "routeValue",
    "runAdd",
    "runExport",
    "runImport",
    "runLs",
    "runRm",
]

PROG = "revproxyctl"
DEFAULT_ETCD = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/hosts/"
DEFAULT_TIMEOUT = 5.0
#: etcd's default C{--max-txn-ops}.
DEFAULT_MAX_TXN_OPS = 128
#: How many times a change is re-read and re-planned when a concurrent writer
#: touched one of its keys between our read and our transaction.
ATTEMPTS = 5

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """
    Bad arguments or input: exit status 2, nothing written.  The message is
    one line.
    """


class CommandError(Exception):
    """
    The command could not be done: exit status 1.  The message is one line.
    """


# --------------------------------------------------------------------------
# Arguments


@dataclass(frozen=True)
class Config:
    """
    A parsed, validated command line.
    """

    command: str
    endpoints: tuple[str, ...] = (DEFAULT_ETCD,)
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    maxTxnOps: int = DEFAULT_MAX_TXN_OPS
    host: str | None = None
    upstreams: tuple[Upstream, ...] = ()
    weight: int | None = None
    json: bool = False
    file: str | None = None
    dryRun: bool = False
    replace: bool = False


class _Parser(argparse.ArgumentParser):
    """
    An argument parser that raises L{UsageError} instead of exiting, so that
    errors are one line and parsing is testable.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser.  The global options are accepted before or after
    the subcommand.
    """
    common = _Parser(add_help=False)
    # SUPPRESS: an option given before the subcommand is not overwritten by
    # the subparser's default.
    common.add_argument(
        "--etcd",
        metavar="URLS",
        default=argparse.SUPPRESS,
        help="etcd endpoints, URL[,URL...] (default: $REVPROXY_ETCD, else "
        f"{DEFAULT_ETCD})",
    )
    common.add_argument(
        "--prefix",
        metavar="P",
        default=argparse.SUPPRESS,
        help=f"etcd key prefix of the routes (default: $REVPROXY_PREFIX, else "
        f"{DEFAULT_PREFIX})",
    )
    common.add_argument(
        "--timeout",
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help=f"seconds an etcd request may take (default: {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument(
        "--max-txn-ops",
        metavar="N",
        default=argparse.SUPPRESS,
        help="the operations etcd allows in one transaction: its own "
        f"--max-txn-ops (default: {DEFAULT_MAX_TXN_OPS})",
    )

    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="Manage revproxy's routes in etcd.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[common], help=help, description=help
        )
        return p

    add = command("add", "Add upstreams to a host (an existing upstream is kept).")
    add.add_argument("host", metavar="HOST")
    add.add_argument("upstreams", metavar="UPSTREAM", nargs="+")
    add.add_argument(
        "--weight", metavar="N", help="weight of the upstreams (sets it if they exist)"
    )

    rm = command("rm", "Remove upstreams from a host, or the whole host.")
    rm.add_argument("host", metavar="HOST")
    rm.add_argument("upstreams", metavar="UPSTREAM", nargs="*")

    ls = command("ls", "List the routes, or the routes of one host.")
    ls.add_argument("host", metavar="HOST", nargs="?")
    ls.add_argument("--json", action="store_true", help="print the export format")

    command("watch", "Print route changes as they happen, until interrupted.")
    command("export", "Print every route as a JSON document for import.")

    imp = command("import", "Set the routes of the hosts in a JSON document.")
    imp.add_argument("file", metavar="FILE", help="the document, or - for stdin")
    imp.add_argument(
        "--dry-run", action="store_true", help="print the changes; write nothing"
    )
    imp.add_argument(
        "--replace", action="store_true", help="also remove the hosts not in FILE"
    )
    return parser


_T = TypeVar("_T")


def _value(source: str, parse: Callable[[str], _T], text: str) -> _T:
    """
    Parse a value with one of L{revproxy.config}'s parsers, the proxy's own.

    @param source: what to call the value in a message (an option such as
        C{--etcd}, or a variable such as C{$REVPROXY_ETCD}).
    @raise UsageError: naming C{source}.
    """
    try:
        return parse(text)
    except ConfigError as e:
        raise UsageError(f"{source}: {e}") from None


def parseEndpoints(text: str, source: str) -> tuple[str, ...]:
    """
    Validate etcd endpoints as the proxy's C{--etcd} does.

    @param source: what to call the value in a message (C{--etcd} or
        C{$REVPROXY_ETCD}).
    """
    return tuple(_value(source, parseEtcdEndpoints, text))


def parsePrefix(text: str, source: str) -> str:
    """
    Validate a key prefix as the proxy does: it starts with C{/}; a C{/} is
    added at the end if missing.
    """
    return _value(source, parseKeyPrefix, text)


def _host(text: str) -> str:
    try:
        return parseHostPattern(text)
    except RouteError as e:
        raise UsageError(str(e)) from None


def _upstreams(texts: Sequence[str], weight: int, host: str) -> tuple[Upstream, ...]:
    upstreams: list[Upstream] = []
    for text in texts:
        try:
            upstream = parseUpstream(text, weight)
        except RouteError as e:
            raise UsageError(str(e)) from None
        if upstream in upstreams:
            raise UsageError(f"host {host!r}: upstream {upstream} is listed twice")
        upstreams.append(upstream)
    return tuple(upstreams)


def parseArgs(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """
    Parse and validate a command line; C{environ} supplies
    C{REVPROXY_ETCD} and C{REVPROXY_PREFIX} for absent options.

    @raise UsageError: for anything wrong, hosts and upstreams included.
    """
    ns = buildParser().parse_args(list(argv))
    opts = vars(ns)
    if "etcd" in opts:
        endpoints = parseEndpoints(opts["etcd"], "--etcd")
    elif environ.get("REVPROXY_ETCD"):
        endpoints = parseEndpoints(environ["REVPROXY_ETCD"], "$REVPROXY_ETCD")
    else:
        endpoints = (DEFAULT_ETCD,)
    if "prefix" in opts:
        prefix = parsePrefix(opts["prefix"], "--prefix")
    elif environ.get("REVPROXY_PREFIX"):
        prefix = parsePrefix(environ["REVPROXY_PREFIX"], "$REVPROXY_PREFIX")
    else:
        prefix = DEFAULT_PREFIX
    timeout = (
        _value("--timeout", parseSeconds, opts["timeout"])
        if "timeout" in opts
        else DEFAULT_TIMEOUT
    )
    maxTxnOps = (
        _value("--max-txn-ops", parsePositiveCount, opts["max_txn_ops"])
        if "max_txn_ops" in opts
        else DEFAULT_MAX_TXN_OPS
    )
    command: str = ns.command
    host = _host(ns.host) if getattr(ns, "host", None) is not None else None
    weight = None
    upstreams: tuple[Upstream, ...] = ()
    if command == "add":
        if ns.weight is not None:
            weight = _value("--weight", parsePositiveCount, ns.weight)
        assert host is not None
        upstreams = _upstreams(ns.upstreams, weight or 1, host)
    elif command == "rm":
        assert host is not None
        upstreams = _upstreams(ns.upstreams, 1, host)
    return Config(
        command=command,
        endpoints=endpoints,
        prefix=prefix,
        timeout=timeout,
        maxTxnOps=maxTxnOps,
        host=host,
        upstreams=upstreams,
        weight=weight,
        json=bool(getattr(ns, "json", False)),
        file=getattr(ns, "file", None),
        dryRun=bool(getattr(ns, "dry_run", False)),
        replace=bool(getattr(ns, "replace", False)),
    )


# --------------------------------------------------------------------------
# Route documents (import and export)

#: An upstream in a document: an address (weight 1) or an object.
DocumentEntry = Union[str, dict[str, Any]]
Routes = dict[str, tuple[Upstream, ...]]


def _noDuplicateKeys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise UsageError(f"{key!r} appears twice in one JSON object")
        obj[key] = value
    return obj


def _documentEntry(entry: object, host: str, where: str) -> Upstream:
    if isinstance(entry, str):
        return parseUpstream(entry)
    if isinstance(entry, dict):
        unknown = set(entry) - {"upstream", "weight"}
        if unknown:
            raise RouteError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        address = entry.get("upstream")
        if not isinstance(address, str):
            raise RouteError(f'{where}: "upstream" must be an address string')
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise RouteError(
                f"{where}: weight {weight!r} is not a whole number of at least 1"
            )
        return parseUpstream(address, weight)
    raise RouteError(
        f'{where}: expected an address or {{"upstream": ADDRESS, "weight": N}}'
    )


def parseRouteDocument(text: str, source: str) -> Routes:
    """
    Parse and validate a route document: a JSON object mapping each host
    pattern to a non-empty list of upstreams, each an address string (weight
    1) or C{{"upstream": ADDRESS, "weight": N}}.  The whole document is
    checked before it is used.

    @raise UsageError: naming the first problem (and how many more there
        are), prefixed with C{source}.
    """
    try:
        obj = json.loads(text, object_pairs_hook=_noDuplicateKeys)
    except UsageError as e:
        raise UsageError(f"{source}: {e}") from None
    except ValueError as e:
        raise UsageError(f"{source}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise UsageError(
            f"{source}: expected a JSON object mapping each host to a list of "
            "upstreams"
        )
    routes: Routes = {}
    problems: list[str] = []
    for rawHost, entries in obj.items():
        try:
            host = parseHostPattern(rawHost)
            if host in routes:
                raise RouteError(f"host {host!r} appears twice")
            if not isinstance(entries, list):
                raise RouteError(f"host {host!r}: expected a list of upstreams")
            if not entries:
                raise RouteError(
                    f"host {host!r}: no upstreams (remove a host with rm, or "
                    "import --replace without it)"
                )
            upstreams: list[Upstream] = []
            for i, entry in enumerate(entries, 1):
                where = f"host {host!r}, upstream #{i}"
                try:
                    upstream = _documentEntry(entry, host, where)
                except RouteError as e:
                    message = str(e)
                    if not message.startswith(where):
                        message = f"{where}: {message}"
                    raise RouteError(message) from None
                if upstream in upstreams:
                    raise RouteError(
                        f"host {host!r}: upstream {upstream} is listed twice"
                    )
                upstreams.append(upstream)
            routes[host] = tuple(upstreams)
        except RouteError as e:
            problems.append(str(e))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UsageError(f"{source}: {problems[0]}{more}; nothing was written")
    return routes


def documentEntry(upstream: Upstream) -> DocumentEntry:
    """
    An upstream as a document entry: the address alone for weight 1, else an
    object with its weight.
    """
    if upstream.weight == 1:
        return str(upstream)
    return {"upstream": str(upstream), "weight": upstream.weight}


# --------------------------------------------------------------------------
# The routes in etcd


@dataclass(frozen=True)
class StoredRoute:
    """
    One route key as read from etcd.
    """

    key: bytes
    host: str
    upstream: Upstream
    modRevision: int


@dataclass(frozen=True)
class RouteState:
    """
    The route keys under a prefix at one revision, parsed as the proxy parses
    them.

    @ivar routes: the keys that parse, in key order (the order the proxy
        uses).
    @ivar skipped: C{(key, reason)} for the keys that do not parse; the proxy
        skips them too.
    """

    revision: int
    routes: tuple[StoredRoute, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def hosts(self) -> dict[str, list[StoredRoute]]:
        """
        The routes by host, hosts sorted, each host's routes in key order.
        """
        byHost: dict[str, list[StoredRoute]] = {}
        for route in self.routes:
            byHost.setdefault(route.host, []).append(route)
        return {h: byHost[h] for h in sorted(byHost)}


def readState(
    revision: int, entries: Iterable[tuple[bytes, bytes, int]], prefix: str
) -> RouteState:
    """
    Parse C{(key, value, mod_revision)} entries read from etcd.
    """
    routes: list[StoredRoute] = []
    skipped: list[tuple[str, str]] = []
    for key, value, modRevision in sorted(entries):
        parsed = parseStored(key, value, prefix)
        if isinstance(parsed, str):
            skipped.append((key.decode("utf-8", "backslashreplace"), parsed))
        else:
            routes.append(StoredRoute(key, parsed[0], parsed[1], modRevision))
    return RouteState(revision, tuple(routes), tuple(skipped))


def routeDocument(state: RouteState) -> tuple[dict[str, list[DocumentEntry]], list[str]]:
    """
    The routes as an import document, and warnings: an upstream that two
    keys of a host name alike is listed once (with the first key's weight).
    """
    document: dict[str, list[DocumentEntry]] = {}
    warnings: list[str] = []
    for host, routes in state.hosts().items():
        seen: list[Upstream] = []
        for route in routes:
            if route.upstream in seen:
                warnings.append(
                    f"host {host!r}: upstream {route.upstream} has two keys; "
                    f"exported once (key {route.key.decode()!r} left out)"
                )
                continue
            seen.append(route.upstream)
        document[host] = [documentEntry(u) for u in seen]
    return document, warnings


def formatTable(state: RouteState, host: str | None = None) -> str:
    """
    A table of the routes (of one host if given), with a header line:
    columns HOST, UPSTREAM, WEIGHT; hosts sorted, upstreams in key order.
    """
    rows = [("HOST", "UPSTREAM", "WEIGHT")]
    for h, routes in state.hosts().items():
        if host is not None and h != host:
            continue
        for route in routes:
            rows.append((h, str(route.upstream), str(route.upstream.weight)))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}\n" for row in rows
    )


# --------------------------------------------------------------------------
# Planning changes


@dataclass(frozen=True)
class Change:
    """
    One key to write or delete.

    @ivar kind: C{"+"} a new route, C{"-"} a route removed, C{"~"} a weight
        changed.
    @ivar upstream: the upstream, with its new weight for C{+} and C{~}.
    @ivar mod_revision: the key's revision in the state planned from (0 for a
        new key): the transaction applies only if it is still that.
    @ivar old_weight: for C{~}, the weight before.
    """

    kind: str
    host: str
    upstream: Upstream
    key: bytes
    modRevision: int
    oldWeight: int | None = None


@dataclass(frozen=True)
class Plan:
    """
    The changes of one command, to apply in one transaction, and notes for
    the operator (e.g. an upstream already present).
    """

    changes: tuple[Change, ...]
    notes: tuple[str, ...] = field(default=())


def formatChange(change: Change, revision: int | None = None) -> str:
    """
    One line for a change: C{+ HOST UPSTREAM [weight=N]},
    C{~ HOST UPSTREAM weight=N (was M)} or C{- HOST UPSTREAM}, with
    C{revision=R} at the end if given.
    """
    parts = [change.kind, change.host, str(change.upstream)]
    if change.kind == "~":
        parts.append(f"weight={change.upstream.weight} (was {change.oldWeight})")
    elif change.kind == "+" and change.upstream.weight != 1:
        parts.append(f"weight={change.upstream.weight}")
    if revision is not None:
        parts.append(f"revision={revision}")
    return " ".join(parts)


def _put(prefix: str, host: str, upstream: Upstream) -> Change:
    return Change("+", host, upstream, routeKey(prefix, host, upstream), 0)


def _setWeight(route: StoredRoute, weight: int) -> Change:
    upstream = dataclasses.replace(route.upstream, weight=weight)
    return Change(
        "~", route.host, upstream, route.key, route.modRevision, route.upstream.weight
    )


def _remove(route: StoredRoute) -> Change:
    return Change("-", route.host, route.upstream, route.key, route.modRevision)


def _setHost(
    prefix: str, host: str, current: Sequence[StoredRoute], wanted: Sequence[Upstream]
) -> list[Change]:
    """
    The changes that give C{host} exactly the upstreams C{wanted}.  A wanted
    upstream already stored (under any spelling of its key) keeps its key.
    """
    changes: list[Change] = []
    kept: set[bytes] = set()
    for upstream in wanted:
        matches = [r for r in current if r.upstream == upstream]
        if not matches:
            changes.append(_put(prefix, host, upstream))
            continue
        first = matches[0]
        kept.add(first.key)
        if first.upstream.weight != upstream.weight:
            changes.append(_setWeight(first, upstream.weight))
    changes.extend(_remove(r) for r in current if r.key not in kept)
    return changes


def planAdd(
    state: RouteState,
    prefix: str,
    host: str,
    upstreams: Sequence[Upstream],
    weight: int | None,
) -> Plan:
    """
    Add C{upstreams} to C{host}.  An upstream already there is left alone,
    unless C{weight} is given and differs: then its weight is set.
    """
    current = state.hosts().get(host, [])
    changes: list[Change] = []
    notes: list[str] = []
    for upstream in upstreams:
        matches = [r for r in current if r.upstream == upstream]
        if not matches:
            changes.append(_put(prefix, host, upstream))
        elif weight is not None and any(r.upstream.weight != weight for r in matches):
            changes.extend(
                _setWeight(r, weight) for r in matches if r.upstream.weight != weight
            )
        else:
            notes.append(f"{host} {upstream}: already present, nothing to do")
    return Plan(tuple(changes), tuple(notes))


def planRm(state: RouteState, host: str, upstreams: Sequence[Upstream]) -> Plan:
    """
    Remove C{upstreams} from C{host}, or the whole host if none are given.

    @raise CommandError: if the host, or one of the upstreams, is absent;
        then nothing is removed.
    """
    current = state.hosts().get(host)
    if not current:
        raise CommandError(f"no such host: {host}; nothing was removed")
    if not upstreams:
        return Plan(tuple(_remove(r) for r in current))
    missing = [u for u in upstreams if not any(r.upstream == u for r in current)]
    if missing:
        names = ", ".join(str(u) for u in missing)
        raise CommandError(
            f"host {host} has no upstream {names}; nothing was removed"
        )
    changes = [_remove(r) for r in current if r.upstream in upstreams]
    notes = []
    if len(changes) == len(current):
        notes.append(f"{host}: no upstream left, the host is gone")
    return Plan(tuple(changes), tuple(notes))


def planImport(
    state: RouteState, prefix: str, routes: Mapping[str, Sequence[Upstream]], replace: bool
) -> Plan:
    """
    Give each host of C{routes} exactly its upstreams and weights; with
    C{replace}, also remove every host not in C{routes}.  Other hosts are
    left alone.
    """
    current = state.hosts()
    changes: list[Change] = []
    for host in sorted(set(routes) | (set(current) if replace else set())):
        changes.extend(_setHost(prefix, host, current.get(host, []), routes.get(host, ())))
    return Plan(tuple(changes))


def summary(changes: Sequence[Change]) -> str:
    """
    C{"N to add, M to remove, K to change"}.
    """
    count = {k: sum(1 for c in changes if c.kind == k) for k in "+-~"}
    return f"{count['+']} to add, {count['-']} to remove, {count['~']} to change"


def tooLarge(operations: int, limit: int) -> str:
    """
    The message refusing a change that does not fit in one transaction.
    """
    return (
        f"this change needs {operations} operations in one etcd transaction, "
        f"more than the limit of {limit}; nothing was written. Raise etcd's "
        "--max-txn-ops (128 by default) on every member and pass the same "
        "--max-txn-ops to revproxyctl, or split the change (e.g. import the "
        "file in parts)"
    )


# --------------------------------------------------------------------------
# Commands on a route store


def _write(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def _warnSkipped(state: RouteState, err: TextIO) -> None:
    for key, reason in state.skipped:
        _write(err, f"{PROG}: warning: skipping key {key!r}: {reason}")


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

    @return: the exit status.
    @raise CommandError: from the planner, or when the change is too large
        or the keys kept changing.
    """
    from revproxy.etcd.types import Delete, EtcdError, ModRevisionIs, Put

    for _ in range(ATTEMPTS):
        state = await readRoutes(store, config.prefix)
        plan = planner(state)
        for note in plan.notes:
            _write(out, note)
        if not plan.changes:
            if not plan.notes:
                _write(out, "nothing to change")
            return EXIT_OK
        if dryRun:
            for change in plan.changes:
                _write(out, formatChange(change))
            _write(out, f"dry run: {summary(plan.changes)}; nothing was written")
        if len(plan.changes) > config.maxTxnOps:
            raise CommandError(tooLarge(len(plan.changes), config.maxTxnOps))
        if dryRun:
            return EXIT_OK
        compare = [ModRevisionIs(c.key, c.modRevision) for c in plan.changes]
        operations = [
            Delete(c.key)
            if c.kind == "-"
            else Put(c.key, routeValue(c.upstream.weight))
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
                _write(out, formatChange(change, result.revision))
            return EXIT_OK
    raise CommandError(
        f"the routes kept changing while this change was applied ({ATTEMPTS} "
        "attempts); nothing was written; try again"
    )


async def runAdd(store: IRouteStore, config: Config, out: TextIO) -> int:
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
    )


async def runRm(store: IRouteStore, config: Config, out: TextIO) -> int:
    """
    C{rm HOST [UPSTREAM...]}.
    """
    assert config.host is not None
    host = config.host
    return await applyPlan(
        store, config, lambda s: planRm(s, host, config.upstreams), out
    )


async def runImport(
    store: IRouteStore, config: Config, routes: Routes, out: TextIO
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
    )


def _dump(document: object) -> str:
    return json.dumps(document, indent=2) + "\n"


async def runLs(store: IRouteStore, config: Config, out: TextIO, err: TextIO) -> int:
    """
    C{ls [HOST] [--json]}.
    """
    state = await readRoutes(store, config.prefix)
    _warnSkipped(state, err)
    if config.host is not None and config.host not in state.hosts():
        raise CommandError(f"no such host: {config.host}")
    if config.json:
        document, _ = routeDocument(state)
        if config.host is not None:
            document = {config.host: document[config.host]}
        out.write(_dump(document))
    elif state.routes:
        out.write(formatTable(state, config.host))
    else:
        _write(err, f"no routes under {config.prefix}")
    out.flush()
    return EXIT_OK


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
        _write(err, f"{PROG}: warning: {warning}")
    out.write(_dump(document))
    out.flush()
    return EXIT_OK


class RouteWatcher:
    """
    C{watch}: print one line per route change, as it happens, until
    L{stop}.

    It reads the routes first (so that a weight change shows as C{~} and a
    delete names its upstream) and watches from the next revision.  When the
    watch is interrupted (connection lost, an etcd error) it resumes from
    the next revision after a delay; when that revision was compacted, it
    re-reads and prints the difference.

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
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._clock = clock
        self._out = out
        self._err = err
        self._retryDelay = retryDelay
        self._maxRetryDelay = maxRetryDelay
        self._failures = 0
        self._known: dict[bytes, StoredRoute] = {}
        self._watch: IWatch | None = None
        self._reading: Deferred[Snapshot] | None = None
        self._retry: IDelayedCall | None = None
        self._stopping = False
        self.done: Deferred[int] = Deferred()

    def start(self) -> Deferred[int]:
        """
        Read the routes and start watching; return L{done}.
        """
        self._read(first=True)
        return self.done

    def stop(self) -> Deferred[int]:
        """
        Stop watching; return L{done}, which fires with 0 once the watch has
        ended.
        """
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._finish(EXIT_OK)
        elif self._watch is not None:
            self._watch.cancel()
        elif self._reading is not None:
            self._reading.cancel()
        else:
            self._finish(EXIT_OK)
        return self.done

    def _finish(self, result: int | Failure) -> None:
        if self.done.called:
            return
        if isinstance(result, Failure):
            self.done.errback(result)
        else:
            self.done.callback(result)

    def _read(self, first: bool = False) -> None:
        self._retry = None
        self._reading = self._store.getPrefix(self._prefix.encode("utf-8"))
        self._reading.addCallbacks(
            lambda snapshot: self._snapshot(snapshot, first),
            lambda f: self._readFailed(f, first),
        )

    def _readFailed(self, failure: Failure, first: bool) -> None:
        self._reading = None
        if self._stopping and failure.check(CancelledError):
            self._finish(EXIT_OK)
        elif first:
            self._finish(failure)
        else:
            self._interrupted(f"cannot read the routes: {failure.getErrorMessage()}",
                              self._read)

    def _snapshot(self, snapshot: Snapshot, first: bool) -> None:
        self._reading = None
        state = readState(
            snapshot.revision,
            ((e.key, e.value, e.modRevision) for e in snapshot.entries),
            self._prefix,
        )
        if self._stopping:
            self._finish(EXIT_OK)
            return
        new = {r.key: r for r in state.routes}
        if first:
            _write(
                self._err,
                f"watching {self._prefix} from revision {snapshot.revision + 1}",
            )
        else:
            for key in sorted(set(self._known) | set(new)):
                self._show(self._known.get(key), new.get(key), snapshot.revision)
        self._known = new
        self._startWatch(snapshot.revision + 1)

    def _startWatch(self, revision: int) -> None:
        self._retry = None
        self._watch = self._store.watch(
            self._prefix.encode("utf-8"), revision, self._events
        )
        self._watch.ended.addCallbacks(self._ended, self._watchFailed)

    def _events(self, batch: WatchEvents) -> None:
        self._failures = 0
        for event in batch.events:
            old = self._known.pop(event.key, None)
            new = None
            if event.type.value == "PUT":
                parsed = parseStored(event.key, event.value, self._prefix)
                if isinstance(parsed, str):
                    _write(self._err, f"{PROG}: warning: skipping key: {parsed}")
                else:
                    new = StoredRoute(event.key, parsed[0], parsed[1], event.modRevision)
                    self._known[event.key] = new
            self._show(old, new, event.modRevision)

    def _show(
        self, old: StoredRoute | None, new: StoredRoute | None, revision: int
    ) -> None:
        if old is None and new is not None:
            change = _put(self._prefix, new.host, new.upstream)
        elif new is None and old is not None:
            change = _remove(old)
        elif old is not None and new is not None and (
            old.upstream.weight != new.upstream.weight
        ):
            change = _setWeight(old, new.upstream.weight)
        else:
            return
        _write(self._out, formatChange(change, revision))

    def _ended(self, ended: WatchEnded) -> None:
        self._watch = None
        reason = ended.reason.value
        if self._stopping or reason == "cancelled":
            self._finish(EXIT_OK)
        elif reason == "compacted":
            _write(
                self._err,
                f"{PROG}: revision {ended.nextRevision} was compacted; "
                "re-reading the routes",
            )
            self._read()
        else:
            detail = ended.detail or reason
            self._interrupted(
                f"watch interrupted ({detail})",
                lambda: self._startWatch(ended.nextRevision),
            )

    def _interrupted(self, why: str, again: Callable[[], None]) -> None:
        delay = min(self._maxRetryDelay, self._retryDelay * 2**self._failures)
        self._failures = min(self._failures + 1, 16)
        _write(self._err, f"{PROG}: {why}; retrying in {delay:g}s")
        self._retry = self._clock.callLater(delay, again)

    def _watchFailed(self, failure: Failure) -> None:
        self._watch = None
        self._finish(failure)


# --------------------------------------------------------------------------
# The composition root


def loadDocument(path: str, stdin: TextIO) -> Routes:
    """
    Read and validate the document of C{import}; C{-} is standard input.

    @raise UsageError: if it cannot be read or is not valid.
    """
    if path == "-":
        return parseRouteDocument(stdin.read(), "<stdin>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    return parseRouteDocument(text, path)


def describeFailure(failure: Failure, endpoints: Sequence[str]) -> str:
    """
    A one-line account of why a command failed.
    """
    from revproxy.etcd.types import EtcdError, EtcdTimeout, EtcdUnavailable

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
        return f"etcd at {where} failed: {failure.value}"
    return f"unexpected error talking to etcd at {where}: {failure.value!r}"


async def run(
    reactor: Any,
    config: Config,
    routes: Routes | None,
    out: TextIO,
    err: TextIO,
) -> None:
    """
    Build the etcd client on C{reactor} and run the command; raise
    C{SystemExit} with a non-zero status.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    from revproxy.etcd.client import EtcdClient

    agent = Agent(reactor, connectTimeout=config.timeout)
    store = EtcdClient(reactor, config.endpoints, HTTPClient(agent), config.timeout)
    finished = False
    stopping = False

    def interrupted() -> Deferred[int] | None:
        # The reactor is stopping (SIGINT, SIGTERM): a watch ends normally;
        # any other command is cut short.
        nonlocal stopping
        stopping = True
        if config.command == "watch":
            return watcher.stop()
        if not finished:
            if config.command in ("add", "rm", "import"):
                why = "the change may or may not have been applied: check with ls"
            else:
                why = "nothing was changed"
            _write(err, f"{PROG}: interrupted; {why}")
        return None

    status = EXIT_OK
    watcher = RouteWatcher(store, config.prefix, reactor, out, err)
    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        if config.command == "add":
            status = await runAdd(store, config, out)
        elif config.command == "rm":
            status = await runRm(store, config, out)
        elif config.command == "ls":
            status = await runLs(store, config, out, err)
        elif config.command == "export":
            status = await runExport(store, config, out, err)
        elif config.command == "import":
            assert routes is not None
            status = await runImport(store, config, routes, out)
        elif config.command == "watch":
            status = await watcher.start()
    except Exception:
        if stopping and config.command != "watch":
            # The failure is the interruption's doing, already reported.
            status = EXIT_INTERRUPTED
        else:
            _write(err, f"{PROG}: {describeFailure(Failure(), config.endpoints)}")
            status = EXIT_FAILED
    finished = True
    if status:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """
    The C{revproxyctl} command: parse C{argv} (default C{sys.argv[1:]}), run
    the command on the global reactor, and exit with its status.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parseArgs(args, os.environ)
        routes = (
            loadDocument(config.file, sys.stdin)
            if config.command == "import" and config.file is not None
            else None
        )
    except UsageError as e:
        _write(sys.stderr, f"{PROG}: {e}")
        raise SystemExit(EXIT_USAGE) from None

    from twisted.internet.task import react

    outcome: list[int] = []

    async def command(reactor: Any) -> None:
        try:
            await run(reactor, config, routes, sys.stdout, sys.stderr)
        except SystemExit as e:
            outcome.append(int(e.code or 0))
            raise
        outcome.append(EXIT_OK)

    try:
        react(command)
    except SystemExit as e:
        code = e.code
        if not outcome and config.command != "watch":
            # The reactor stopped (SIGINT, SIGTERM) before the command
            # finished.
            code = EXIT_INTERRUPTED
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
