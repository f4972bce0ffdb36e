"""
The battery's cases about what a well-framed request may carry: request
targets, Host, Connection and hop-by-hop headers, forwarding headers and
request ids, bodies that hold requests, limits and Expect.  See
L{tests.integration.battery_checks}.
"""

from __future__ import annotations

from tests.integration.battery import RecordingUpstream, Seen
from tests.integration.battery_checks import (
    HOST,
    SMUGGLED,
    UNROUTED,
    Case,
    body,
    both,
    chunks,
    forwarded,
    headerIs,
    lacks,
    noCompleteRequest,
    nothing,
    noValue,
    refuse,
    reject,
    req,
)

TARGET = [
    refuse("absolute-form-host-mismatch", "target", req(b"GET", b"http://other.test/", host=HOST)),
    refuse("authority-form-get", "target", req(b"GET", b"battery.test:80")),
    Case("connect", "target", req(b"CONNECT", b"battery.test:443"), 405),
    refuse("asterisk-form-get", "target", req(b"GET", b"*")),
    refuse("target-no-slash", "target", req(b"GET", b"index.html")),
    reject("target-space", "target", req(b"GET", b"/a b")),
    reject("target-ctl", "target", req(b"GET", b"/a\x01b")),
    Case(
        "absolute-form-matching-host",
        "target",
        req(b"GET", b"http://battery.test/abs?q=1"),
        200,
        forwarded(lambda seen: _target(seen, b"/abs?q=1")),
    ),
    Case(
        "asterisk-form-options",
        "target",
        req(b"OPTIONS", b"*"),
        200,
        forwarded(lambda seen: _target(seen, b"*")),
    ),
]


def _target(seen: list[Seen], expected: bytes) -> None:
    assert seen[0].target == expected, f"upstream target {seen[0].target!r}"


HOST_CASES = [
    refuse("host-missing", "host", req(host=None)),
    refuse("host-repeated-same", "host", req(b"GET", b"/", b"Host: battery.test")),
    refuse("host-repeated-differ", "host", req(b"GET", b"/", b"Host: other.test")),
    refuse("host-bad-port", "host", req(host=b"battery.test:abc")),
    refuse("host-path", "host", req(host=b"battery.test/evil")),
    refuse("host-userinfo", "host", req(host=b"evil@battery.test")),
    refuse("host-space", "host", req(host=b"battery .test")),
]

HOP = [
    Case("connection-host", "hop-by-hop", req(b"GET", b"/", b"Connection: Host"), 200, forwarded()),
    Case(
        "connection-content-length",
        "hop-by-hop",
        req(b"POST", b"/", b"Connection: Content-Length", b"Content-Length: 5", body=b"hello"),
        200,
        forwarded(body(b"hello")),
    ),
    Case(
        "connection-transfer-encoding",
        "hop-by-hop",
        req(
            b"POST",
            b"/",
            b"Connection: Transfer-Encoding",
            b"Transfer-Encoding: chunked",
            body=chunks(b"hello"),
        ),
        200,
        forwarded(body(b"hello")),
    ),
    Case(
        "connection-x-forwarded-for",
        "hop-by-hop",
        req(b"GET", b"/", b"Connection: X-Forwarded-For"),
        200,
        forwarded(headerIs(b"x-forwarded-for", b"127.0.0.1")),
    ),
    Case(
        "connection-names-custom",
        "hop-by-hop",
        req(b"GET", b"/", b"Connection: X-Secret", b"X-Secret: 1"),
        200,
        forwarded(lacks(b"x-secret")),
    ),
    Case(
        "upgrade-h2c",
        "hop-by-hop",
        req(
            b"GET",
            b"/",
            b"Connection: Upgrade, HTTP2-Settings",
            b"Upgrade: h2c",
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        ),
        200,
        forwarded(lacks(b"upgrade", b"http2-settings")),
    ),
    Case(
        "connection-x-forwarded-proto",
        "hop-by-hop",
        req(b"GET", b"/", b"Connection: X-Forwarded-Proto"),
        200,
        forwarded(headerIs(b"x-forwarded-proto", b"http")),
    ),
    Case(
        "connection-x-request-id",
        "hop-by-hop",
        req(b"GET", b"/", b"Connection: X-Request-Id"),
        200,
        forwarded(lambda seen: _generatedId(seen, b"")),
    ),
]


