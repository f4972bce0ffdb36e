# -*- test-case-name: tests.routing.test_documents -*-
"""
Route documents: the JSON that C{revproxyctl export} writes and C{import}
and C{--routes-file} read.  An object maps each host pattern to its
upstreams, each an address (weight 1) or C{{"upstream": ADDRESS, "weight":
N}}.  Parsing checks the whole document with the proxy's own parsers before
anything uses it; this is the one parser both the proxy and C{revproxyctl}
use.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from revproxy.routing.address import RouteError, Upstream, parseHostPattern, parseUpstream
from revproxy.routing.codec import parseBalance, parseHealth

__all__ = ["DocumentError", "Routes", "parseRouteDocument", "lineOf"]

Routes = dict[str, tuple[Upstream, ...]]


class DocumentError(ValueError):
    """
    A route document that does not parse.

    @ivar host: the host (as written) of the first problem, if it is about
        one host.
    @ivar line: the line of the first problem, where known.
    """

    def __init__(self, message: str, host: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.line = line


class _Duplicate(Exception):
    pass


def _noDuplicateKeys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Duplicate(f"{key!r} appears twice in one JSON object")
        obj[key] = value
    return obj


def lineOf(text: str, host: str) -> int | None:
    """
    The line of C{text} where the JSON string C{host} first appears, if it
    does.
    """
    at = text.find(json.dumps(host))
    return None if at < 0 else text.count("\n", 0, at) + 1


def _documentEntry(entry: object, where: str) -> Upstream:
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


def _hostUpstreams(host: str, entries: object) -> tuple[Upstream, ...]:
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
            upstream = _documentEntry(entry, where)
        except RouteError as e:
            message = str(e)
            if not message.startswith(where):
                message = f"{where}: {message}"
            raise RouteError(message) from None
        if upstream in upstreams:
            raise RouteError(f"host {host!r}: upstream {upstream} is listed twice")
        upstreams.append(upstream)
    return tuple(upstreams)


def parseRouteDocument(text: str, source: str) -> Routes:
    """
    Parse and validate a route document: a JSON object mapping each host
    pattern to a non-empty list of upstreams.  The whole document is
    checked before it is used.

    @raise DocumentError: naming the first problem (and how many more there
        are), prefixed with C{source}.
    """
    try:
        obj = json.loads(text, object_pairs_hook=_noDuplicateKeys)
    except _Duplicate as e:
        raise DocumentError(f"{source}: {e}") from None
    except json.JSONDecodeError as e:
        raise DocumentError(f"{source}: not valid JSON: {e}", line=e.lineno) from None
    except ValueError as e:
        raise DocumentError(f"{source}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise DocumentError(
            f"{source}: expected a JSON object mapping each host to a list of "
            "upstreams"
        )
    routes: Routes = {}
    problems: list[tuple[str, str]] = []
    for rawHost, entries in obj.items():
        try:
            host = parseHostPattern(rawHost)
            if host in routes:
                raise RouteError(f"host {host!r} appears twice")
            routes[host] = _hostUpstreams(host, entries)
        except RouteError as e:
            problems.append((rawHost, str(e)))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        host, problem = problems[0]
        raise DocumentError(
            f"{source}: {problem}{more}", host=host, line=lineOf(text, host)
        )
    return routes
