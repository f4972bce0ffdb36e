"""
Tests for L{revproxy.drain}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.drain import DrainService
from tests.test_proxy import OK, ProxyHarness, _get


class DrainTests(SynchronousTestCase):
    def test_idleStopsAtOnce(self) -> None:
        """
        With nothing in flight the drain is over at once.
        """
        h = ProxyHarness()
        drain = DrainService(h.resource, Clock(), 10)
        drain.startService()
        self.successResultOf(drain.stopService())

    def test_waitsForInflight(self) -> None:
        """
        The drain ends when the last in-flight request ends, and cancels its
        timer.
        """
        h = ProxyHarness()
        clock = Clock()
        drain = DrainService(h.resource, clock, 10)
        drain.startService()
        _, client = h.client(_get())
        conn, _ = h.upstream()
        d = drain.stopService()
        self.assertNoResult(d)
        clock.advance(5)
        self.assertNoResult(d)
        conn.dataReceived(OK)
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIn(b"200 OK", client.value())

    def test_timeout(self) -> None:
        """
        The drain gives up after its timeout.
        """
        h = ProxyHarness()
        clock = Clock()
        drain = DrainService(h.resource, clock, 10)
        drain.startService()
        h.client(_get())
        h.upstream()
        d = drain.stopService()
        clock.advance(9.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.successResultOf(d)
