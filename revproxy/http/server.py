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

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, ISSLTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import alsoProvides

from revproxy._compat import takeBufferedRequestData

__all__ = ["ProxySite", "ProxyChannel", "ProxyRequest", "ClientWatcher", "ClientTunnel"]


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
    urlencoded and multipart POST bodies (and answers 400 to a multipart body
    it cannot parse, which is the upstream's business), splits the path for
    resource traversal and adds a C{Content-Type: text/html} to responses
    without one; its C{process} also sets Server and Date headers that a
    proxy replaces with the upstream's.  None of that is right for a proxy,
    and it all costs time on every request.

    @ivar watcher: told, instead of through a C{notifyFinish} Deferred, when
        the client goes away before the response is finished.
    """

    defaultContentType = None
    watcher: ClientWatcher | None = None

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
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
            # A resource tree: let twisted.web traverse it.
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


class ProxyChannel(HTTPChannel):
    """
    An HTTP/1.1 channel that its site keeps track of while it is open.

    (Site's default protocol wraps each channel in a proxy that can switch
    to HTTP/2 after ALPN; the proxy speaks HTTP/1.1 only, so it uses the
    channel directly, which also saves a call per read.)

    @ivar tunnel: after L{switchProtocols}, what the client's bytes go to.
    """

    site: ProxySite
    tunnel: ClientTunnel | None = None
    _peer: IAddress | None = None
    _host: IAddress | None = None
    _secure: bool | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    # A connection's addresses and security do not change: asked once per
    # request by twisted.web (getHost costs a getsockname system call).

    def getPeer(self) -> IAddress:
        peer = self._peer
        if peer is None:
            peer = self._peer = super().getPeer()
        return peer

    def getHost(self) -> IAddress:
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def isSecure(self) -> bool:
        secure = self._secure
        if secure is None:
            secure = self._secure = ISSLTransport(self.transport, None) is not None
        return secure

    def switchProtocols(self, tunnel: ClientTunnel) -> bytes:
        """
        Hand the connection over to C{tunnel}, once the 101 is written: the
        client's bytes, its half-close and its close go to C{tunnel} from
        now on, and the channel's idle timeout stays off (as while any
        request is handled).  Return the bytes the client sent after its
        request, which the channel had buffered.
        """
        self.tunnel = tunnel
        alsoProvides(self, IHalfCloseableProtocol)
        rest = takeBufferedRequestData(self)
        # The channel may have stopped reading while it buffered them.
        self.transport.resumeProducing()  # type: ignore[union-attr]
        return rest

    def rawDataReceived(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.clientDataReceived(data)
            return
        super().rawDataReceived(data)

    # IHalfCloseableProtocol, once switched: the tunnel passes a half-close on.

    def readConnectionLost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.clientReadClosed()
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.site._channelClosed(self)
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.clientLost(reason)


class ProxySite(Site):
    """
    The HTTP server of the proxy: no tracebacks to clients, no factory
    chatter in the log, and its open connections in L{channels}.
    """

    noisy = False
    displayTracebacks = False
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(self, resource: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("requestFactory", ProxyRequest)
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
