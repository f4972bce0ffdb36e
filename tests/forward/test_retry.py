"""
Tests for L{revproxy.forward.retry}: the proxy's standard retry policy.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.forward.retry import IDEMPOTENT, StandardRetry


class StandardRetryTests(SynchronousTestCase):
    def test_failoverUntried(self) -> None:
        """
        After a connection failure the untried upstreams are left, in order.
        """
        retry = StandardRetry()
        self.assertEqual(retry.failover(["a", "b", "c"], ["b"]), ["a", "c"])
        self.assertEqual(retry.failover(["a", "b"], ["b", "a"]), [])

    def test_retryIdempotentOnStaleConnection(self) -> None:
        """
        Only an idempotent request on a reused connection with no response
        byte is retried on a fresh connection.
        """
        retry = StandardRetry()
        self.assertTrue(retry.retryOnFreshConnection(b"GET", True, False))
        self.assertFalse(retry.retryOnFreshConnection(b"GET", False, False))
        self.assertFalse(retry.retryOnFreshConnection(b"GET", True, True))
        self.assertFalse(retry.retryOnFreshConnection(b"POST", True, False))
        self.assertFalse(retry.retryOnFreshConnection(b"PATCH", True, False))

    def test_idempotentMethods(self) -> None:
        """
        The idempotent methods are RFC 9110's.
        """
        self.assertEqual(
            IDEMPOTENT,
            frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"}),
        )
