"""
Tests for L{revproxy.server}.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.server import ProxyChannel
from tests.test_proxy import ProxyHarness


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
        self.assertTrue(ta.disconnecting and tb.disconnecting)
        a.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertNoResult(d)
        b.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.successResultOf(d)
        self.successResultOf(h.site.closeConnections())
