# -*- test-case-name: tests.routing.test_routes -*-
"""
The etcd key and value codec of a route, in both directions: one key per
upstream of a host, C{<prefix><host>/<upstream>}, whose value is empty or a
JSON object such as C{{"weight": 3}}, C{{"health": {"path": "/ready",
"interval": 2}}} (the upstream's active health check settings) or
C{{"balance": "least-requests"}} (the host's balancing policy, taken from
the first of its keys, in key order, that names one).  Other fields are
ignored.

The proxy's sync, C{revproxyctl} and the admin endpoint all read and write
keys through this module, so that a key one of them writes is a key the
others read the same way.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from revproxy.routing.address import (
    HealthCheck,
    RouteError,
    Upstream,
    parseHostPattern,
    parseUpstream,
)
from revproxy.routing.balancing import POLICIES

__all__ = [
    "parseRouteKey",
    "parseStored",
    "routeKey",
    "routeValue",
    "parseHealth",
    "parseBalance",
    "healthObject",
]


def parseRouteKey(key: str, prefix: str, value: bytes = b"") -> tuple[str, Upstream]:
    """
    Parse an etcd route key C{<prefix><host>/<upstream>} and its value.

    The upstream is everything after the host's slash, so
    C{/hosts/h/http://10.0.0.1:8080/base} works.  The value may be empty or
    anything; if it is a JSON object, C{{"weight": N}} sets the weight,
    C{"health"} the health check settings and C{"balance"} the policy.

    @raise RouteError: if the key or a JSON object value does not parse.
    """
    if not key.startswith(prefix):
        raise RouteError(f"key {key!r} is not under the prefix {prefix!r}")
    host, sep, upstream = key[len(prefix) :].partition("/")
    if not sep or not host or not upstream:
        raise RouteError(f"key {key!r} is not {prefix}<host>/<upstream>")
    try:
        pattern = parseHostPattern(host)
        obj = _parseObject(value)
        weight = _parseWeight(obj)
        parsed = parseUpstream(upstream, weight)
        health = parseHealth(obj.get("health"))
        balance = parseBalance(obj.get("balance"))
        if health is not None or balance is not None:
            parsed = dataclasses.replace(parsed, health=health, balance=balance)
        return pattern, parsed
    except RouteError as e:
        raise RouteError(f"key {key!r}: {e}") from None


def _parseObject(value: bytes) -> dict[str, Any]:
    text = value.strip()
    if not text.startswith(b"{"):
        return {}
    try:
        obj = json.loads(text)
    except ValueError:
        raise RouteError("the value is not valid JSON") from None
    if not isinstance(obj, dict):
        raise RouteError("the value is not a JSON object")
    return obj


_HEALTH_FIELDS = {
    "interval": float,
    "timeout": float,
    "rise": int,
    "fall": int,
}


def parseHealth(obj: object) -> HealthCheck | None:
    """
    The C{"health"} field of a value: an object of C{path}, C{interval},
    C{timeout} (seconds), C{rise} and C{fall} (counts), each optional.
    """
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise RouteError("health is not a JSON object")
    path = obj.get("path")
    if path is not None and (
        not isinstance(path, str) or not path.startswith("/")
        or any(c <= " " or c == "\x7f" or ord(c) > 126 for c in path)
    ):
        raise RouteError(f"health path {path!r} is not an absolute, percent-encoded path")
    values: dict[str, Any] = {"path": path}
    for name, kind in _HEALTH_FIELDS.items():
        v = obj.get(name)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (
                kind is int and not isinstance(v, int)
            ):
                raise RouteError(f"health {name} {v!r} is not a positive number")
            v = kind(v)
        values[name] = v
    return HealthCheck(**values)


def parseBalance(name: object) -> str | None:
    """
    The C{"balance"} field of a value: a policy name, or L{None}.
    """
    if name is None:
        return None
    if not isinstance(name, str) or name not in POLICIES:
        raise RouteError(
            f"balance {name!r} is not a policy (choose from {', '.join(POLICIES)})"
        )
    return name


def _parseWeight(obj: dict[str, Any]) -> int:
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


def healthObject(health: HealthCheck) -> dict[str, Any]:
    """
    The C{"health"} field of a value: the settings that are set.
    """
    return {k: v for k, v in dataclasses.asdict(health).items() if v is not None}


def routeValue(
    weight: int, health: HealthCheck | None = None, balance: str | None = None
) -> bytes:
    """
    The value of a route key: empty for weight 1 and nothing else, else a
    JSON object such as C{{"weight": N}}, with C{"health"} and
    C{"balance"} when given.
    """
    obj: dict[str, Any] = {}
    if weight != 1:
        obj["weight"] = weight
    if health is not None:
        obj["health"] = healthObject(health)
    if balance is not None:
        obj["balance"] = balance
    return json.dumps(obj).encode("ascii") if obj else b""
