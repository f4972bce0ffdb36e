# -*- test-case-name: tests.http.test_headers -*-
"""
Header rules of a proxy: which fields are hop-by-hop, the header lines a
forwarded request carries (with X-Forwarded-For, -Host and -Proto), which
response fields reach the client, and the request target sent upstream.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.http_headers import Headers
from twisted.web.server import Request

__all__ = [
    "HOP_BY_HOP",
    "REQUEST_DROP",
    "RESPONSE_DROP",
    "connectionTokens",
    "forwardedHeaderLines",
    "relayResponseHeaders",
    "originForm",
    "joinPath",
    "requestHead",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"http2-settings",
    }
)
"""Hop-by-hop fields (RFC 9110 section 7.6.1, those Go's httputil drops,
and h2c's connection-specific C{HTTP2-Settings}), never forwarded in either
direction (an upgrade request's C{Upgrade}: L{revproxy.http.upgrade})."""

REQUEST_DROP = HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
}
"""Request fields that the proxy sets itself instead of forwarding."""

RESPONSE_DROP = HOP_BY_HOP
"""Response fields that never reach the client."""

def connectionTokens(values: Sequence[bytes] | None) -> frozenset[bytes]:
    """
    The lower-cased field names listed in C{Connection} header values.
    """
    if not values:
        return frozenset()
    return frozenset(
        t.strip().lower() for v in values for t in v.split(b",") if t.strip()
    )


def forwardedHeaderLines(request: Request, rawHost: bytes) -> list[bytes]:
    """
    The header lines, each ending with CRLF, that the upstream gets for
    C{request}: its end-to-end fields in order and with repetitions, then
    X-Forwarded-For (the client's address appended to the one it sent),
    X-Forwarded-Host (C{rawHost}, if any) and X-Forwarded-Proto.
    """
    headers = request.requestHeaders
    drop = REQUEST_DROP
    connection = headers.getRawHeaders(b"connection")
    extra = connectionTokens(connection) if connection else None
    lines: list[bytes] = []
    append = lines.append
    forwardedFor: list[bytes] | None = None
    for name, values in headers.getAllRawHeaders():
        lname = name.lower()
        if lname in drop or (extra and lname in extra):
            if lname == b"x-forwarded-for":
                forwardedFor = list(values)
            continue
        for value in values:
            append(name + b": " + value + b"\r\n")
    client = request.getClientAddress()
    clientHost = getattr(client, "host", None)
    if clientHost is not None:
        ip = clientHost.encode("ascii")
        if forwardedFor:
            ip = b", ".join(forwardedFor) + b", " + ip
        append(b"X-Forwarded-For: " + ip + b"\r\n")
    elif forwardedFor:
        append(b"X-Forwarded-For: " + b", ".join(forwardedFor) + b"\r\n")
    if rawHost:
        append(b"X-Forwarded-Host: " + rawHost + b"\r\n")
    append(
        b"X-Forwarded-Proto: https\r\n"
        if request.isSecure()
        else b"X-Forwarded-Proto: http\r\n"
    )
    return lines


def relayResponseHeaders(out: Headers, headers: list[tuple[bytes, bytes]]) -> bool:
    """
    Add to C{out} the upstream's response C{headers} that reach the client:
    all but the hop-by-hop ones and those named in its C{Connection}, in
    order.  Return whether the upstream sent a Date.
    """
    drop = RESPONSE_DROP
    kept = []
    extra: frozenset[bytes] | None = None
    hasDate = False
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"connection":
                extra = connectionTokens([value])
            continue
        if lname == b"date":
            hasDate = True
        kept.append((lname, name, value))
    add = out.addRawHeader
    for lname, name, value in kept:
        if extra is None or lname not in extra:
            add(name, value)
    return hasDate


def originForm(uri: bytes) -> bytes:
    """
    The path and query of a request target, also for the absolute form
    (C{http://host/path}) that clients may send to a proxy.
    """
    if uri[:1] == b"/":
        return uri
    schemeEnd = uri.find(b"://")
    if schemeEnd > 0:
        slash = uri.find(b"/", schemeEnd + 3)
        query = uri.find(b"?", schemeEnd + 3)
        if slash < 0 or (0 <= query < slash):
            return b"/" + uri[query:] if query >= 0 else b"/"
        return uri[slash:]
    return uri


def joinPath(base: bytes, target: bytes) -> bytes:
    """
    Join an upstream's base path with a request target the way Go's
    C{httputil.NewSingleHostReverseProxy} does: exactly one slash between
    them, the query kept as it was sent.
    """
    if not base:
        return target
    path, sep, query = target.partition(b"?")
    if base.endswith(b"/"):
        joined = base + path[1:] if path.startswith(b"/") else base + path
    elif path.startswith(b"/"):
        joined = base + path
    elif path:
        joined = base + b"/" + path
    else:
        joined = base
    return joined + sep + query


def requestHead(
    method: bytes, uri: bytes, basePath: bytes, headerLines: list[bytes]
) -> bytes:
    """
    The request line and header block of a request sent upstream: the
    target in origin form, joined with the upstream's base path.
    """
    target = originForm(uri)
    if basePath:
        target = joinPath(basePath, target)
    return b"".join([method, b" ", target, b" HTTP/1.1\r\n", *headerLines, b"\r\n"])
