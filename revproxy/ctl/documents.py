# -*- test-case-name: tests.ctl.test_documents -*-
"""
Route documents, the JSON of C{revproxyctl import} and C{export}: an object
mapping each host pattern to its upstreams, each an address (weight 1) or
C{{"upstream": ADDRESS, "weight": N}}.  Parsing checks the whole document
with the proxy's parsers before anything is written.
"""

from __future__ import annotations

from typing import Any, TextIO, Union

from revproxy.ctl.args import UsageError
from revproxy.ctl.plans import RouteState
from revproxy.routing import Upstream
from revproxy.routing.codec import healthObject
from revproxy.routing.documents import DocumentError, Routes
from revproxy.routing.documents import parseRouteDocument as _parse

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


def parseRouteDocument(text: str, source: str) -> Routes:
    """
    Parse and validate a route document with the proxy's own parser
    (L{revproxy.routing.documents}).

    @raise UsageError: naming the first problem (and how many more there
        are), prefixed with C{source}.
    """
    try:
        return _parse(text, source)
    except DocumentError as e:
        raise UsageError(f"{e}; nothing was written") from None


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