def _forwardedParams(seen: list[Seen]) -> None:
    """
    Exactly one RFC 7239 Forwarded element, the proxy's: for= the client,
    proto=http, host= the request's Host (values may be quoted).
    """
    values = seen[0].header(b"forwarded")
    assert len(values) == 1 and b"," not in values[0], f"Forwarded upstream: {values}"
    params = {}
    for pair in values[0].split(b";"):
        name, _, value = pair.strip().partition(b"=")
        params[name.lower()] = value.strip(b'"')
    assert params.get(b"for") == b"127.0.0.1", f"Forwarded upstream: {values}"
    assert params.get(b"proto") == b"http", f"Forwarded upstream: {values}"
    assert params.get(b"host") == HOST, f"Forwarded upstream: {values}"


FORWARDING = [
    Case(
        "underscore-transfer-encoding",
        "forwarding",
        req(b"POST", b"/", b"Transfer_Encoding: chunked", b"Content-Length: 5", body=b"hello"),
        200,
        forwarded(body(b"hello")),
    ),
    Case("underscore-custom", "forwarding", req(b"GET", b"/", b"X_Custom: 1"), 200, forwarded()),
    Case(
        "xff-spoofed",
        "forwarding",
        req(b"GET", b"/", b"X-Forwarded-For: 1.2.3.4"),
        200,
        forwarded(both(headerIs(b"x-forwarded-for", b"127.0.0.1"), noValue(b"1.2.3.4"))),
    ),
    Case(
        "forwarded-spoofed",
        "forwarding",
        req(b"GET", b"/", b"Forwarded: for=1.2.3.4"),
        200,
        forwarded(noValue(b"1.2.3.4")),
    ),
    Case(
        "x-real-ip-spoofed",
        "forwarding",
        req(b"GET", b"/", b"X-Real-IP: 1.2.3.4"),
        200,
        forwarded(noValue(b"1.2.3.4")),
    ),
    Case(
        "x-forwarded-host-spoofed",
        "forwarding",
        req(b"GET", b"/", b"X-Forwarded-Host: evil.test"),
        200,
        forwarded(headerIs(b"x-forwarded-host", HOST)),
    ),
    Case(
        "x-forwarded-proto-spoofed",
        "forwarding",
        req(b"GET", b"/", b"X-Forwarded-Proto: https"),
        200,
        forwarded(headerIs(b"x-forwarded-proto", b"http")),
    ),
    Case(
        "x-request-id-spoofed",
        "forwarding",
        req(b"GET", b"/", b"X-Request-Id: attacker-chosen"),
        200,
        forwarded(lambda seen: _generatedId(seen, b"attacker-chosen")),
    ),
    Case(
        "trusted-xff-kept",
        "forwarding",
        req(b"GET", b"/", b"X-Forwarded-For: 1.2.3.4"),
        200,
        forwarded(headerIs(b"x-forwarded-for", b"1.2.3.4, 127.0.0.1")),
        proxy="trusted",
    ),
    Case(
        "trusted-request-id-kept",
        "forwarding",
        req(b"GET", b"/", b"X-Request-Id: from-the-edge-1"),
        200,
        forwarded(headerIs(b"x-request-id", b"from-the-edge-1")),
        proxy="trusted",
    ),
    Case(
        "forwarded-option",
        "forwarding",
        req(b"GET", b"/", b"Forwarded: for=1.2.3.4;proto=https"),
        200,
        forwarded(_forwardedParams),
        proxy="forwarded",
    ),
    Case(
        "underscore-allowed",
        "forwarding",
        req(b"GET", b"/", b"X_Custom: 1"),
        200,
        lambda up: _underscoreKept(up),
        proxy="underscore",
    ),
]


def _generatedId(seen: list[Seen], spoofed: bytes) -> None:
    ids = seen[0].header(b"x-request-id")
    assert len(ids) == 1 and ids[0] and ids[0] != spoofed, f"X-Request-Id upstream: {ids}"


def _underscoreKept(up: RecordingUpstream) -> None:
    seen = up.requests()
    assert len(seen) == 1, f"the upstream got {len(seen)} requests"
    assert seen[0].header(b"x_custom") == [b"1"], f"headers upstream: {seen[0].headers}"


