# -*- test-case-name: tests.upstream.test_connection -*-
"""
What an upstream connection (L{revproxy.upstream.connection}) reports to:
the receiver of a response (the proxy's exchange) and, after a
C{101 Switching Protocols}, the tunnel; and the errors it reports.
"""

from __future__ import annotations

from typing import Protocol

from twisted.python.failure import Failure

__all__ = ["ResponseReceiver", "UpstreamTunnel", "MalformedResponse", "UpstreamClosed"]


class MalformedResponse(Exception):
    """
    The upstream's response broke HTTP/1.1's syntax or framing rules.
    """


class UpstreamClosed(Exception):
    """
    The upstream closed the connection before the response was complete.
    """


class ResponseReceiver(Protocol):
    """
    The receiver of one response (the proxy's exchange).  Exactly one of C{responseEnded} or
    C{exchangeFailed} is called last.
    """

    def responseStarted(
        self,
        code: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        bodyLength: int,
    ) -> None:
        """
        The status line and headers have arrived.  C{headers} keeps the
        upstream's order and repetitions; names are as sent.  C{bodyLength}
        is the length of the body, or -1 if it is not known in advance
        (chunked, or until the connection closes).
        """

    def bodyReceived(self, data: bytes) -> None:
        """
        A piece of the response body (de-chunked) has arrived.
        """

    def awaitingBody(self) -> None:
        """
        The response head came alone, at the end of what was read: its body
        comes later (a long poll, an event stream, a slow upstream), so the
        head should go to the client now.
        """

    def responseEnded(self) -> None:
        """
        The response is complete.
        """

    def switchedProtocols(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """
        The upstream answered an upgrade request with 101 (C{reason},
        C{headers}) and C{rest} are the first bytes of the new protocol.
        The connection has left the pool: the receiver sets its C{tunnel}
        or aborts it.  No other call follows.
        """

    def requestBodyFailed(self, status: int, message: bytes) -> None:
        """
        The client's request body, which streams to the upstream, cannot be
        completed: the request is abandoned, answered with C{status} if its
        response has not begun.
        """

    def exchangeFailed(self, reason: Failure, responseBytes: bool) -> None:
        """
        The request failed.  C{responseBytes} says whether any byte of a
        response had arrived, i.e. whether the request may have been
        processed by the upstream.
        """


class UpstreamTunnel(Protocol):
    """
    What a connection that switched protocols hands its bytes to (the
    proxy's tunnel): everything the upstream sends after its 101.
    """

    def upstreamDataReceived(self, data: bytes) -> None:
        """
        Bytes from the upstream.
        """

    def upstreamReadClosed(self) -> None:
        """
        The upstream will send no more (it half-closed the connection).
        """

    def upstreamLost(self, reason: Failure) -> None:
        """
        The connection is closed.
        """
