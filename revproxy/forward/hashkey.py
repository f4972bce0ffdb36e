# -*- test-case-name: tests.forward.test_hashkey -*-
"""
The request key of the C{hash} balancing policy (C{--hash-key}): the
client's IP address, a request header or a cookie, hashed with
L{revproxy.routing.balancing.hashKey} so that every proxy node sends the
same key to the same upstream.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.web.server import Request

from revproxy.routing.balancing import hashKey

__all__ = ["parseHashKey", "HashKey"]

HashKey = Callable[[Request], int]


def parseHashKey(spec: str, rng: random.Random | None = None) -> HashKey:
    """
    The key function of C{client-ip}, C{header:NAME} or C{cookie:NAME}.  A
    request without the header or cookie gets a random key (it is spread
    like C{random} would).

    @raise ValueError: for any other C{spec}.
    """
    source = rng if rng is not None else random.Random()
    kind, _, name = spec.partition(":")
    if kind == "client-ip" and not name:

        def clientIp(request: Request) -> int:
            address = request.getClientAddress()
            host = getattr(address, "host", None)
            if host is None:
                return source.getrandbits(64)
            return hashKey(host.encode("ascii", "replace"))

        return clientIp
    if kind == "header" and name and _token(name):
        header = name.lower().encode("ascii")

        def fromHeader(request: Request) -> int:
            values = request.requestHeaders.getRawHeaders(header)
            if not values:
                return source.getrandbits(64)
            return hashKey(values[0])

        return fromHeader
    if kind == "cookie" and name and _token(name):
        cookie = name.encode("ascii")

        def fromCookie(request: Request) -> int:
            value = request.getCookie(cookie)
            if value is None:
                return source.getrandbits(64)
            return hashKey(value)

        return fromCookie
    raise ValueError(f"{spec!r} is not client-ip, header:NAME or cookie:NAME")


def _token(name: str) -> bool:
    return name.isascii() and all(
        c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name
    )
