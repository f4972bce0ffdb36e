"""
Tests for L{revproxy.upstream.pool}: reuse, idle limits and timeouts,
connection failures and stopping.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import Upstream
from revproxy.upstream.connection import UpstreamConnection
from revproxy.upstream.pool import UpstreamPool
from tests.fakes import FakeEndpoint, RecordingReceiver
from tests.upstream.test_connection import HEAD, UP, PoolHarness


class PoolTests(SynchronousTestCase):
    def _release(self, h: PoolHarness) -> UpstreamConnection:
        ex, conn, _ = h.exchange(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertTrue(ex.ended)
        return conn

    def test_reuse(self) -> None:
        """
        A released connection is handed out again, synchronously, and marked
        reused; a fresh request opens a new one.
        """
        h = PoolHarness()
        conn = self._release(h)
        self.assertFalse(h.endpoint.pending)
        got = h.connect()
        self.assertEqual(got, [conn])
        self.assertTrue(conn.reused)
        self.assertEqual(h.pool.busyCount(), 1)
        h.connect(fresh=True)
        self.assertEqual(len(h.endpoint.pending), 1)

    def test_lostWhileIdle(self) -> None:
        """
        An idle connection the upstream closes leaves the pool.
        """
        h = PoolHarness()
        conn = self._release(h)
        conn.transport.reportLost()  # type: ignore[union-attr]
        self.assertEqual(h.pool.idleCount(), 0)
        h.connect()
        self.assertEqual(len(h.endpoint.pending), 1)

    def test_maxIdle(self) -> None:
        """
        No more than maxIdle connections per upstream are kept idle.
        """
        h = PoolHarness(maxIdle=2)
        conns = []
        for _ in range(3):
            got = h.connect(fresh=True)
            h.endpoint.succeed()
            conns.append(got[0])
        for conn in conns:
            conn.send(HEAD, None, RecordingReceiver(), False)
            conn.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(h.pool.idleCount(), 2)
        self.assertTrue(conns[2].transport.disconnecting)  # type: ignore[union-attr]

    def test_idleTimeout(self) -> None:
        """
        Idle connections are closed after idleTimeout, and the sweeper stops
        once the pool is empty.
        """
        h = PoolHarness(idleTimeout=10)
        conn = self._release(h)
        h.reactor.advance(9)
        self.assertFalse(conn.transport.disconnecting)  # type: ignore[union-attr]
        h.reactor.advance(1)
        self.assertTrue(conn.transport.disconnecting)  # type: ignore[union-attr]
        conn.transport.reportLost()  # type: ignore[union-attr]
        self.assertEqual(h.pool.idleCount(), 0)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_idleTimeoutStaggered(self) -> None:
        """
        A connection released later is kept until its own timeout.
        """
        h = PoolHarness(idleTimeout=10)
        first = self._release(h)
        h.reactor.advance(5)
        second = self._release(h)
        h.reactor.advance(5)
        self.assertTrue(first.transport.disconnecting)  # type: ignore[union-attr]
        self.assertFalse(second.transport.disconnecting)  # type: ignore[union-attr]
        h.reactor.advance(5)
        self.assertTrue(second.transport.disconnecting)  # type: ignore[union-attr]

    def test_connectFailure(self) -> None:
        """
        A failed connection attempt reaches the failure callback.
        """
        h = PoolHarness()
        got = h.connect()
        h.endpoint.fail()
        self.assertEqual(len(got), 1)
        self.assertEqual(h.pool.opened, 0)

    def test_cancelConnect(self) -> None:
        """
        The returned function cancels a pending connection attempt.
        """
        h = PoolHarness()
        failures: list[object] = []
        cancel = h.pool.connection(UP, lambda c: None, failures.append)
        cancel()
        self.assertEqual(len(failures), 1)

    def test_stopService(self) -> None:
        """
        Stopping the pool closes idle connections, fires once they are
        closed, and leaves no timer behind.
        """
        h = PoolHarness()
        conn = self._release(h)
        d = h.pool.stopService()
        self.assertTrue(conn.transport.disconnecting)  # type: ignore[union-attr]
        self.assertNoResult(d)
        conn.transport.reportLost()  # type: ignore[union-attr]
        self.successResultOf(d)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_releaseAfterStop(self) -> None:
        """
        A connection that finishes its request after the pool stopped is
        closed, not kept.
        """
        h = PoolHarness()
        got = h.connect()
        h.endpoint.succeed()
        conn = got[0]
        conn.send(HEAD, None, RecordingReceiver(), False)
        h.pool.stopService()
        conn.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertTrue(conn.transport.disconnecting)  # type: ignore[union-attr]
        self.assertEqual(h.pool.idleCount(), 0)

    def test_defaultEndpoints(self) -> None:
        """
        IP literals connect by TCP directly (no resolver), names through
        HostnameEndpoint, with the connect timeout.
        """
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
        )

        pool = UpstreamPool(MemoryReactorClock(), connectTimeout=3)
        self.assertIsInstance(pool._defaultEndpoint(UP), TCP4ClientEndpoint)
        self.assertIsInstance(
            pool._defaultEndpoint(Upstream("http", "::1", 80)), TCP6ClientEndpoint
        )
        self.assertIsInstance(
            pool._defaultEndpoint(Upstream("http", "app.internal", 80)), HostnameEndpoint
        )
        self.assertEqual(pool._defaultEndpoint(UP)._timeout, 3)  # type: ignore[attr-defined]

    def test_httpsEndpoint(self) -> None:
        """
        An https upstream is connected through TLS, verified against the
        upstream's host name.
        """
        from twisted.internet.endpoints import _WrapperEndpoint

        pool = UpstreamPool(MemoryReactorClock())
        endpoint = pool._defaultEndpoint(Upstream("https", "app.internal", 443))
        self.assertIsInstance(endpoint, _WrapperEndpoint)

    def test_endpointBuiltOnce(self) -> None:
        """
        The endpoint of an upstream is built once, not per request.
        """
        built: list[Upstream] = []
        endpoint = FakeEndpoint()
        pool = UpstreamPool(
            MemoryReactorClock(),
            endpointFactory=lambda u: (built.append(u), endpoint)[1],  # type: ignore[arg-type]
        )
        for _ in range(3):
            pool.connection(UP, lambda c: None, lambda f: None, fresh=True)
        self.assertEqual(built, [UP])

    def test_noClockLeftRunning(self) -> None:
        """
        A pool that never pooled anything has no timer.
        """
        self.assertEqual(PoolHarness().reactor.getDelayedCalls(), [])


del Clock
