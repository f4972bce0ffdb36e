"""
Tests for L{revproxy.http.server}.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.server import ProxyChannel
from tests.forward.test_resource import ProxyHarness


class SiteTests(SynchronousTestCase):
    def test_tracksChannels(self) -> None:
        """
        The site knows its open connections, which are plain HTTP/1.1
        channels.
        """
        h = ProxyHarness()
        channel, _ = h.client()
        self.assertIsInstance(channel, ProxyChannel)
        self.assertEqual(h.site.channels, {channel})
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual(h.site.channels, set())

    def test_closeConnections(self) -> None:
        """
        closeConnections closes every connection and fires once all are
        closed.
        """
        h = ProxyHarness()
        (a, ta), (b, tb) = h.client(), h.client()
        d = h.site.closeConnections()
        h.reactor.advance(h.site.drainGrace)
        self.assertTrue(ta.disconnecting and tb.disconnecting)
        a.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertNoResult(d)
        b.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.successResultOf(d)
        self.successResultOf(h.site.closeConnections())


class RequestTests(SynchronousTestCase):
    def test_noDefaultContentType(self) -> None:
        """
        A response without Content-Type is passed on without one (twisted.web
        would add text/html).
        """
        from tests.forward.test_resource import _get

        h = ProxyHarness()
        _, client = h.client(_get())
        conn, _ = h.upstream()
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertNotIn(b"content-type", client.value().lower())

    def test_formBodiesNotParsed(self) -> None:
        """
        A multipart POST body that twisted.web could not parse is forwarded
        intact, not refused with a 400: the body is the upstream's business.
        """
        h = ProxyHarness()
        body = b"--not really multipart"
        _, client = h.client(
            b"POST /up HTTP/1.1\r\nHost: a.com\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        _, upstream = h.upstream()
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n" + body))
        self.assertEqual(client.value(), b"")

    def test_date(self) -> None:
        """
        Errors made by the proxy carry a Date on the site's clock.
        """
        from tests.forward.test_resource import _get

        h = ProxyHarness()
        h.reactor.advance(86400)
        _, client = h.client(_get(b"unknown.com"))
        self.assertIn(b"Date: Fri, 02 Jan 1970 00:00:00 GMT", client.value())

    def test_addressesCached(self) -> None:
        """
        The channel asks its transport for its addresses once.
        """
        h = ProxyHarness()
        channel, transport = h.client()
        calls = []
        original = transport.getHost
        transport.getHost = lambda: (calls.append(1), original())[1]  # type: ignore[method-assign]
        channel.getHost()  # type: ignore[attr-defined]
        channel.getHost()  # type: ignore[attr-defined]
        self.assertEqual(len(calls), 1)
