"""
Tests for L{revproxy.http.upgrade}: which requests ask to switch protocols
and the header lines of an upgrade, both ways.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from revproxy.http.upgrade import switchingHeaders, upgradeOffer, upgradeRequestLines


def _headers(*pairs: tuple[bytes, bytes]) -> Headers:
    h = Headers()
    for name, value in pairs:
        h.addRawHeader(name, value)
    return h


class UpgradeOfferTests(SynchronousTestCase):
    def test_websocket(self) -> None:
        """
        Connection naming upgrade (in any case, among other tokens) and an
        Upgrade header make an offer of the Upgrade value.
        """
        for connection in [b"Upgrade", b"keep-alive, upgrade", b"UPGRADE"]:
            h = _headers((b"Connection", connection), (b"Upgrade", b"websocket"))
            self.assertEqual(upgradeOffer(h), b"websocket")

    def test_anyProtocol(self) -> None:
        """
        Any protocol token is offered, with its version, and repeated
        Upgrade lines are joined in order.
        """
        h = _headers(
            (b"Connection", b"upgrade"), (b"Upgrade", b"line/1, x"), (b"Upgrade", b"y")
        )
        self.assertEqual(upgradeOffer(h), b"line/1, x, y")

    def test_noUpgradeToken(self) -> None:
        """
        Without an upgrade token in Connection, or without Upgrade, there is
        no offer.
        """
        self.assertIsNone(upgradeOffer(_headers((b"Upgrade", b"websocket"))))
        self.assertIsNone(
            upgradeOffer(_headers((b"Connection", b"keep-alive"), (b"Upgrade", b"websocket")))
        )
        self.assertIsNone(upgradeOffer(_headers((b"Connection", b"upgrade"))))
        self.assertIsNone(upgradeOffer(Headers()))

    def test_h2cStripped(self) -> None:
        """
        h2c is never offered: alone it leaves no offer, among others it is
        dropped.
        """
        self.assertIsNone(
            upgradeOffer(_headers((b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c")))
        )
        self.assertEqual(
            upgradeOffer(_headers((b"Connection", b"upgrade"), (b"Upgrade", b"H2C, websocket"))),
            b"websocket",
        )


class UpgradeLinesTests(SynchronousTestCase):
    def test_requestLines(self) -> None:
        """
        An upgrade request carries Connection: upgrade and the offer.
        """
        self.assertEqual(
            upgradeRequestLines(b"websocket"),
            [b"Connection: upgrade\r\n", b"Upgrade: websocket\r\n"],
        )

    def test_switchingHeaders(self) -> None:
        """
        The client's 101 gets the upstream's Upgrade values and Connection:
        upgrade.
        """
        out = _headers((b"Sec-WebSocket-Accept", b"k"))
        switchingHeaders(out, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade, X")])
        self.assertEqual(out.getRawHeaders(b"upgrade"), [b"websocket"])
        self.assertEqual(out.getRawHeaders(b"connection"), [b"upgrade"])
        self.assertEqual(out.getRawHeaders(b"sec-websocket-accept"), [b"k"])


class RequestedUpgradeTests(SynchronousTestCase):
    def test_onlyProxyChannels(self) -> None:
        """
        A request on a channel that no tunnel can take over (not a
        ProxyChannel) asks for no upgrade.
        """
        from twisted.web.test.requesthelper import DummyChannel, DummyRequest

        from revproxy.http.upgrade import requestedUpgrade

        request = DummyRequest([b""])
        request.channel = DummyChannel()
        request.clientproto = b"HTTP/1.1"
        request.requestHeaders.setRawHeaders(b"connection", [b"upgrade"])
        request.requestHeaders.setRawHeaders(b"upgrade", [b"websocket"])
        self.assertIsNone(requestedUpgrade(request))
