# -*- test-case-name: tests.routing.test_routes -*-
"""
Upstream addresses and host patterns: what an operator writes, parsed and
validated in one place.

Everything here is frozen data and plain functions.  Nothing imports
L{twisted.internet}: the command line, the etcd sync and C{revproxyctl} all
parse and validate through this module, so that a route accepted by one is
accepted by all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "RouteError",
    "HealthCheck",
    "Upstream",
    "parseUpstream",
    "parseHostPattern",
    "parseRoute",
    "normalizeRequestHost",
]


class RouteError(ValueError):
    """
    A route, host pattern or upstream address does not parse.  The message is
    one line, meant for the person who wrote the bad value.
    """


_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """
    An upstream's active health check settings, as its etcd value may
    override them (C{{"health": {"path": "/ready", "interval": 2}}}); a
    field left L{None} takes the proxy's C{--health-*} option.
    """

    path: str | None = None
    interval: float | None = None
    timeout: float | None = None
    rise: int | None = None
    fall: int | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    """
    One server that requests can be forwarded to.

    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: a DNS name or an IP literal (IPv6 without brackets).
    @ivar port: the TCP port.
    @ivar base_path: a path prefix joined with every request path, as bytes,
        or C{b""} for none.
    @ivar weight: the relative weight for weighted balancing policies.
    @ivar health: the health check settings its etcd value overrides, or
        L{None}.
    @ivar balance: the balancing policy named in its etcd value, or
        L{None}; a host takes the first one of its keys names.
    """

    scheme: str
    host: str
    port: int
    basePath: bytes = b""
    weight: int = field(default=1, compare=False)
    health: HealthCheck | None = field(default=None, compare=False)
    balance: str | None = field(default=None, compare=False)
    name: str = field(init=False, compare=False, repr=False)
    """The canonical text form, as C{str} gives it."""

    @property
    def authority(self) -> str:
        """
        C{host:port}, with an IPv6 literal in brackets.
        """
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> tuple[str, str, int]:
        """
        What identifies the connections to this upstream: two upstreams with
        the same key can share pooled connections.
        """
        return (self.scheme, self.host, self.port)

    def __post_init__(self) -> None:
        if self.scheme == "http" and not self.basePath:
            name = self.authority
        else:
            name = f"{self.scheme}://{self.authority}{self.basePath.decode('ascii')}"
        object.__setattr__(self, "name", name)

    def __str__(self) -> str:
        return self.name


def _checkDnsName(name: str, what: str) -> str:
    """
    Validate a DNS name (lower-cased, without a trailing dot) and return it.
    """
    if not name:
        raise RouteError(f"empty {what}")
    if len(name) > 253:
        raise RouteError(f"{what} {name!r} is longer than 253 characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise RouteError(f"invalid {what} {name!r}")
    return name


def _parseIp(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parseUpstream(text: str, weight: int = 1) -> Upstream:
    """
    Parse an upstream address in any of the accepted forms:
    C{host:port}, C{[v6]:port}, C{http://host[:port][/base]},
    C{https://host[:port][/base]}.

    @raise RouteError: if C{text} is none of those.
    """
    original = text
    text = text.strip()
    if not text:
        raise RouteError("empty upstream address")
    if weight < 1:
        raise RouteError(f"upstream {original!r}: weight must be at least 1")
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in _DEFAULT_PORTS:
            raise RouteError(
                f"upstream {original!r}: unsupported scheme {scheme!r} "
                "(use http or https)"
            )
    else:
        scheme = ""
        if "/" in text or "?" in text or "#" in text:
            raise RouteError(
                f"upstream {original!r}: a path needs the http:// or https:// form"
            )
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
        hostname = parts.hostname
    except ValueError as e:
        raise RouteError(f"upstream {original!r}: {e}") from None
    if parts.username is not None or parts.password is not None:
        raise RouteError(f"upstream {original!r}: credentials are not supported")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise RouteError(
            f"upstream {original!r}: a query or fragment is not allowed"
        )
    if not hostname:
        raise RouteError(f"upstream {original!r}: no host")
    if port is None:
        if not scheme:
            raise RouteError(f"upstream {original!r}: no port (use host:port)")
        port = _DEFAULT_PORTS[scheme]
    if port == 0:
        raise RouteError(f"upstream {original!r}: port 0 is not a port")
    if parts.netloc.startswith("["):
        ip = _parseIp(hostname)
        if ip is None or ":" not in ip:
            raise RouteError(f"upstream {original!r}: invalid IPv6 address")
        host = ip
    else:
        ip = _parseIp(hostname)
        host = ip if ip is not None else _checkDnsName(
            hostname.rstrip("."), f"host in upstream {original!r}:"
        )
    path = parts.path
    if any(c <= " " or c == "\x7f" for c in path):
        raise RouteError(f"upstream {original!r}: the path must be percent-encoded")
    try:
        basePath = path.encode("ascii")
    except UnicodeEncodeError:
        raise RouteError(
            f"upstream {original!r}: the path must be percent-encoded"
        ) from None
    return Upstream(
        scheme=scheme or "http",
        host=host,
        port=port,
        basePath=b"" if basePath == b"/" else basePath,
        weight=weight,
    )


def parseHostPattern(text: str) -> str:
    """
    Validate and normalize a host pattern for a route: an exact host name or
    IP address, a C{*.suffix} wildcard, or C{*} for the default route.  The
    result is lower-cased and has no trailing dot.

    @raise RouteError: if C{text} is not a host pattern.
    """
    host = text.strip().lower()
    if host == "*":
        return host
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise RouteError(f"empty host in route {text!r}")
    if host.startswith("["):
        ip = _parseIp(host[1:-1]) if host.endswith("]") else None
        if ip is None or ":" not in ip:
            raise RouteError(f"invalid host {text!r}")
        return f"[{ip}]"
    if _parseIp(host) is not None:
        return host
    if ":" in host:
        raise RouteError(f"host {text!r}: a route host has no port")
    if host.startswith("*."):
        _checkDnsName(host[2:], "host")
        return host
    return _checkDnsName(host, "host")


def parseRoute(text: str) -> tuple[str, tuple[Upstream, ...]]:
    """
    Parse C{HOST=UPSTREAM[,UPSTREAM...]}, the form of C{--route}.

    @raise RouteError: if C{text} does not have that form or a part of it
        does not parse.
    """
    host, sep, rest = text.partition("=")
    if not sep or not host.strip() or not rest.strip():
        raise RouteError(
            f"route {text!r} is not HOST=UPSTREAM[,UPSTREAM...]"
        )
    pattern = parseHostPattern(host)
    upstreams = tuple(parseUpstream(u) for u in rest.split(","))
    _checkUnique(upstreams, pattern)
    return pattern, upstreams


def _checkUnique(upstreams: Sequence[Upstream], host: str) -> None:
    seen: set[Upstream] = set()
    for u in upstreams:
        if u in seen:
            raise RouteError(f"route for {host!r}: upstream {u} is listed twice")
        seen.add(u)


def normalizeRequestHost(raw: bytes) -> bytes:
    """
    Normalize the value of a request's Host header for matching: lower-cased,
    without the port and without a trailing dot.  An IPv6 literal keeps its
    brackets.
    """
    host = raw.strip().lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(b":")
    if colon >= 0:
        host = host[:colon]
    if host.endswith(b"."):
        host = host[:-1]
    return host
