# -*- test-case-name: tests.http.test_forwarding -*-
"""
Whom the proxy believes: the forwarding headers a client may hand on
(C{X-Forwarded-For}, C{-Host}, C{-Proto}, C{-Port}, C{Forwarded},
C{X-Real-IP}, C{X-Request-Id}) and the identity of each request.

A peer in the trusted networks (C{--trusted-proxies}) is a proxy in front
of this one: what it says about the client is kept, and the peer is
appended to C{X-Forwarded-For}.  Any other peer is a client: its forwarding
headers are replaced by what the proxy saw, and its C{Forwarded},
C{X-Real-IP} and C{X-Request-Id} are dropped.  L{ForwardingPolicy} holds
those rules, built once from the options; the header lines themselves are
written by L{revproxy.http.headers.forwardedHeaderLines}.

Every request gets an id (L{assignRequestId}): the trusted peer's valid
C{X-Request-Id}, or a new one of 16 hex digits.  It is sent upstream,
returned to the client on every response (also the proxy's own errors) and
logged.
"""

from __future__ import annotations

import ipaddress
import os
from binascii import hexlify
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.address import UNIXAddress
from twisted.web.server import Request

__all__ = [
    "DEFAULT_POLICY",
    "FORWARDING_HEADERS",
    "ForwardingPolicy",
    "RequestIds",
    "assignRequestId",
    "forwardedElement",
    "requestIdOf",
    "validRequestId",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
        b"x-request-id",
    }
)
"""The request fields the proxy writes itself, keeping a trusted peer's."""

REQUEST_ID_CHARACTERS = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
)
MAX_REQUEST_ID = 128


def validRequestId(value: bytes) -> bool:
    """
    Whether C{value} may be kept as a request id: 1 to 128 characters of
    letters, digits, C{.}, C{_}, C{:} and C{-} (a UUID, a hex or a
    dotted id pass; nothing that could break a log line or a header).
    """
    return 0 < len(value) <= MAX_REQUEST_ID and not value.translate(
        None, REQUEST_ID_CHARACTERS
    )


class RequestIds:
    """
    New request ids: 16 hex digits (64 random bits), unique with
    overwhelming probability across processes and restarts, and cheap:
    the random bytes are drawn 256 ids at a time.
    """

    __slots__ = ("_pool", "_next", "_random")

    def __init__(self, random: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random
        self._pool = b""
        self._next = 0

    def __call__(self) -> bytes:
        start = self._next
        if start >= len(self._pool):
            self._pool = hexlify(self._random(2048))
            start = 0
        self._next = start + 16
        return self._pool[start : start + 16]


_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class ForwardingPolicy:
    """
    The rules for forwarding headers, built once from the options.

    @ivar trusted: the networks of the trusted proxies (C{--trusted-proxies}).
    @ivar trustUnix: whether every peer on a Unix socket is trusted.
    @ivar forwarded: whether to send an RFC 7239 C{Forwarded} header
        (C{--forwarded}).
    @ivar allowUnderscore: whether header names with an underscore are
        forwarded (C{--allow-underscore-headers}).
    @ivar newRequestId: makes the id of a request that brings none.
    """

    trusted: tuple[IPNetwork, ...] = ()
    trustUnix: bool = False
    forwarded: bool = False
    allowUnderscore: bool = False
    newRequestId: Callable[[], bytes] = field(
        default_factory=RequestIds, compare=False, repr=False
    )
    verdicts: dict[str, bool] = field(
        default_factory=dict, compare=False, repr=False
    )

    def isTrusted(self, address: object) -> bool:
        """
        Whether the peer at C{address} is a trusted proxy.  Each address is
        looked up once (the answers are cached).
        """
        host = getattr(address, "host", None)
        if host is None:
            return self.trustUnix and isinstance(address, UNIXAddress)
        if not self.trusted:
            return False
        verdicts = self.verdicts
        verdict = verdicts.get(host)
        if verdict is None:
            if len(verdicts) >= _CACHE_LIMIT:
                verdicts.clear()
            verdict = verdicts[host] = self._inTrusted(host)
        return verdict

    def _inTrusted(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in n for c in candidates for n in self.trusted)


DEFAULT_POLICY = ForwardingPolicy()
"""No trusted proxy, no C{Forwarded}, header names with an underscore
dropped."""


def requestIdOf(request: Request) -> bytes | None:
    """
    The id L{assignRequestId} gave C{request}, if any.
    """
    return getattr(request, "requestId", None)


def assignRequestId(request: Request, policy: ForwardingPolicy) -> bytes:
    """
    Give C{request} its id: the C{X-Request-Id} a trusted peer sent, if it
    sent one valid value, else a new one.  It is kept as the request's
    C{requestId} attribute and set on its response as C{X-Request-Id}, so
    that every response carries it, the proxy's own errors too.
    """
    rid: bytes | None = None
    if policy.isTrusted(request.getClientAddress()):
        values = request.requestHeaders.getRawHeaders(b"x-request-id")
        if values is not None and len(values) == 1 and validRequestId(values[0]):
            rid = values[0]
    if rid is None:
        rid = policy.newRequestId()
    request.requestId = rid  # type: ignore[attr-defined]
    request.responseHeaders.setRawHeaders(b"x-request-id", [rid])
    return rid


# -- RFC 7239 ------------------------------------------------------------------

_TOKEN = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _node(address: object) -> bytes:
    """
    An RFC 7239 node for C{address}: an IPv4 address as is, an IPv6 one
    bracketed and quoted (section 6), C{unknown} for what has no IP.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return b"unknown"
    if ":" in host:
        return b'"[' + host.split("%", 1)[0].encode("ascii") + b']"'
    return host.encode("ascii")


def _value(value: bytes) -> bytes | None:
    """
    C{value} as an RFC 7239 value: a token as is, anything else as a
    quoted-string; L{None} for a value with a control character.
    """
    if value and all(c in _TOKEN for c in value):
        return value
    if any(c < 0x20 or c == 0x7F for c in value):
        return None
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwardedElement(
    client: object, local: object, host: bytes, secure: bool
) -> bytes:
    """
    This proxy's element of a C{Forwarded} header (RFC 7239):
    C{for=} the client, C{by=} the address it reached, C{host=} the Host it
    asked for (if any) and C{proto=}.
    """
    parts = [b"for=" + _node(client), b"by=" + _node(local)]
    if host:
        quoted = _value(host)
        if quoted is not None:
            parts.append(b"host=" + quoted)
    parts.append(b"proto=https" if secure else b"proto=http")
    return b";".join(parts)
