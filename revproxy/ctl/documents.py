# -*- test-case-name: tests.ctl.test_documents -*-
"""
Route documents, the JSON of C{revproxyctl import} and C{export}: an object
mapping each host pattern to its upstreams, each an address (weight 1) or
C{{"upstream": ADDRESS, "weight": N, "health": {...}, "balance": P}}
(the fields of a route key's value).  Parsing checks the whole document
with the proxy's parsers before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TextIO, Union

from revproxy.ctl.args import UsageError
from revproxy.ctl.plans import RouteState
from revproxy.routing import RouteError, Upstream, parseHostPattern, parseUpstream
from revproxy.routing.codec import healthObject, parseBalance, parseHealth

__all__ = [
    "DocumentEntry",
    "documentEntry",
    "loadDocument",
    "parseRouteDocument",
    "routeDocument",
    "Routes",
]


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
        unknown = set(entry) - {"upstream", "weight", "health", "balance"}
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
        upstream = parseUpstream(address, weight)
        health = parseHealth(entry.get("health"))
        balance = parseBalance(entry.get("balance"))
        if health is not None or balance is not None:
            upstream = dataclasses.replace(upstream, health=health, balance=balance)
        return upstream
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
    An upstream as a document entry: the address alone for weight 1 and
    nothing else, else an object with its weight, health and balance.
    """
    if upstream.weight == 1 and upstream.health is None and upstream.balance is None:
        return str(upstream)
    entry: dict[str, Any] = {"upstream": str(upstream), "weight": upstream.weight}
    if upstream.health is not None:
        entry["health"] = healthObject(upstream.health)
    if upstream.balance is not None:
        entry["balance"] = upstream.balance
    return entry


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
