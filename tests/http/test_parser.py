"""
Tests for L{revproxy.http.parser}: the strict request parser, fed raw bytes.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.parser import (
    NO_BODY,
    HeadLimits,
    ParsedHead,
    RequestError,
    RequestParser,
    validHost,
)


class Recorder:
    def __init__(self) -> None:
        self.heads: list[ParsedHead] = []
        self.body: list[bytes] = []
        self.ended: list[list[tuple[bytes, bytes]]] = []

    def headReceived(self, head: ParsedHead) -> None:
        self.heads.append(head)

    def bodyReceived(self, data: bytes) -> None:
        self.body.append(data)

    def messageEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.ended.append(trailers)


def _fed(data: bytes, limits: HeadLimits | None = None) -> Recorder:
    r = Recorder()
    RequestParser(r, limits or HeadLimits()).feed(data)
    return r


H = b"Host: a.com\r\n"

# (id, request bytes, status)
REFUSED = [
    ("lf-only", b"GET / HTTP/1.1\nHost: a.com\n\n", 400),
    ("lf-request-line", b"GET / HTTP/1.1\nHost: a.com\r\n\r\n", 400),
    ("lf-header", b"GET / HTTP/1.1\r\nHost: a.com\nX: y\r\n\r\n", 400),
    ("cr-only", b"GET / HTTP/1.1\rHost: a.com\r\n\r\n", 400),
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("duplicate-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("list-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("signed-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", 400),
    ("negative-cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-20-digits", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 00000000000000000003\r\n\r\nabc", 400),
    ("cl-past-2-63", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 9223372036854775808\r\n\r\n", 400),
    ("cl-26-digits", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 12345678901234567890123456\r\n\r\n", 400),
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("te-identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 501),
    ("te-chunked-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("te-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-space-before-colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    ("lf-chunk-size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    ("lf-chunk-ext", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n", 400),
    ("chunk-size-space", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-not-hex", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("chunk-data-too-long", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    ("ctl-in-name", b"GET / HTTP/1.1\r\n" + H + b"X\x01: b\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X : b\r\n\r\n", 400),
    ("http-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("http-0.9", b"GET /\r\n\r\n", 400),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("bad-host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host-with-path", b"GET / HTTP/1.1\r\nHost: a.com/x\r\n\r\n", 400),
    ("host-userinfo", b"GET / HTTP/1.1\r\nHost: u@a.com\r\n\r\n", 400),
    ("host-long-port", b"GET / HTTP/1.1\r\nHost: a.com:123456\r\n\r\n", 400),
    ("empty-host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("absolute-other-host", b"GET http://b.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute-userinfo", b"GET http://u@a.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("authority-form-get", b"GET a.com:80 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect", b"CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n", 405),
    ("asterisk-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("unknown-method", b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("binary-garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ("expect-other", b"POST / HTTP/1.1\r\n" + H + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
]


class RefusedTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        Each malformed or forbidden request is refused with its status,
        before its head reaches the receiver.
        """
        for name, data, status in REFUSED:
            r = Recorder()
            parser = RequestParser(r, HeadLimits())
            with self.subTest(name):
                try:
                    parser.feed(data)
                except RequestError as e:
                    self.assertEqual(e.status, status, f"{name}: {e.message}")
                else:
                    self.fail(f"{name} was accepted: {r.heads}")
                if status != 400 or not name.startswith(("lf-chunk", "chunk")):
                    self.assertEqual(r.heads, [], name)

    def test_byteByByte(self) -> None:
        """
        A request fed a byte at a time is refused the same way.
        """
        for name, data, status in REFUSED:
            parser = RequestParser(Recorder(), HeadLimits())
            with self.subTest(name):
                with self.assertRaises(RequestError) as e:
                    for i in range(len(data)):
                        parser.feed(data[i : i + 1])
                self.assertEqual(e.exception.status, status, name)


