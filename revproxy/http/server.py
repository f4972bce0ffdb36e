# -*- test-case-name: tests.http.test_server -*-
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

import io
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request, Site

from revproxy.http.body import RequestBody
from revproxy.http.channel import ProxyChannel, ServerLimits
from revproxy.http.parser import ParsedHead

__all__ = [
    "ProxySite",
    "ProxyChannel",
    "ProxyRequest",
    "ServerLimits",
    "ClientWatcher",
    "ClientTunnel",
]


class ClientWatcher(Protocol):
    """
    What a L{ProxyRequest} tells when its client goes away before the
    response is finished.
    """

    def clientGone(self, reason: Failure) -> None:
        """
        The client's connection was lost.
        """


class ClientTunnel(Protocol):
    """
    What a client connection that switched protocols hands its bytes to
    (the proxy's tunnel): see L{ProxyChannel.switchProtocols}.
    """

    def clientDataReceived(self, data: bytes) -> None:
        """
        Bytes from the client.
        """

    def clientReadClosed(self) -> None:
        """
        The client will send no more (it half-closed the connection).
        """

    def clientLost(self, reason: Failure) -> None:
        """
        The client connection is closed.
        """


class ProxyRequest(Request):
    """
    A request as a proxy sees it: nothing is parsed that is only forwarded.

    Twisted's L{Request} parses the query string into C{args}, parses
    urlencoded and multipart POST bodies, splits the path for resource
    traversal and adds a C{Content-Type: text/html} to responses without
    one; its C{process} also sets Server and Date headers that a proxy
    replaces with the upstream's.  None of that is right for a proxy, and it
    all costs time on every request.

    Its body is not in C{content}: it streams, in L{body}, while the
    resource forwards it.

    @ivar watcher: told, instead of through a C{notifyFinish} Deferred, when
        the client goes away before the response is finished.
    @ivar body: the request body as it arrives, or L{None} for none.
    @ivar keepAlive: whether the connection may carry another request.
    @ivar relayedFields: the upstream's response fields, as lines, that the
        channel writes after the status line and before C{responseHeaders}
        (L{revproxy.http.headers.relayedFieldLines}).
    """

    defaultContentType = None
    relayedFields = b""
    watcher: ClientWatcher | None = None
    body: RequestBody | None = None
    keepAlive = True
    content = None

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def received(self, head: ParsedHead) -> None:
        """
        Take the request's head from the parser.
        """
        target = head.target
        self.method = head.method
        self.uri = target
        self.clientproto = head.version
        self.path = target.split(b"?", 1)[0]
        self.args = {}
        self.keepAlive = head.keepAlive and head.version == b"HTTP/1.1"
        headers = self.requestHeaders
        add = headers.addRawHeader
        for name, value in head.headers:
            add(name, value)
        if head.host and not headers.hasHeader(b"host"):
            # An absolute-form target's authority is the host.
            headers.setRawHeaders(b"host", [head.host])

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # twisted.web's HTTPChannel calls this (a ProxyRequest served by a
        # plain Site, with its body in content).
        self.content.seek(0, 0)  # type: ignore[union-attr]
        self.args = {}
        self.method = command
        self.uri = path
        self.clientproto = version
        self.path = path.split(b"?", 1)[0]
        self.process()

    def process(self) -> None:
        site: ProxySite = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        resource = site.resource
        if not resource.isLeaf:
            # A resource tree: let twisted.web traverse it; its resources
            # read a body from content.
            if self.content is None:
                body = self.body.whole() if self.body is not None else b""
                self.content = io.BytesIO(body or b"")
            super().process()
            return
        self.prepath = []
        self.postpath = []
        # No Server or Date header here: the proxy resource passes the
        # upstream's on, and adds a Date only where the upstream sent none.
        try:
            body = resource.render(self)
            if body is not NOT_DONE_YET:
                self.write(body)
                self.finish()
        except BaseException:
            self.processingFailed(Failure())

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        watcher = self.watcher
        if watcher is not None:
            self.watcher = None
            watcher.clientGone(reason)


class ProxySite(Site):
    """
    The HTTP server of the proxy: strict, streaming client connections
    (L{ProxyChannel}) under the limits of L{ServerLimits}, no tracebacks to
    clients, no factory chatter in the log, and its open connections in
    L{channels}.

    @ivar refused: how many requests were refused, by status, before they
        reached the resource (framing errors, limits, deadlines).
    @ivar connectionsRefused: connections closed at once because
        C{maxConnections} were open.
    """

    noisy = False
    displayTracebacks = False
    drainGrace = 0.25
    """Seconds an idle connection is still read when the site closes its
    connections: a request already on its way is answered, then the
    connection closes."""

    def __init__(
        self, resource: Any, *args: Any, limits: ServerLimits | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("requestFactory", ProxyRequest)
        super().__init__(resource, *args, **kwargs)
        self.limits = limits if limits is not None else ServerLimits()
        self.channels: set[ProxyChannel] = set()
        self.refused: dict[int, int] = {}
        self.connectionsRefused = 0
        self._allClosed: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress) -> ProxyChannel | None:  # type: ignore[override]
        if len(self.channels) >= self.limits.maxConnections:
            # Twisted closes a connection that gets no protocol.
            self.connectionsRefused += 1
            return None
        return ProxyChannel(self)

    def log(self, request: object) -> None:
        """
        Nothing: the proxy writes its own access log, with the upstream.
        """

    def requestRefused(self, status: int) -> None:
        """
        Count a request refused with C{status} before it was handled.
        """
        self.refused[status] = self.refused.get(status, 0) + 1

    def channelClosed(self, channel: ProxyChannel) -> None:
        """
        C{channel}'s connection is closed.
        """
        self.channels.discard(channel)
        if not self.channels and self._allClosed:
            waiters, self._allClosed = self._allClosed, []
            for d in waiters:
                d.callback(None)

    def closeConnections(self) -> Deferred[None]:
        """
        Close every client connection once what is buffered for it has been
        written: a connection with a request in progress once it is
        answered, an idle one after L{drainGrace} (answering a request that
        arrives meanwhile first); fire when all are closed.
        """
        if not self.channels:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._allClosed.append(d)
        for channel in list(self.channels):
            channel.drain(self.drainGrace)
        return d
