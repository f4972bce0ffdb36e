# -*- test-case-name: tests.http.test_upgrade -*-
"""
Header rules of protocol upgrades (RFC 9110 section 7.8): which requests ask
to switch protocols, the C{Connection} and C{Upgrade} lines they carry
upstream, and the ones a C{101 Switching Protocols} carries back.

C{Upgrade} is hop-by-hop, so the proxy drops it from every other request
and response (L{revproxy.http.headers}); a request that lists C{upgrade} in
its C{Connection} header keeps its C{Upgrade} offer, less C{h2c}: the proxy
speaks HTTP/1.1 to its upstreams and cannot carry cleartext HTTP/2 (nginx
and Envoy drop it too).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.http_headers import Headers
from twisted.web.server import Request

from revproxy.http.server import ProxyChannel

__all__ = [
    "STRIPPED_PROTOCOLS",
    "requestedUpgrade",
    "upgradeOffer",
    "upgradeRequestLines",
    "switchingHeaders",
]

STRIPPED_PROTOCOLS = frozenset({b"h2c"})
"""Upgrade protocols never offered upstream."""


def upgradeOffer(headers: Headers) -> bytes | None:
    """
    The C{Upgrade} value to forward for a request with C{headers}: its
    protocols, in order, less those of L{STRIPPED_PROTOCOLS}; L{None} if
    the request does not ask to upgrade (no C{upgrade} token in
    C{Connection}, no C{Upgrade}) or offers nothing left.
    """
    offers = headers.getRawHeaders(b"upgrade")
    if not offers:
        return None
    connection = headers.getRawHeaders(b"connection")
    if not connection or not any(
        t.strip().lower() == b"upgrade" for v in connection for t in v.split(b",")
    ):
        return None
    kept = [
        p
        for v in offers
        for p in (t.strip() for t in v.split(b","))
        if p and p.split(b"/", 1)[0].lower() not in STRIPPED_PROTOCOLS
    ]
    return b", ".join(kept) if kept else None


def requestedUpgrade(request: Request) -> list[bytes] | None:
    """
    The header lines that ask the upstream to switch protocols for
    C{request}, or L{None} if it does not ask to or cannot: only an HTTP/1.1
    request on a L{ProxyChannel} (which a tunnel can take over) can.  A
    plain request pays for one header lookup.
    """
    offer = upgradeOffer(request.requestHeaders)
    if (
        offer is None
        or request.clientproto != b"HTTP/1.1"
        or not isinstance(request.channel, ProxyChannel)
    ):
        return None
    return upgradeRequestLines(offer)


def upgradeRequestLines(offer: bytes) -> list[bytes]:
    """
    The header lines, each ending with CRLF, that ask the upstream to
    switch to C{offer}.
    """
    return [b"Connection: upgrade\r\n", b"Upgrade: " + offer + b"\r\n"]


def switchingHeaders(out: Headers, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """
    Put back in C{out} (the client's 101, already holding the upstream's
    end-to-end fields) the C{Upgrade} values of the upstream's 101
    C{headers} and C{Connection: upgrade}.
    """
    upgrades = [v for n, v in headers if n.lower() == b"upgrade"]
    out.setRawHeaders(b"connection", [b"upgrade"])
    if upgrades:
        out.setRawHeaders(b"upgrade", upgrades)

