# -*- test-case-name: tests.http.test_headers -*-
"""
Header rules of a proxy: which fields are hop-by-hop, the header lines a
forwarded request carries (with X-Forwarded-For, -Host and -Proto), which
response fields reach the client, and the request target sent upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.web.http_headers import Headers
from twisted.web.server import Request

from revproxy.http.forwarding import (
    DEFAULT_POLICY,
    FORWARDING_HEADERS,
    ForwardingPolicy,
    forwardedElement,
    requestIdOf,
)

__all__ = [
    "HOP_BY_HOP",
    "PROTECTED",
    "REQUEST_DROP",
    "RESPONSE_DROP",
    "connectionTokens",
    "forwardedHeaderLines",
    "relayResponseHeaders",
    "relayedFieldLines",
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

REQUEST_DROP = HOP_BY_HOP | FORWARDING_HEADERS | {b"content-length", b"expect"}
"""Request fields that the proxy sets itself instead of forwarding."""

PROTECTED = FORWARDING_HEADERS | {b"host", b"content-length", b"transfer-encoding"}
"""Fields that C{Connection} cannot make hop-by-hop: C{Connection: Host}
must not strip the Host, nor C{Connection: X-Forwarded-For} a trusted
proxy's forwarding headers."""

_PLAIN_CONNECTION = HOP_BY_HOP | {b"close"}

RESPONSE_DROP = HOP_BY_HOP | {b"x-request-id"}
"""Response fields that never reach the client (the proxy sets the
request's own X-Request-Id: L{revproxy.http.forwarding.assignRequestId})."""

def connectionTokens(values: Sequence[bytes] | None) -> frozenset[bytes]:
    """
    The lower-cased field names listed in C{Connection} header values.
    """
    if not values:
        return frozenset()
    return frozenset(
        t.strip().lower() for v in values for t in v.split(b",") if t.strip()
    )


def forwardedHeaderLines(
    request: Request, rawHost: bytes, policy: ForwardingPolicy = DEFAULT_POLICY
) -> list[bytes]:
    """
    The header lines, each ending with CRLF, that the upstream gets for
    C{request}: its end-to-end fields in order and with repetitions (less
    those named with an underscore, unless C{policy} allows them), then the
    forwarding headers (L{revproxy.http.forwarding}): X-Forwarded-For (the
    client's address, appended to the one a trusted peer sent),
    X-Forwarded-Host (C{rawHost}, if any), X-Forwarded-Proto and
    X-Forwarded-Port (what the proxy saw, or what a trusted peer sent),
    a trusted peer's X-Real-IP, Forwarded (a trusted peer's, and this
    proxy's element if C{policy.forwarded}) and X-Request-Id.
    """
    headers = request.requestHeaders
    drop = REQUEST_DROP
    connection = headers.getRawHeaders(b"connection")
    extra = connectionTokens(connection) - PROTECTED if connection else None
    underscore = not policy.allowUnderscore
    client = request.getClientAddress()
    trusted = policy.isTrusted(client)
    lines: list[bytes] = []
    append = lines.append
    sent: dict[bytes, bytes] = {}
    for name, values in headers.getAllRawHeaders():
        lname = name.lower()
        if lname in drop or (extra and lname in extra) or (underscore and b"_" in name):
            if trusted and lname in FORWARDING_HEADERS:
                sent[lname] = b", ".join(values)
            continue
        for value in values:
            append(name + b": " + value + b"\r\n")
    clientHost = getattr(client, "host", None)
    forwardedFor = sent.get(b"x-forwarded-for")
    if clientHost is not None:
        ip = clientHost.encode("ascii")
        append(
            b"X-Forwarded-For: " + forwardedFor + b", " + ip + b"\r\n"
            if forwardedFor
            else b"X-Forwarded-For: " + ip + b"\r\n"
        )
    elif forwardedFor:
        append(b"X-Forwarded-For: " + forwardedFor + b"\r\n")
    if sent:
        _trustedLines(append, sent, rawHost, request)
    else:
        if rawHost:
            append(b"X-Forwarded-Host: " + rawHost + b"\r\n")
        append(
            b"X-Forwarded-Proto: https\r\n"
            if request.isSecure()
            else b"X-Forwarded-Proto: http\r\n"
        )
        port = getattr(request.getHost(), "port", None)
        if port is not None:
            append(b"X-Forwarded-Port: %d\r\n" % (port,))
    if policy.forwarded:
        element = forwardedElement(
            client, request.getHost(), rawHost, request.isSecure()
        )
        previous = sent.get(b"forwarded")
        append(
            b"Forwarded: " + (previous + b", " + element if previous else element)
            + b"\r\n"
        )
    elif b"forwarded" in sent:
        append(b"Forwarded: " + sent[b"forwarded"] + b"\r\n")
    rid = requestIdOf(request)
    if rid is not None:
        append(b"X-Request-Id: " + rid + b"\r\n")
    return lines


