"""
Tests for L{revproxy.http.forwarding} and the forwarding header lines of
L{revproxy.http.headers.forwardedHeaderLines}: trusted and untrusted peers,
RFC 7239 C{Forwarded}, request ids, underscores and C{Connection}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.config import ConfigError, parseNetworks
from revproxy.http.forwarding import (
    ForwardingPolicy,
    RequestIds,
    assignRequestId,
    forwardedElement,
    requestIdOf,
    validRequestId,
)
from revproxy.http.headers import forwardedHeaderLines

PEER = IPv4Address("TCP", "10.1.2.3", 40000)
LOCAL = IPv4Address("TCP", "192.0.2.1", 8443)


def _request(
    headers: list[tuple[bytes, bytes]],
    client: object = PEER,
    secure: bool = False,
    local: object = LOCAL,
) -> Any:
    request = DummyRequest([b""])
    for name, value in headers:
        request.requestHeaders.addRawHeader(name, value)
    request.client = client  # type: ignore[assignment]
    request.isSecure = lambda: secure  # type: ignore[attr-defined]
    request.getHost = lambda: local  # type: ignore[method-assign]
    return request


def _policy(trusted: str = "", **kw: Any) -> ForwardingPolicy:
    networks, unix = parseNetworks(trusted)
    ids = iter([b"0000000000000001", b"0000000000000002", b"0000000000000003"])
    return ForwardingPolicy(
        trusted=networks, trustUnix=unix, newRequestId=lambda: next(ids), **kw
    )


def _lines(request: Any, policy: ForwardingPolicy, host: bytes = b"a.com") -> list[bytes]:
    assignRequestId(request, policy)
    return forwardedHeaderLines(request, host, policy)


SPOOFED = [
    (b"Host", b"a.com"),
    (b"X-Forwarded-For", b"203.0.113.9"),
    (b"X-Forwarded-For", b"198.51.100.1"),
    (b"X-Forwarded-Host", b"evil.example"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Port", b"443"),
    (b"Forwarded", b"for=203.0.113.9;proto=https"),
    (b"X-Real-IP", b"203.0.113.9"),
    (b"X-Request-Id", b"from-the-client"),
]


class ParseNetworksTests(SynchronousTestCase):
    def test_networks(self) -> None:
        """
        CIDRs and bare addresses of both families parse, host bits
        ignored; C{unix} trusts Unix sockets; empty parts are skipped.
        """
        networks, unix = parseNetworks("10.0.0.0/8, 192.0.2.7,2001:db8::/32,::1,,unix")
        self.assertEqual(
            networks,
            (
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("192.0.2.7/32"),
                ipaddress.ip_network("2001:db8::/32"),
                ipaddress.ip_network("::1/128"),
            ),
        )
        self.assertTrue(unix)
        self.assertEqual(parseNetworks(""), ((), False))
        self.assertEqual(parseNetworks("10.1.2.3/8")[0], (ipaddress.ip_network("10.0.0.0/8"),))

    def test_bad(self) -> None:
        """
        A bad network is a one-line error naming it.
        """
        for bad in ("10.0.0.0/33", "example.com", "10.0.0.0/8,300.1.1.1", "::g/64"):
            with self.assertRaises(ConfigError) as cm:
                parseNetworks(bad)
            self.assertNotIn("\n", str(cm.exception))
            self.assertIn("is not an IP network", str(cm.exception))


class TrustTests(SynchronousTestCase):
    def test_isTrusted(self) -> None:
        """
        A peer is trusted when its address is in a trusted network: IPv4,
        IPv6, an IPv4-mapped IPv6 address against an IPv4 network; a Unix
        socket peer only with C{unix}; nothing by default.
        """
        policy = _policy("10.0.0.0/8,2001:db8::/32")
        self.assertTrue(policy.isTrusted(IPv4Address("TCP", "10.9.9.9", 1)))
        self.assertFalse(policy.isTrusted(IPv4Address("TCP", "11.0.0.1", 1)))
        self.assertTrue(policy.isTrusted(IPv6Address("TCP", "2001:db8::5", 1)))
        self.assertFalse(policy.isTrusted(IPv6Address("TCP", "2001:db9::5", 1)))
        self.assertTrue(policy.isTrusted(IPv6Address("TCP", "::ffff:10.0.0.1", 1)))
        self.assertFalse(policy.isTrusted(UNIXAddress(b"/s")))
        self.assertTrue(_policy("unix").isTrusted(UNIXAddress(b"/s")))
        self.assertFalse(_policy().isTrusted(PEER))
        self.assertFalse(_policy("10.0.0.0/8").isTrusted(object()))

    def test_cacheBounded(self) -> None:
        """
        Verdicts are cached per address, and the cache does not grow
        without bound.
        """
        policy = _policy("10.0.0.0/8")
        for i in range(5000):
            policy.isTrusted(IPv4Address("TCP", f"11.0.{i // 256}.{i % 256}", 1))
        self.assertLessEqual(len(policy.verdicts), 4096)


class UntrustedPeerTests(SynchronousTestCase):
    def test_replaced(self) -> None:
        """
        From an untrusted peer, X-Forwarded-* are replaced by what the
        proxy saw, Forwarded, X-Real-IP and X-Request-Id are dropped, and
        the request gets a new id.
        """
        request = _request(SPOOFED)
        self.assertEqual(
            _lines(request, _policy("192.168.0.0/16")),
            [
                b"Host: a.com\r\n",
                b"X-Forwarded-For: 10.1.2.3\r\n",
                b"X-Forwarded-Host: a.com\r\n",
                b"X-Forwarded-Proto: http\r\n",
                b"X-Forwarded-Port: 8443\r\n",
                b"X-Request-Id: 0000000000000001\r\n",
            ],
        )
        self.assertEqual(requestIdOf(request), b"0000000000000001")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"x-request-id"), [b"0000000000000001"]
        )

    def test_forwarded(self) -> None:
        """
        With --forwarded an untrusted peer's Forwarded is replaced by the
        proxy's element.
        """
        request = _request(SPOOFED, secure=True)
        lines = _lines(request, _policy(forwarded=True))
        self.assertIn(
            b"Forwarded: for=10.1.2.3;by=192.0.2.1;host=a.com;proto=https\r\n", lines
        )
        self.assertEqual(len([x for x in lines if x.lower().startswith(b"forwarded")]), 1)


class TrustedPeerTests(SynchronousTestCase):
    def test_keptAndAppended(self) -> None:
        """
        From a trusted peer, X-Forwarded-For is kept (repeated fields
        joined) with the peer appended; X-Forwarded-Host, -Proto, -Port,
        Forwarded, X-Real-IP and a valid X-Request-Id are kept.
        """
        request = _request(SPOOFED[:-1] + [(b"X-Request-Id", b"abc-123.x:y_z")])
        self.assertEqual(
            _lines(request, _policy("10.0.0.0/8")),
            [
                b"Host: a.com\r\n",
                b"X-Forwarded-For: 203.0.113.9, 198.51.100.1, 10.1.2.3\r\n",
                b"X-Forwarded-Host: evil.example\r\n",
                b"X-Forwarded-Proto: https\r\n",
                b"X-Forwarded-Port: 443\r\n",
                b"X-Real-IP: 203.0.113.9\r\n",
                b"Forwarded: for=203.0.113.9;proto=https\r\n",
                b"X-Request-Id: abc-123.x:y_z\r\n",
            ],
        )
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"x-request-id"), [b"abc-123.x:y_z"]
        )

    def test_filledIn(self) -> None:
        """
        What a trusted peer did not send, the proxy fills in from what it
        saw; with --forwarded its element is appended to the peer's.
        """
        request = _request(
            [(b"Forwarded", b"for=203.0.113.9")],
            client=IPv6Address("TCP", "2001:db8::7", 1),
        )
        self.assertEqual(
            _lines(request, _policy("2001:db8::/32", forwarded=True), host=b""),
            [
                b"X-Forwarded-For: 2001:db8::7\r\n",
                b"X-Forwarded-Proto: http\r\n",
                b"X-Forwarded-Port: 8443\r\n",
                b'Forwarded: for=203.0.113.9, for="[2001:db8::7]";by=192.0.2.1;proto=http\r\n',
                b"X-Request-Id: 0000000000000001\r\n",
            ],
        )

    def test_invalidRequestId(self) -> None:
        """
        A trusted peer's invalid or repeated X-Request-Id is replaced by a
        new one.
        """
        for values in ([b"has space"], [b"x" * 129], [b""], [b"a", b"b"], [b"a\"b"]):
            request = _request([(b"X-Request-Id", v) for v in values])
            lines = _lines(request, _policy("10.0.0.0/8"))
            self.assertEqual(lines[-1], b"X-Request-Id: 0000000000000001\r\n", values)


class HygieneTests(SynchronousTestCase):
    def test_underscore(self) -> None:
        """
        Header names with an underscore are dropped, unless allowed.
        """
        headers = [(b"Transfer_Encoding", b"chunked"), (b"X_Api_Key", b"k"), (b"X-Ok", b"1")]
        lines = _lines(_request(headers), _policy())
        self.assertEqual([x for x in lines if b"_" in x.split(b":")[0]], [])
        self.assertIn(b"X-Ok: 1\r\n", lines)
        lines = _lines(_request(headers), _policy(allowUnderscore=True))
        self.assertEqual([x.lower() for x in lines[:3]],
                         [b"transfer_encoding: chunked\r\n", b"x_api_key: k\r\n",
                          b"x-ok: 1\r\n"])

    def test_connectionCannotRemoveProtected(self) -> None:
        """
        Connection can name real hop-by-hop headers, never Host, the
        framing or the proxy's forwarding headers: those are still sent.
        """
        request = _request(
            [
                (b"Host", b"a.com"),
                (b"Connection", b"Host, Content-Length, X-Forwarded-For, X-Forwarded-Host,"
                                b" X-Request-Id, Forwarded, X-Real-IP, X-Hop"),
                (b"X-Hop", b"gone"),
                (b"X-Forwarded-For", b"203.0.113.9"),
                (b"X-Real-IP", b"203.0.113.9"),
            ]
        )
        lines = _lines(request, _policy("10.0.0.0/8", forwarded=True))
        names = [x.split(b":")[0].lower() for x in lines]
        self.assertEqual(
            names,
            [b"host", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
             b"x-forwarded-port", b"x-real-ip", b"forwarded", b"x-request-id"],
        )
        self.assertIn(b"X-Forwarded-For: 203.0.113.9, 10.1.2.3\r\n", lines)


class ForwardedElementTests(SynchronousTestCase):
    def test_nodes(self) -> None:
        """
        IPv4 nodes are bare, IPv6 nodes bracketed and quoted (RFC 7239
        section 6, zone dropped), what has no IP is C{unknown}; a host that
        is not a token is quoted and escaped; one with a control character
        is left out.
        """
        v6 = IPv6Address("TCP", "fe80::1%eth0", 1)
        self.assertEqual(
            forwardedElement(v6, UNIXAddress(b"/s"), b"a.com:8080", False),
            b'for="[fe80::1]";by=unknown;host="a.com:8080";proto=http',
        )
        self.assertEqual(
            forwardedElement(PEER, LOCAL, b'a"b\\', True),
            b'for=10.1.2.3;by=192.0.2.1;host="a\\"b\\\\";proto=https',
        )
        self.assertEqual(
            forwardedElement(PEER, LOCAL, b"a\x01", True),
            b"for=10.1.2.3;by=192.0.2.1;proto=https",
        )


class ErrorResponseTests(SynchronousTestCase):
    def test_requestId(self) -> None:
        """
        The channel's refusals carry the request id they are given, and
        none without one.
        """
        from revproxy.http.errors import errorResponse

        head = errorResponse(400, "bad", 0.0, b"00ff00ff00ff00ff").split(b"\r\n\r\n")[0]
        self.assertIn(b"\r\nX-Request-Id: 00ff00ff00ff00ff\r\n", head)
        self.assertNotIn(b"x-request-id", errorResponse(400, "bad", 0.0).lower())


class RequestIdTests(SynchronousTestCase):
    def test_unique(self) -> None:
        """
        New ids are 16 lower-case hex digits, all different, drawn from
        the random source in batches.
        """
        draws: list[int] = []

        def random(n: int) -> bytes:
            draws.append(n)
            import os

            return os.urandom(n)

        ids = RequestIds(random)
        made = [ids() for _ in range(10000)]
        self.assertEqual(len(set(made)), 10000)
        self.assertTrue(all(len(i) == 16 and validRequestId(i) for i in made))
        self.assertTrue(all(set(i) <= set(b"0123456789abcdef") for i in made))
        self.assertEqual(len(draws), 10000 // 256 + 1)

    def test_valid(self) -> None:
        """
        Valid ids: 1 to 128 of letters, digits and C{._:-}.
        """
        self.assertTrue(validRequestId(b"9b2f3c1e-0d4a-4c8e-9f6b-2a7e5d3c1b0a"))
        self.assertTrue(validRequestId(b"x" * 128))
        for bad in (b"", b"x" * 129, b"a b", b"a\r\nb", b"a,b", b"caf\xe9", b"a/b"):
            self.assertFalse(validRequestId(bad), bad)
