"""
The battery's cases about message framing and syntax (RFC 9112 sections
2 to 7): Content-Length, Transfer-Encoding, header syntax, chunked
bodies, the HTTP version.  See L{tests.integration.battery_checks}.
"""

from __future__ import annotations

from tests.integration.battery_checks import (
    SMUGGLED,
    TE_REFUSED,
    Case,
    chunks,
    notSmuggled,
    reject,
    req,
)

FRAMING = [
    reject(
        "cl-te-both",
        "framing",
        req(b"POST", b"/", b"Content-Length: 6", b"Transfer-Encoding: chunked", body=b"0\r\n\r\nG"),
    ),
    reject(
        "te-cl-both",
        "framing",
        req(
            b"POST",
            b"/",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 3",
            body=b"8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
    ),
    reject(
        "cl-te-both-smuggle",
        "framing",
        req(
            b"POST",
            b"/",
            b"Content-Length: 4",
            b"Transfer-Encoding: chunked",
            body=b"5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n" + SMUGGLED,
        ),
    ),
    reject(
        "cl-duplicate-same",
        "framing",
        req(b"POST", b"/", b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
    ),
    reject(
        "cl-duplicate-differ",
        "framing",
        req(b"POST", b"/", b"Content-Length: 5", b"Content-Length: 0", body=b"hello" + SMUGGLED),
    ),
    reject("cl-list", "framing", req(b"POST", b"/", b"Content-Length: 5, 5", body=b"hello")),
    reject("cl-signed-plus", "framing", req(b"POST", b"/", b"Content-Length: +5", body=b"hello")),
    reject("cl-negative", "framing", req(b"POST", b"/", b"Content-Length: -1", body=b"hello")),
    reject("cl-hex", "framing", req(b"POST", b"/", b"Content-Length: 0x5", body=b"hello")),
    reject("cl-inner-space", "framing", req(b"POST", b"/", b"Content-Length: 1 5", body=b"hello")),
    reject("cl-empty", "framing", req(b"POST", b"/", b"Content-Length:", body=b"hello")),
    reject(
        "cl-20-digits",
        "framing",
        req(b"POST", b"/", b"Content-Length: 00000000000000000005", body=b"hello"),
    ),
    reject(
        "cl-over-2-63",
        "framing",
        req(b"POST", b"/", b"Content-Length: 9999999999999999999", body=b"hello"),
    ),
    reject(
        "cl-26-digits",
        "framing",
        req(b"POST", b"/", b"Content-Length: 12345678901234567890123456", body=b"hello"),
    ),
    reject(
        "te-identity",
        "framing",
        req(b"POST", b"/", b"Transfer-Encoding: identity", body=b"hello"),
        TE_REFUSED,
    ),
    reject(
        "te-chunked-then-gzip",
        "framing",
        req(b"POST", b"/", b"Transfer-Encoding: chunked, gzip", body=chunks(b"hello")),
        TE_REFUSED,
    ),
    reject(
        "te-chunked-twice",
        "framing",
        req(b"POST", b"/", b"Transfer-Encoding: chunked, chunked", body=chunks(b"hello")),
        TE_REFUSED,
    ),
    reject(
        "te-two-headers",
        "framing",
        req(
            b"POST",
            b"/",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: identity",
            body=chunks(b"hello"),
        ),
        TE_REFUSED,
    ),
    reject(
        "te-xchunked",
        "framing",
        req(b"POST", b"/", b"Transfer-Encoding: xchunked", body=chunks(b"hello")),
        TE_REFUSED,
    ),
    reject(
        "te-quoted",
        "framing",
        req(b"POST", b"/", b'Transfer-Encoding: "chunked"', body=chunks(b"hello")),
        TE_REFUSED,
    ),
    # RFC 9112 6.1: TE in an HTTP/1.0 request is faulty framing; the server
    # may process the request but must close the connection after it.
    Case(
        "te-in-http10",
        "framing",
        req(
            b"POST",
            b"/",
            b"Transfer-Encoding: chunked",
            body=chunks(b"hello") + SMUGGLED,
            version=b"HTTP/1.0",
        ),
        frozenset({400, 200}),
        lambda up: notSmuggled(up),
        close=True,
    ),
]

# Transfer-Encoding mutations after defparam/smuggler: a whitespace or
# control byte where an upstream might still read the header, each with a
# Content-Length so that a proxy that drops the header and one that honours
# it disagree on the framing.
SMUGGLER = [
    reject(
        f"smuggler-{name}",
        "headers",
        req(b"POST", b"/", line, b"Content-Length: 5", body=chunks(b"x")),
    )
    for name, line in [
        ("space-before-colon", b"Transfer-Encoding : chunked"),
        ("tab-before-colon", b"Transfer-Encoding\t: chunked"),
        ("vtab-value", b"Transfer-Encoding:\x0bchunked"),
        ("formfeed-value", b"Transfer-Encoding:\x0cchunked"),
        ("nul-after-value", b"Transfer-Encoding: chunked\x00"),
        ("ctl-before-name", b"\x01Transfer-Encoding: chunked"),
        ("bare-cr-hides-te", b"X: X\rTransfer-Encoding: chunked"),
        ("bare-lf-hides-te", b"X: X\nTransfer-Encoding: chunked"),
        ("obs-fold-te", b"X: X\r\n Transfer-Encoding: chunked"),
    ]
]

HEADERS = [
    reject("obs-fold-space", "headers", req(b"GET", b"/", b"X-A: one", b" two")),
    reject("obs-fold-tab", "headers", req(b"GET", b"/", b"X-A: one", b"\ttwo")),
    reject(
        "leading-space-first-header", "headers", b"GET / HTTP/1.1\r\n Host: battery.test\r\n\r\n"
    ),
    reject("nul-in-value", "headers", req(b"GET", b"/", b"X-A: a\x00b")),
    reject("nul-in-name", "headers", req(b"GET", b"/", b"X-\x00A: a")),
    reject("ctl-01-in-value", "headers", req(b"GET", b"/", b"X-A: a\x01b")),
    reject("del-in-name", "headers", req(b"GET", b"/", b"X-\x7fA: a")),
    reject("bare-cr-in-value", "headers", req(b"GET", b"/", b"X-A: a\rb")),
    reject("non-token-name", "headers", req(b"GET", b"/", b"X(A): a")),
    reject("empty-name", "headers", req(b"GET", b"/", b": a")),
    reject("no-colon", "headers", req(b"GET", b"/", b"NoColonHere")),
    reject("space-before-colon", "headers", req(b"GET", b"/", b"X-A : a")),
    reject("bare-lf-request-line", "headers", b"GET / HTTP/1.1\nHost: battery.test\r\n\r\n"),
    reject("bare-lf-header", "headers", b"GET / HTTP/1.1\r\nHost: battery.test\nX-A: a\r\n\r\n"),
    reject("bare-lf-everywhere", "headers", req(b"GET", b"/", b"X-A: a", eol=b"\n")),
    reject("bare-cr-request-line", "headers", b"GET / HTTP/1.1\rHost: battery.test\r\n\r\n"),
]

CHUNKED = [
    reject(
        f"chunk-{name}",
        "chunked",
        req(b"POST", b"/", b"Transfer-Encoding: chunked", body=data + SMUGGLED),
    )
    for name, data in [
        ("size-bare-lf", b"5\nhello\r\n0\r\n\r\n"),
        ("ext-bare-lf", b"5;a\nhello\r\n0\r\n\r\n"),
        ("ext-bare-cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("data-bare-lf", b"5\r\nhello\n0\r\n\r\n"),
        ("last-bare-lf", b"5\r\nhello\r\n0\n\r\n"),
        ("data-no-crlf", b"5\r\nhelloXX0\r\n\r\n"),
        ("size-20-hex-digits", b"10000000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("size-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("size-0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("size-not-hex", b"g\r\nhello\r\n0\r\n\r\n"),
        ("size-empty", b"\r\nhello\r\n0\r\n\r\n"),
    ]
]

VERSION = [
    Case("http-1.2", "version", req(version=b"HTTP/1.2"), 505),
    Case("http-2.0", "version", req(version=b"HTTP/2.0"), 505),
    reject("http-0.9", "version", b"GET /\r\n\r\n"),
    reject("version-lowercase", "version", req(version=b"http/1.1")),
    reject("version-garbage", "version", req(version=b"HTTP/1.x")),
]

CASES: list[Case] = FRAMING + SMUGGLER + HEADERS + CHUNKED + VERSION