SMUGGLING = [
    Case(
        "cl-body-holds-request",
        "smuggling",
        req(b"POST", b"/", b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
        200,
        forwarded(body(SMUGGLED)),
    ),
    Case(
        "chunk-data-holds-request",
        "smuggling",
        req(b"POST", b"/", b"Transfer-Encoding: chunked", body=chunks(b"0\r\n\r\n" + SMUGGLED)),
        200,
        forwarded(body(b"0\r\n\r\n" + SMUGGLED)),
    ),
    Case(
        "get-with-body-cl0",
        "smuggling",
        req(b"GET", b"/", b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
        200,
        forwarded(body(SMUGGLED)),
    ),
    Case(
        "chunk-extension-valid",
        "smuggling",
        req(
            b"POST", b"/", b"Transfer-Encoding: chunked", body=b"5;name=value\r\nhello\r\n0\r\n\r\n"
        ),
        200,
        forwarded(body(b"hello")),
    ),
    Case(
        "chunked-trailers",
        "smuggling",
        req(
            b"POST",
            b"/",
            b"Transfer-Encoding: chunked",
            body=chunks(b"hello", trailers=b"X-Trailer: 1\r\n"),
        ),
        200,
        forwarded(body(b"hello")),
    ),
    Case(
        "pipelined-two",
        "smuggling",
        req(b"GET", b"/one") + req(b"GET", b"/two"),
        200,
        forwarded(lambda seen: _targets(seen, [b"/one", b"/two"]), count=2),
        answers=2,
    ),
]


def _targets(seen: list[Seen], expected: list[bytes]) -> None:
    assert [s.target for s in seen] == expected, f"upstream targets {[s.target for s in seen]}"


def _headers(count: int, size: int = 20) -> tuple[bytes, ...]:
    return tuple(b"X-H%d: %s" % (i, b"v" * size) for i in range(count))


LIMITS = [
    reject("uri-9000-bytes", "limits", req(b"GET", b"/" + b"u" * 9000), 414),
    reject("uri-100-kib", "limits", req(b"GET", b"/" + b"u" * 102400), 414),
    Case("uri-8000-bytes-ok", "limits", req(b"GET", b"/" + b"u" * 8000), 200, forwarded()),
    reject("header-line-64-kib", "limits", req(b"GET", b"/", b"X-Big: " + b"b" * 65536), 431),
    reject("headers-20-kib", "limits", req(b"GET", b"/", *_headers(20, 1000)), 431),
    Case("headers-10-kib-ok", "limits", req(b"GET", b"/", *_headers(10, 1000)), 200, forwarded()),
    reject("headers-101", "limits", req(b"GET", b"/", *_headers(101)), 431),
    Case("headers-90-ok", "limits", req(b"GET", b"/", *_headers(90)), 200, forwarded()),
    Case(
        "max-headers-25",
        "limits",
        req(b"GET", b"/", *_headers(25)),
        431,
        nothing,
        close=True,
        proxy="limits",
    ),
    Case(
        "max-headers-15-ok",
        "limits",
        req(b"GET", b"/", *_headers(15)),
        200,
        forwarded(),
        proxy="limits",
    ),
    Case(
        "max-body-cl",
        "limits",
        req(b"POST", b"/", b"Content-Length: 2048", body=b"b" * 2048),
        413,
        nothing,
        proxy="limits",
    ),
    Case(
        "max-body-chunked-crossing",
        "limits",
        req(
            b"POST",
            b"/",
            b"Transfer-Encoding: chunked",
            body=chunks(b"a" * 512, b"b" * 512, b"c" * 512),
        ),
        413,
        noCompleteRequest,
        proxy="limits",
    ),
    Case(
        "max-body-cl-at-limit-ok",
        "limits",
        req(b"POST", b"/", b"Content-Length: 1024", body=b"b" * 1024),
        200,
        forwarded(body(b"b" * 1024)),
        proxy="limits",
    ),
    Case(
        "max-body-chunked-under-ok",
        "limits",
        req(b"POST", b"/", b"Transfer-Encoding: chunked", body=chunks(b"a" * 500, b"b" * 500)),
        200,
        forwarded(body(b"a" * 500 + b"b" * 500)),
        proxy="limits",
    ),
]

EXPECT = [
    Case(
        "expect-unrouted-host",
        "expect",
        req(b"POST", b"/", b"Content-Length: 1073741824", b"Expect: 100-continue", host=UNROUTED),
        404,
    ),
    Case(
        "expect-over-max-body",
        "expect",
        req(b"POST", b"/", b"Content-Length: 1048576", b"Expect: 100-continue"),
        413,
        proxy="limits",
    ),
]

CASES: list[Case] = TARGET + HOST_CASES + HOP + FORWARDING + SMUGGLING + LIMITS + EXPECT