def _trustedLines(
    append: Callable[[bytes], None],
    sent: dict[bytes, bytes],
    rawHost: bytes,
    request: Request,
) -> None:
    """
    X-Forwarded-Host, -Proto and -Port as a trusted peer sent them, or as
    the proxy saw them where it sent none; its X-Real-IP.
    """
    host = sent.get(b"x-forwarded-host") or rawHost
    if host:
        append(b"X-Forwarded-Host: " + host + b"\r\n")
    proto = sent.get(b"x-forwarded-proto") or (
        b"https" if request.isSecure() else b"http"
    )
    append(b"X-Forwarded-Proto: " + proto + b"\r\n")
    port = sent.get(b"x-forwarded-port")
    if port is None:
        local = getattr(request.getHost(), "port", None)
        port = None if local is None else b"%d" % (local,)
    if port:
        append(b"X-Forwarded-Port: " + port + b"\r\n")
    realIP = sent.get(b"x-real-ip")
    if realIP:
        append(b"X-Real-IP: " + realIP + b"\r\n")


def relayResponseHeaders(out: Headers, headers: list[tuple[bytes, bytes]]) -> bool:
    """
    Add to C{out} the upstream's response C{headers} that reach the client:
    all but the hop-by-hop ones and those named in its C{Connection}, in
    order.  Return whether the upstream sent a Date.
    """
    kept, hasDate = _keptFields(headers)
    add = out.addRawHeader
    for _, name, value in kept:
        add(name, value)
    return hasDate


def relayedFieldLines(
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes, bytes | None, bool]:
    """
    The upstream's response C{headers} that reach the client (as for
    L{relayResponseHeaders}) as one block of lines ending with CRLF, to be
    written as they are after the status line, except Content-Length,
    returned apart: twisted.web's L{Request} reads it from
    C{responseHeaders} to choose its framing.  Then whether the upstream
    sent a Date.

    This is the hot path's relay, in one pass: a twisted.web L{Headers}
    costs about 2 µs a field to fill and read back.
    """
    drop = RESPONSE_DROP
    lines: list[bytes] = []
    append = lines.append
    length = None
    hasDate = False
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"connection" and connectionTokens([value]) - _PLAIN_CONNECTION:
                # It names other fields to drop (rare): filter them first.
                return relayedFieldLines([(n, v) for _, n, v in _keptFields(headers)[0]])
            continue
        if lname == b"content-length":
            length = value
            continue
        if lname == b"date":
            hasDate = True
        append(name + b": " + value + b"\r\n")
    return b"".join(lines), length, hasDate


def _keptFields(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes, bytes]], bool]:
    """
    The response fields that reach the client, each as its lower-cased name,
    its name and its value; and whether there is a Date among them.
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
    if extra:
        kept = [field for field in kept if field[0] not in extra]
        hasDate = any(field[0] == b"date" for field in kept)
    return kept, hasDate


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
