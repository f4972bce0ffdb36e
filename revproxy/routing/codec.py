# -*- test-case-name: tests.routing.test_routes -*-
"""
The etcd key and value codec of a route, in both directions: one key per
upstream of a host, C{<prefix><host>/<upstream>}, whose value is empty or a
JSON object such as C{{"weight": 3}}.

The proxy's sync, C{revproxyctl} and the admin endpoint all read and write
keys through this module, so that a key one of them writes is a key the
others read the same way.
"""

from __future__ import annotations

import json

from revproxy.routing.address import (
    RouteError,
    Upstream,
    parseHostPattern,
    parseUpstream,
)

__all__ = ["parseRouteKey", "parseStored", "routeKey", "routeValue"]


def parseRouteKey(key: str, prefix: str, value: bytes = b"") -> tuple[str, Upstream]:
    """
    Parse an etcd route key C{<prefix><host>/<upstream>} and its value.

    The upstream is everything after the host's slash, so
    C{/hosts/h/http://10.0.0.1:8080/base} works.  The value may be empty or
    anything; if it is a JSON object, C{{"weight": N}} sets the weight.

    @raise RouteError: if the key or a JSON object value does not parse.
    """
    if not key.startswith(prefix):
        raise RouteError(f"key {key!r} is not under the prefix {prefix!r}")
    host, sep, upstream = key[len(prefix) :].partition("/")
    if not sep or not host or not upstream:
        raise RouteError(f"key {key!r} is not {prefix}<host>/<upstream>")
    try:
        pattern = parseHostPattern(host)
        weight = _parseWeight(value)
        return pattern, parseUpstream(upstream, weight)
    except RouteError as e:
        raise RouteError(f"key {key!r}: {e}") from None


def _parseWeight(value: bytes) -> int:
    text = value.strip()
    if not text.startswith(b"{"):
        return 1
    try:
        obj = json.loads(text)
    except ValueError:
        raise RouteError("the value is not valid JSON") from None
    if not isinstance(obj, dict):
        raise RouteError("the value is not a JSON object")
    weight = obj.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise RouteError(f"weight {weight!r} is not a whole number of at least 1")
    return weight


def parseStored(
    key: bytes, value: bytes, prefix: str
) -> tuple[str, Upstream] | str:
    """
    Parse one route key and its value: the host and upstream, or why it does
    not parse.
    """
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return f"key {key!r} is not UTF-8"
    try:
        return parseRouteKey(text, prefix, value)
    except RouteError as e:
        return str(e)


def routeKey(prefix: str, host: str, upstream: Upstream) -> bytes:
    """
    The key of a new route: C{<prefix><host>/<upstream>}, in the canonical
    spelling of the upstream.
    """
    return f"{prefix}{host}/{upstream}".encode("utf-8")


def routeValue(weight: int) -> bytes:
    """
    The value of a route key: empty for weight 1, else C{{"weight": N}}.
    """
    return b"" if weight == 1 else json.dumps({"weight": weight}).encode("ascii")