class LimitTests(SynchronousTestCase):
    def test_uriSize(self) -> None:
        """
        A target longer than maxUriSize is refused with 414, even when it
        arrives in pieces.
        """
        limits = HeadLimits(maxUriSize=100)
        _fed(b"GET /" + b"a" * 99 + b" HTTP/1.1\r\n" + H + b"\r\n", limits)
        parser = RequestParser(Recorder(), limits)
        parser.feed(b"GET /" + b"a" * 50)
        with self.assertRaises(RequestError) as e:
            parser.feed(b"a" * 50)
        self.assertEqual(e.exception.status, 414)

    def test_headerSize(self) -> None:
        """
        A head larger than maxHeaderSize is refused with 431: one long
        header line, or many short ones, whether or not the head ends.
        """
        limits = HeadLimits(maxHeaderSize=1000)
        for data in [
            b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 1000 + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 1000,
            b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n" * 200,
        ]:
            with self.assertRaises(RequestError) as e:
                _fed(data, limits)
            self.assertEqual(e.exception.status, 431)
        _fed(b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 900 + b"\r\n\r\n", limits)

    def test_headerSizeTrickled(self) -> None:
        """
        A head that grows a byte at a time is refused once it crosses the
        limit, not when it ends.
        """
        parser = RequestParser(Recorder(), HeadLimits(maxHeaderSize=100))
        parser.feed(b"GET / HTTP/1.1\r\nX: ")
        with self.assertRaises(RequestError) as e:
            for _ in range(100):
                parser.feed(b"a")
        self.assertEqual(e.exception.status, 431)

    def test_headerCount(self) -> None:
        """
        More than maxHeaders fields are refused with 431.
        """
        limits = HeadLimits(maxHeaders=5)
        _fed(b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n" * 4 + b"\r\n", limits)
        with self.assertRaises(RequestError) as e:
            _fed(b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n" * 5 + b"\r\n", limits)
        self.assertEqual(e.exception.status, 431)


class AcceptedTests(SynchronousTestCase):
    def test_originForm(self) -> None:
        """
        A plain request gives its method, target, version, headers, host
        and framing.
        """
        r = _fed(b"GET /a?b HTTP/1.1\r\nHost: a.com:8080\r\nX-A: 1\r\n\r\n")
        [head] = r.heads
        self.assertEqual(
            (head.method, head.target, head.version, head.host, head.length),
            (b"GET", b"/a?b", b"HTTP/1.1", b"a.com:8080", NO_BODY),
        )
        self.assertEqual(head.headers, [(b"Host", b"a.com:8080"), (b"X-A", b"1")])
        self.assertTrue(head.keepAlive)
        self.assertEqual(r.ended, [[]])

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target becomes origin-form, its authority the
        host; a Host that agrees (in any case) is fine.
        """
        [head] = _fed(b"GET http://A.com/x?y HTTP/1.1\r\nHost: a.COM\r\n\r\n").heads
        self.assertEqual((head.target, head.host), (b"/x?y", b"A.com"))
        [head] = _fed(b"GET http://a.com HTTP/1.0\r\n\r\n").heads
        self.assertEqual((head.target, head.host), (b"/", b"a.com"))

    def test_asteriskOptions(self) -> None:
        """
        OPTIONS * is accepted.
        """
        [head] = _fed(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n").heads
        self.assertEqual(head.target, b"*")

    def test_hosts(self) -> None:
        """
        IPv4, bracketed IPv6 and names with ports are valid hosts.
        """
        for host in [b"a.com", b"127.0.0.1:80", b"[::1]:8080", b"[::1]", b"xn--bcher-kva.de"]:
            self.assertTrue(validHost(host), host)
        for host in [b"", b"a b", b"a/b", b"::1", b"a:b", b"a:", b"u@a"]:
            self.assertFalse(validHost(host), host)

    def test_http10(self) -> None:
        """
        An HTTP/1.0 request needs no Host.
        """
        [head] = _fed(b"GET / HTTP/1.0\r\n\r\n").heads
        self.assertEqual((head.version, head.host, head.keepAlive), (b"HTTP/1.0", b"", False))

    def test_contentLength(self) -> None:
        """
        A body with a Content-Length is delivered as it comes; 2^63-1 is
        the largest accepted.
        """
        r = _fed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc")
        self.assertEqual((r.heads[0].length, b"".join(r.body), r.ended), (3, b"abc", [[]]))
        r = _fed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 9223372036854775807\r\n\r\n")
        self.assertEqual(r.heads[0].length, 2**63 - 1)

    def test_chunked(self) -> None:
        """
        A chunked body is de-chunked; its trailers come at its end.
        """
        r = _fed(
            b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
        )
        self.assertEqual(r.heads[0].length, -1)
        self.assertEqual(b"".join(r.body), b"abcde")
        self.assertEqual(r.ended, [[(b"X-Sum", b"5")]])

    def test_expectContinue(self) -> None:
        """
        Expect: 100-continue is noted, in any case.
        """
        [head] = _fed(b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-Continue\r\nContent-Length: 1\r\n\r\n").heads
        self.assertTrue(head.expectContinue)

    def test_pipelined(self) -> None:
        """
        Pipelined requests come one after the other.
        """
        r = _fed(b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        self.assertEqual([h.target for h in r.heads], [b"/1", b"/2"])
        self.assertEqual([h.keepAlive for h in r.heads], [True, False])

    def test_upgrade(self) -> None:
        """
        The parser stops after an upgrade request and returns what follows.
        """
        r = Recorder()
        parser = RequestParser(r, HeadLimits())
        rest = parser.feed(
            b"GET / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\nframe"
        )
        self.assertTrue(parser.upgraded)
        self.assertTrue(r.heads[0].upgrade)
        self.assertEqual(rest, b"frame")

    def test_obsText(self) -> None:
        """
        Tabs and obs-text (bytes above 0x7f) are allowed in values.
        """
        [head] = _fed(b"GET / HTTP/1.1\r\n" + H + b"X: a\tb\xff\r\n\r\n").heads
        self.assertEqual(head.headers[-1], (b"X", b"a\tb\xff"))
