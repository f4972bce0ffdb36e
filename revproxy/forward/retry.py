# -*- test-case-name: tests.forward.test_retry -*-
"""
When a request that failed is tried again: the seam where a retry policy
plugs into the exchange.

L{StandardRetry} is the proxy's policy: after a failed connection attempt,
nothing was sent, so any request may go on to the host's next upstream not
yet tried; after a failure before any response byte on a pooled connection
(the upstream closed it as we reused it), an idempotent request is sent
once more on a new connection to the same upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["RetryPolicy", "StandardRetry", "IDEMPOTENT", "STANDARD_RETRY"]

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""The methods that may be sent twice (RFC 9110 section 9.2.2)."""

T = TypeVar("T")


class RetryPolicy(Protocol):
    """
    Decides whether, and where, a failed request goes again.
    """

    def failover(self, upstreams: Sequence[T], tried: Sequence[T]) -> Sequence[T]:
        """
        After a connection to an upstream could not be made: the upstreams,
        out of the host's C{upstreams}, the request may go to next, given
        those already C{tried}; empty to give up.
        """

    def retryOnFreshConnection(
        self, method: bytes, reusedConnection: bool, responseBytes: bool
    ) -> bool:
        """
        After the connection failed before the response was complete:
        whether to send the request again on a new connection to the same
        upstream.  C{reusedConnection} says whether the connection had
        carried a request before; C{responseBytes} whether any byte of a
        response arrived.
        """


class StandardRetry:
    """
    Failover to untried upstreams after a connection failure; one retry on
    a fresh connection for an idempotent request whose pooled connection
    closed before any response byte.
    """

    def failover(self, upstreams: Sequence[T], tried: Sequence[T]) -> Sequence[T]:
        return [u for u in upstreams if u not in tried]

    def retryOnFreshConnection(
        self, method: bytes, reusedConnection: bool, responseBytes: bool
    ) -> bool:
        # A fresh connection is never reused, so this retries at most once.
        return reusedConnection and not responseBytes and method in IDEMPOTENT


STANDARD_RETRY = StandardRetry()
