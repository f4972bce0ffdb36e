"""
Tests for L{revproxy.http.headers}: hop-by-hop rules, the forwarded request
header lines, the relayed response headers and the request target.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from revproxy.http.headers import (
    HOP_BY_HOP,
    REQUEST_DROP,
    connectionTokens,
    forwardedHeaderLines,
    joinPath,
    originForm,
    relayResponseHeaders,
)


def _request(
    headers: list[tuple[bytes, bytes]],
    client: object = IPv4Address("TCP", "192.0.2.7", 5555),
    secure: bool = False,
) -> Any:
    request = DummyRequest([b""])
    for name, value in headers:
        request.requestHeaders.addRawHeader(name, value)
    request.client = client  # type: ignore[assignment]
    request.isSecure = lambda: secure  # type: ignore[attr-defined]
    return request


class RulesTests(SynchronousTestCase):
    def test_hopByHop(self) -> None:
        """
        The hop-by-hop set holds RFC 9110's fields and those Go drops; the
        request drop set adds the fields the proxy sets itself.
        """
        self.assertIn(b"connection", HOP_BY_HOP)
        self.assertIn(b"proxy-authorization", HOP_BY_HOP)
        self.assertNotIn(b"host", HOP_BY_HOP)
        self.assertTrue(HOP_BY_HOP < REQUEST_DROP)
        self.assertIn(b"x-forwarded-for", REQUEST_DROP)
        self.assertIn(b"content-length", REQUEST_DROP)

    def test_connectionTokens(self) -> None:
        """
        Connection values split on commas into lower-cased names, blanks
        dropped.
        """
        self.assertEqual(
            connectionTokens([b"Keep-Alive, X-Secret", b" ,x-other"]),
            frozenset({b"keep-alive", b"x-secret", b"x-other"}),
        )
        self.assertEqual(connectionTokens(None), frozenset())
        self.assertEqual(connectionTokens([]), frozenset())


class ForwardedHeaderLinesTests(SynchronousTestCase):
    def test_forwardingHeaders(self) -> None:
        """
        End-to-end fields are kept in order with repetitions; from an
        untrusted client (the default) X-Forwarded-For is the client's
        address alone; X-Forwarded-Host, -Proto and -Port are what the
        proxy saw.
        """
        request = _request(
            [
                (b"Host", b"a.com"),
                (b"X-Multi", b"1"),
                (b"X-Multi", b"2"),
                (b"X-Forwarded-For", b"1.2.3.4"),
                (b"X-Forwarded-Proto", b"gopher"),
            ]
        )
        self.assertEqual(
            forwardedHeaderLines(request, b"a.com"),
            [
                b"Host: a.com\r\n",
                b"X-Multi: 1\r\n",
                b"X-Multi: 2\r\n",
                b"X-Forwarded-For: 192.0.2.7\r\n",
                b"X-Forwarded-Host: a.com\r\n",
                b"X-Forwarded-Proto: http\r\n",
                b"X-Forwarded-Port: 80\r\n",
            ],
        )

    def test_dropped(self) -> None:
        """
        Hop-by-hop fields and those named in Connection are not forwarded.
        """
        request = _request(
            [
                (b"Connection", b"keep-alive, X-Secret"),
                (b"X-Secret", b"s"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Content-Length", b"5"),
                (b"Expect", b"100-continue"),
                (b"X-Kept", b"k"),
            ]
        )
        lines = forwardedHeaderLines(request, b"")
        self.assertEqual(lines[0], b"X-Kept: k\r\n")
        self.assertEqual(
            [line.split(b":")[0] for line in lines[1:]],
            [b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Port"],
        )

    def test_noClientHost(self) -> None:
        """
        A client without an IP address (a Unix socket) is not trusted: the
        X-Forwarded-For it sent is not forwarded and none is made; a secure
        request is https.
        """
        request = _request(
            [(b"X-Forwarded-For", b"1.2.3.4")], client=UNIXAddress(b"/s"), secure=True
        )
        self.assertEqual(
            forwardedHeaderLines(request, b""),
            [b"X-Forwarded-Proto: https\r\n", b"X-Forwarded-Port: 80\r\n"],
        )
        request = _request(
            [(b"X-Forwarded-For", b"1.2.3.4")], client=IPv4Address("TCP", "192.0.2.7", 1),
            secure=True,
        )
        self.assertEqual(
            forwardedHeaderLines(request, b""),
            [
                b"X-Forwarded-For: 192.0.2.7\r\n",
                b"X-Forwarded-Proto: https\r\n",
                b"X-Forwarded-Port: 80\r\n",
            ],
        )


class RelayResponseHeadersTests(SynchronousTestCase):
    def test_relayed(self) -> None:
        """
        All but hop-by-hop fields and those named in Connection reach the
        client, in order; the result says whether a Date came.
        """
        out = Headers()
        hasDate = relayResponseHeaders(
            out,
            [
                (b"Set-Cookie", b"a=1"),
                (b"Connection", b"X-Hop"),
                (b"X-Hop", b"h"),
                (b"Keep-Alive", b"5"),
                (b"Set-Cookie", b"b=2"),
                (b"Date", b"d"),
            ],
        )
        self.assertTrue(hasDate)
        self.assertEqual(out.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2"])
        self.assertFalse(out.hasHeader(b"x-hop"))
        self.assertFalse(out.hasHeader(b"connection"))
        self.assertFalse(out.hasHeader(b"keep-alive"))

    def test_noDate(self) -> None:
        """
        Without a Date from the upstream the result is false.
        """
        self.assertFalse(relayResponseHeaders(Headers(), [(b"X", b"1")]))


class PathTests(SynchronousTestCase):
    def test_joinPath(self) -> None:
        """
        Base paths join with request paths with exactly one slash, the query
        untouched, as Go's httputil does.
        """
        cases = [
            (b"/base/", b"/foo?q=1", b"/base/foo?q=1"),
            (b"/base", b"/foo", b"/base/foo"),
            (b"/base/", b"/", b"/base/"),
            (b"/base", b"/", b"/base/"),
            (b"/base", b"/a%2Fb?x=%20", b"/base/a%2Fb?x=%20"),
            (b"", b"/foo", b"/foo"),
            (b"/base", b"*", b"/base/*"),
        ]
        for base, target, expected in cases:
            self.assertEqual(joinPath(base, target), expected, (base, target))

    def test_originForm(self) -> None:
        """
        Absolute-form targets are reduced to their path and query.
        """
        self.assertEqual(originForm(b"/a?b"), b"/a?b")
        self.assertEqual(originForm(b"http://h:1/a?b"), b"/a?b")
        self.assertEqual(originForm(b"http://h"), b"/")
        self.assertEqual(originForm(b"http://h?x=1"), b"/?x=1")
