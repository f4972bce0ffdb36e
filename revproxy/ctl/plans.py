# -*- test-case-name: tests.ctl.test_plans -*-
"""
Planning changes to the routes in etcd, with no I/O: the routes as read
(L{readState} into a L{RouteState} of L{StoredRoute}s, parsed with the
proxy's codec), the L{Plan} of each command (L{planAdd}, L{planRm},
L{planImport}): the L{Change}s that one guarded transaction applies, and
how changes and routes are printed (L{formatChange}, L{formatTable}).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from revproxy.routing import Upstream
from revproxy.routing.codec import parseStored, routeKey

__all__ = [
    "addition",
    "Change",
    "CommandError",
    "formatChange",
    "formatTable",
    "Plan",
    "planAdd",
    "planImport",
    "planRm",
    "readState",
    "removal",
    "RouteState",
    "StoredRoute",
    "summary",
    "tooLarge",
    "weightChange",
]


class CommandError(Exception):
    """
    The command could not be done: exit status 1.  The message is one line.
    """


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


def formatTable(
    state: RouteState,
    host: str | None = None,
    health: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    """
    A table of the routes (of one host if given), with a header line:
    columns HOST, UPSTREAM, WEIGHT; hosts sorted, upstreams in key order.
    With C{health} (host -> upstream -> its entry in a node's C{/routes}),
    also STATE, FAILURES, INFLIGHT and CHECK (the last active check).
    """
    header: tuple[str, ...] = ("HOST", "UPSTREAM", "WEIGHT")
    if health is not None:
        header += ("STATE", "FAILURES", "INFLIGHT", "CHECK")
    rows = [header]
    for h, routes in state.hosts().items():
        if host is not None and h != host:
            continue
        for route in routes:
            row: tuple[str, ...] = (h, str(route.upstream), str(route.upstream.weight))
            if health is not None:
                row += _healthColumns(health.get(h, {}).get(str(route.upstream)))
            rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "".join(
        "  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip() + "\n"
        for row in rows
    )


def _healthColumns(entry: Mapping[str, Any] | None) -> tuple[str, ...]:
    """
    STATE, FAILURES, INFLIGHT and CHECK of one upstream's C{/routes} entry.
    """
    if entry is None:
        return ("not-loaded", "-", "-", "-")
    state = str(entry.get("state", "unknown"))
    if state == "ejected" and entry.get("ejected_for") is not None:
        state = f"ejected({entry['ejected_for']:.0f}s)"
    check = entry.get("last_check")
    checked = "-" if not check else (
        f"{'pass' if check.get('passed') else 'fail'} {check.get('seconds_ago', 0):.0f}s ago"
    )
    return (
        state,
        str(entry.get("consecutive_failures", "-")),
        str(entry.get("requests_in_flight", entry.get("inflight", "-"))),
        checked,
    )


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
    @ivar valueChanged: for C{~}, whether the health or balance fields of
        the value change too.
    """

    kind: str
    host: str
    upstream: Upstream
    key: bytes
    modRevision: int
    oldWeight: int | None = None
    valueChanged: bool = False


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
        if change.upstream.weight != change.oldWeight or not change.valueChanged:
            parts.append(f"weight={change.upstream.weight} (was {change.oldWeight})")
        if change.valueChanged:
            parts.append("health/balance changed")
    elif change.kind == "+" and change.upstream.weight != 1:
        parts.append(f"weight={change.upstream.weight}")
    if revision is not None:
        parts.append(f"revision={revision}")
    return " ".join(parts)


def addition(prefix: str, host: str, upstream: Upstream) -> Change:
    return Change("+", host, upstream, routeKey(prefix, host, upstream), 0)


def weightChange(route: StoredRoute, weight: int) -> Change:
    upstream = dataclasses.replace(route.upstream, weight=weight)
    return Change(
        "~", route.host, upstream, route.key, route.modRevision, route.upstream.weight
    )


def removal(route: StoredRoute) -> Change:
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
            changes.append(addition(prefix, host, upstream))
            continue
        first = matches[0]
        kept.add(first.key)
        old = first.upstream
        if old.weight != upstream.weight:
            changes.append(weightChange(first, upstream.weight))
        if (old.health, old.balance) != (upstream.health, upstream.balance):
            if changes and changes[-1].key == first.key:
                changes.pop()
            changes.append(Change(
                "~", host, upstream, first.key, first.modRevision, old.weight,
                valueChanged=True,
            ))
    changes.extend(removal(r) for r in current if r.key not in kept)
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
            changes.append(addition(prefix, host, upstream))
        elif weight is not None and any(r.upstream.weight != weight for r in matches):
            changes.extend(
                weightChange(r, weight) for r in matches if r.upstream.weight != weight
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
        return Plan(tuple(removal(r) for r in current))
    missing = [u for u in upstreams if not any(r.upstream == u for r in current)]
    if missing:
        names = ", ".join(str(u) for u in missing)
        raise CommandError(
            f"host {host} has no upstream {names}; nothing was removed"
        )
    changes = [removal(r) for r in current if r.upstream in upstreams]
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
