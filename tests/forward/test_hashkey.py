"""
Tests for L{revproxy.forward.hashkey}: the request key of the hash policy.
"""

from __future__ import annotations

import random

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.forward.hashkey import parseHashKey
from revproxy.routing.balancing import hashKey


def _request(ip: str = "192.0.2.1", **headers: str) -> DummyRequest:
    request = DummyRequest([b""])
    request.client = IPv4Address("TCP", ip, 1234)
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
    return request


class HashKeyTests(SynchronousTestCase):
    def test_clientIp(self) -> None:
        """
        client-ip keys a request by its client's address.
        """
        key = parseHashKey("client-ip")
        self.assertEqual(key(_request("192.0.2.1")), hashKey(b"192.0.2.1"))
        self.assertNotEqual(key(_request("192.0.2.2")), key(_request("192.0.2.1")))

    def test_header(self) -> None:
        """
        header:NAME keys a request by that header's first value.
        """
        key = parseHashKey("header:X-User")
        self.assertEqual(key(_request(**{"x-user": "ann"})), hashKey(b"ann"))

    def test_cookie(self) -> None:
        """
        cookie:NAME keys a request by that cookie.
        """
        key = parseHashKey("cookie:sid")
        request = _request()
        request.getCookie = {b"sid": b"xyz"}.get  # type: ignore[attr-defined]
        self.assertEqual(key(request), hashKey(b"xyz"))

    def test_missingIsRandom(self) -> None:
        """
        A request without the header gets a key from the random source.
        """
        key = parseHashKey("header:X-User", random.Random(1))
        self.assertEqual(key(_request()), random.Random(1).getrandbits(64))

    def test_bad(self) -> None:
        """
        Anything else is a ValueError naming the forms.
        """
        for spec in ("ip", "header:", "cookie:a b", "client-ip:x"):
            with self.assertRaises(ValueError) as cm:
                parseHashKey(spec)
            self.assertIn("header:NAME", str(cm.exception))
