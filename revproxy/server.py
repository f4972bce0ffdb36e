# -*- test-case-name: tests.test_server -*-
"""
The client-facing HTTP server: the L{Site} that serves the proxy resource,
and its channels, tracked so that a drain can close them gracefully.

Twisted's reactor drops every connection at shutdown without writing what
is still buffered, so a response that has been produced but not yet sent
would be lost.  The drain therefore closes every client connection with
C{loseConnection} (which writes the buffer first) and waits for them to
close before it lets the shutdown go on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

__all__ = ["ProxySite", "ProxyChannel"]


class ProxyChannel(HTTPChannel):
    """
    An HTTP/1.1 channel that its site keeps track of while it is open.

    (Site's default protocol wraps each channel in a proxy that can switch
    to HTTP/2 after ALPN; the proxy speaks HTTP/1.1 only, so it uses the
    channel directly, which also saves a call per read.)
    """

    site: ProxySite

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.site._channelClosed(self)


class ProxySite(Site):
    """
    The HTTP server of the proxy: no tracebacks to clients, no factory
    chatter in the log, and its open connections in L{channels}.
    """

    noisy = False
    displayTracebacks = False
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(self, resource: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(resource, *args, **kwargs)
        self.channels: set[ProxyChannel] = set()
        self._allClosed: list[Deferred[None]] = []

    def log(self, request: object) -> None:
        """
        Nothing: the proxy writes its own access log, with the upstream.
        """

    def _channelClosed(self, channel: ProxyChannel) -> None:
        self.channels.discard(channel)
        if not self.channels and self._allClosed:
            waiters, self._allClosed = self._allClosed, []
            for d in waiters:
                d.callback(None)

    def closeConnections(self) -> Deferred[None]:
        """
        Close every client connection once what is buffered for it has been
        written; fire when all are closed.
        """
        if not self.channels:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._allClosed.append(d)
        for channel in list(self.channels):
            channel.loseConnection()
        return d
