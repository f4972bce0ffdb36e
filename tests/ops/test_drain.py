"""
Tests for L{revproxy.ops.drain}.
"""

from __future__ import annotations

import signal

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.drain import DrainService
from tests.forward.test_resource import OK, ProxyHarness, _get


class SignalClock(Clock):
    """
    A clock that, like Twisted's reactors, records the signal that stopped
    it.
    """

    _exitSignal: int | None = None


class DrainTests(SynchronousTestCase):
    def _drain(self, h: ProxyHarness, clock: Clock) -> DrainService:
        drain = DrainService(h.resource, h.site, clock, 10)
        drain.startService()
        return drain

    def test_idleStopsAtOnce(self) -> None:
        """
        With no request in flight and no client connected the drain is over
        at once, and leaves no timer.
        """
        h = ProxyHarness()
        clock = Clock()
        self.successResultOf(self._drain(h, clock).stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_waitsForInflight(self) -> None:
        """
        The drain waits for the last request in flight, then closes the
        client connection after its response is written, and ends when the
        connection is closed.
        """
        h = ProxyHarness()
        clock = Clock()
        drain = self._drain(h, clock)
        channel, client = h.client(_get())
        conn, _ = h.upstream()
        d = drain.stopService()
        clock.advance(5)
        self.assertNoResult(d)
        self.assertFalse(client.disconnecting)
        conn.dataReceived(OK)
        self.assertIn(b"200 OK", client.value())
        # Idle now: closed after the drain grace, in which a request already
        # on its way would still be answered.
        self.assertFalse(client.disconnecting)
        h.reactor.advance(h.site.drainGrace)
        self.assertTrue(client.disconnecting)
        self.assertNoResult(d)
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closesIdleConnections(self) -> None:
        """
        Idle keep-alive client connections are closed gracefully too.
        """
        h = ProxyHarness()
        clock = Clock()
        drain = self._drain(h, clock)
        channel, client = h.client()
        d = drain.stopService()
        h.reactor.advance(h.site.drainGrace)
        self.assertTrue(client.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.successResultOf(d)
        self.assertEqual(h.site.channels, set())

    def test_timeout(self) -> None:
        """
        The drain gives up after its timeout.
        """
        h = ProxyHarness()
        clock = Clock()
        drain = self._drain(h, clock)
        h.client(_get())
        h.upstream()
        d = drain.stopService()
        clock.advance(9.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.successResultOf(d)

    def test_cleanExitOnSigterm(self) -> None:
        """
        After a drained SIGTERM, twistd is told to exit 0 instead of
        re-raising the signal; other signals are left alone.
        """
        h = ProxyHarness()
        for sig, expected in [(signal.SIGTERM, None), (signal.SIGINT, signal.SIGINT)]:
            clock = SignalClock()
            clock._exitSignal = sig
            self.successResultOf(self._drain(h, clock).stopService())
            self.assertEqual(clock._exitSignal, expected)


class TunnelDrainTests(SynchronousTestCase):
    def test_waitsForTunnels(self) -> None:
        """
        The drain lets open tunnels carry bytes until they end, then closes
        the client connections.
        """
        from tests.forward.test_tunnel import TunnelHarness

        h = TunnelHarness()
        clock = Clock()
        drain = DrainService(h.resource, h.site, clock, 10)
        drain.startService()
        channel, client, conn, upstream = h.open()
        d = drain.stopService()
        clock.advance(5)
        self.assertNoResult(d)
        conn.dataReceived(b"more")
        self.assertTrue(client.value().endswith(b"more"))
        self.assertFalse(client.disconnecting or upstream.disconnecting)
        upstream.reportLost()
        h.clientLost(channel)
        self.successResultOf(d)

    def test_closesTunnelsAfterTimeout(self) -> None:
        """
        Tunnels still open when the drain timeout passes are dropped.
        """
        from tests.forward.test_tunnel import TunnelHarness

        h = TunnelHarness()
        clock = Clock()
        drain = DrainService(h.resource, h.site, clock, 10)
        drain.startService()
        channel, client, conn, upstream = h.open()
        d = drain.stopService()
        clock.advance(10)
        self.assertTrue(client.aborted and upstream.aborted)
        self.successResultOf(d)
        self.flushLoggedErrors()
