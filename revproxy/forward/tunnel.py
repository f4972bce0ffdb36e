# -*- test-case-name: tests.forward.test_tunnel -*-
"""
Tunnels: after an upstream answers an upgrade request (a WebSocket, or any
other protocol) with C{101 Switching Protocols}, the proxy relays raw bytes
both ways between the client and that upstream connection.

A L{Tunnel} owns both connections from the 101 on: it writes the 101 to the
client, takes the client connection over from its HTTP channel
(L{revproxy.http.server.ProxyChannel.switchProtocols}) and the upstream
connection out of its pool for good, and relays with flow control in both
directions: each side is a push producer registered on the other side's
transport, so a slow reader pauses the other side and neither direction
buffers more than a transport's write buffer in the proxy.  A half-close
from one side is passed on to the other; either side closing closes both;
a tunnel with no byte either way for its idle timeout is closed.

The L{TunnelRegistry} knows every open tunnel by host route and upstream.
It observes the route resolver: a route change never closes a tunnel.  A
tunnel whose upstream left its host's route is I{draining}: it lives on
until it ends, or until the tunnel drain timeout if one is set.  On
shutdown the drain (L{revproxy.ops.drain}) waits for tunnels to end and
closes those left when its timeout passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from revproxy.forward.reporting import TunnelLog
from revproxy.http.headers import relayResponseHeaders
from revproxy.http.server import ProxyChannel
from revproxy.http.upgrade import switchingHeaders
from revproxy.routing import HostRoute, Upstream
from revproxy.upstream.connection import UpstreamConnection

__all__ = ["Tunnel", "TunnelRegistry"]

log = Logger()


@implementer(IPushProducer)
class _FromUpstream:
    """
    The upstream side as a producer of what the client's transport writes:
    a client that reads slowly pauses reading from the upstream.
    """

    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel

    def pauseProducing(self) -> None:
        self._tunnel._conn.pauseReading()

    def resumeProducing(self) -> None:
        self._tunnel._conn.resumeReading()

    def stopProducing(self) -> None:
        pass  # the tunnel hears of the closed connection itself


@implementer(IPushProducer)
class _FromClient:
    """
    The client side as a producer of what the upstream's transport writes:
    an upstream that reads slowly pauses reading from the client.
    """

    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel

    def pauseProducing(self) -> None:
        transport = self._tunnel._channel.transport
        if transport is not None:
            transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        transport = self._tunnel._channel.transport
        if transport is not None:
            transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        pass  # the tunnel hears of the closed connection itself


def _halfClose(transport: object) -> None:
    """
    Send a FIN once what is buffered is written; the other direction stays
    open.  (No producer may stay registered: the transport would wait for
    it.)
    """
    _unregister(transport)
    loseWrite = getattr(transport, "loseWriteConnection", None)
    if loseWrite is not None:
        loseWrite()
    else:
        transport.loseConnection()  # type: ignore[attr-defined]


def _unregister(transport: object) -> None:
    """
    Unregister the producer of C{transport}, if it still has one.
    """
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()  # type: ignore[attr-defined]


class Tunnel:
    """
    One tunnel between a client and an upstream connection.

    @ivar host: the host pattern of the route it was opened on.
    @ivar upstream: the upstream it goes to.
    @ivar bytesUpstream: bytes relayed from the client to the upstream.
    @ivar bytesDownstream: bytes relayed from the upstream to the client.
    @ivar draining: whether its upstream has left its host's route.
    """

    def __init__(
        self,
        registry: TunnelRegistry,
        request: Request,
        conn: UpstreamConnection,
        host: str,
        upstream: Upstream,
        start: float,
    ) -> None:
        self._registry = registry
        self._clock = registry.clock
        self._request = request
        self._channel: ProxyChannel = request.channel  # type: ignore[assignment]
        self._conn = conn
        self.host = host
        self.upstream = upstream
        self._start = start
        self.bytesUpstream = 0
        self.bytesDownstream = 0
        self.draining = False
        self._clientConnected = True
        self._upstreamConnected = True
        self._clientReading = True
        self._upstreamReading = True
        self._ended = False
        self._last = self._clock.seconds()
        self._idleTimer: IDelayedCall | None = None
        self._drainTimer: IDelayedCall | None = None

    def begin(self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes) -> None:
        """
        Send the client the upstream's 101 (its end-to-end fields, its
        C{Upgrade} and C{Connection: upgrade}), take both connections over
        and relay what each side already sent.
        """
        request = self._request
        channel = self._channel
        request.setResponseCode(101, reason or None)
        out = request.responseHeaders
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        relayResponseHeaders(out, headers)
        switchingHeaders(out, headers)
        channel.writeHeaders(b"HTTP/1.1", b"101", request.code_message, out)
        pending = channel.switchProtocols(self)
        conn = self._conn
        conn.tunnel = self
        channel.registerProducer(_FromUpstream(self), True)
        conn.transport.registerProducer(_FromClient(self), True)  # type: ignore[union-attr]
        self._idleTimer = self._clock.callLater(self._registry.idleTimeout, self._checkIdle)
        if rest:
            self.upstreamDataReceived(rest)
        if pending:
            self.clientDataReceived(pending)

    # -- bytes both ways ------------------------------------------------------

    def clientDataReceived(self, data: bytes) -> None:
        n = len(data)
        self.bytesUpstream += n
        self._registry.bytesUpstream += n
        self._last = self._clock.seconds()
        self._conn.transport.write(data)  # type: ignore[union-attr]

    def upstreamDataReceived(self, data: bytes) -> None:
        n = len(data)
        self.bytesDownstream += n
        self._registry.bytesDownstream += n
        self._last = self._clock.seconds()
        self._channel.transport.write(data)  # type: ignore[union-attr]

    # -- closing ----------------------------------------------------------------

    def clientReadClosed(self) -> None:
        """
        The client half-closed: half-close the upstream connection, or
        close both if the upstream had too.
        """
        self._clientReading = False
        if not self._upstreamReading:
            self.close()
        elif self._upstreamConnected:
            _halfClose(self._conn.transport)

    def upstreamReadClosed(self) -> None:
        """
        The upstream half-closed: half-close the client connection, or
        close both if the client had too.
        """
        self._upstreamReading = False
        if not self._clientReading:
            self.close()
        elif self._clientConnected:
            _halfClose(self._channel.transport)

    def clientLost(self, reason: Failure) -> None:
        self._clientConnected = False
        if self._upstreamConnected:
            transport = self._conn.transport
            _unregister(transport)
            transport.loseConnection()  # type: ignore[union-attr]
        self._maybeEnd()

    def upstreamLost(self, reason: Failure) -> None:
        self._upstreamConnected = False
        if self._clientConnected:
            self._channel.loseConnection()
        self._maybeEnd()

    def close(self) -> None:
        """
        Close both connections once what is buffered for them is written.
        """
        if self._upstreamConnected:
            transport = self._conn.transport
            _unregister(transport)
            transport.loseConnection()  # type: ignore[union-attr]
        if self._clientConnected:
            self._channel.loseConnection()

    def abort(self) -> None:
        """
        Drop both connections now.
        """
        if self._upstreamConnected:
            self._conn.abort()
        if self._clientConnected:
            self._channel.transport.abortConnection()  # type: ignore[union-attr]

    def _checkIdle(self) -> None:
        timeout = self._registry.idleTimeout
        idle = self._clock.seconds() - self._last
        if idle < timeout:
            self._idleTimer = self._clock.callLater(timeout - idle, self._checkIdle)
            return
        self._idleTimer = None
        log.info(
            "tunnel for {host} to {upstream} idle for {timeout} seconds: closed",
            host=self.host,
            upstream=str(self.upstream),
            timeout=timeout,
        )
        self.abort()

    def startDraining(self, timeout: float) -> None:
        """
        The upstream left the host's route: live on, for at most
        C{timeout} seconds if it is not 0.
        """
        if self.draining:
            return
        self.draining = True
        if timeout > 0:
            self._drainTimer = self._clock.callLater(timeout, self._drainTimedOut)

    def stopDraining(self) -> None:
        """
        The upstream is back in the host's route.
        """
        self.draining = False
        if self._drainTimer is not None:
            self._drainTimer.cancel()
            self._drainTimer = None

    def _drainTimedOut(self) -> None:
        self._drainTimer = None
        log.info(
            "tunnel for {host} to removed upstream {upstream} closed after the "
            "tunnel drain timeout",
            host=self.host,
            upstream=str(self.upstream),
        )
        self.abort()

    def _maybeEnd(self) -> None:
        if self._ended or self._clientConnected or self._upstreamConnected:
            return
        self._ended = True
        for timer in (self._idleTimer, self._drainTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idleTimer = self._drainTimer = None
        self._registry._ended(self, self._clock.seconds() - self._start)


class TunnelRegistry:
    """
    Every open tunnel, by the host pattern of its route, and the byte
    counters of all tunnels; a L{revproxy.routing.resolver.RouteObserver}.

    @param clock: keeps the tunnels' time.
    @param idleTimeout: seconds a tunnel may carry no byte either way.
    @param drainTimeout: seconds a tunnel to an upstream removed from its
        host's route lives on; 0 for as long as it lasts.
    @param log: told of each tunnel that ends (the access log).

    @ivar bytesUpstream: bytes relayed from clients to upstreams.
    @ivar bytesDownstream: bytes relayed from upstreams to clients.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idleTimeout: float = 3600.0,
        drainTimeout: float = 0.0,
        log: TunnelLog | None = None,
    ) -> None:
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.drainTimeout = drainTimeout
        self._log = log
        self._byHost: dict[str, set[Tunnel]] = {}
        self._emptyWaiters: list[Callable[[], None]] = []
        self.bytesUpstream = 0
        self.bytesDownstream = 0

    def open(
        self,
        request: Request,
        conn: UpstreamConnection,
        route: HostRoute,
        upstream: Upstream,
        start: float,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        rest: bytes,
    ) -> Tunnel:
        """
        Open a tunnel for C{request} over C{conn}, which switched protocols
        with C{reason} and C{headers} and already sent C{rest}.
        """
        tunnel = Tunnel(self, request, conn, route.host, upstream, start)
        self._byHost.setdefault(route.host, set()).add(tunnel)
        tunnel.begin(reason, headers, rest)
        return tunnel

    def _ended(self, tunnel: Tunnel, duration: float) -> None:
        tunnels = self._byHost.get(tunnel.host)
        if tunnels is not None:
            tunnels.discard(tunnel)
            if not tunnels:
                del self._byHost[tunnel.host]
        if self._log is not None:
            self._log(
                tunnel._request,
                tunnel.upstream,
                duration,
                tunnel.bytesUpstream,
                tunnel.bytesDownstream,
            )
        if not self._byHost and self._emptyWaiters:
            waiters, self._emptyWaiters = self._emptyWaiters, []
            for w in waiters:
                w()

    def __len__(self) -> int:
        return sum(len(t) for t in self._byHost.values())

    def counts(self) -> dict[str, tuple[int, int]]:
        """
        Open tunnels and, of those, draining ones, per host pattern.
        """
        return {
            host: (len(ts), sum(1 for t in ts if t.draining))
            for host, ts in self._byHost.items()
        }

    def routesChanged(
        self, removed: Sequence[HostRoute], added: Sequence[HostRoute]
    ) -> None:
        """
        Mark draining the tunnels of the changed hosts whose upstream is no
        longer in the host's route (and not draining those whose upstream
        came back); close none.  Other hosts' tunnels are not looked at.
        """
        if not self._byHost:
            return
        current = {route.host: route for route in added}
        for host in {route.host for route in removed} | current.keys():
            tunnels = self._byHost.get(host)
            if not tunnels:
                continue
            route = current.get(host)
            upstreams = route.upstreams if route is not None else ()
            for tunnel in tunnels:
                if tunnel.upstream in upstreams:
                    tunnel.stopDraining()
                else:
                    tunnel.startDraining(self.drainTimeout)

    def whenEmpty(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once no tunnel is open (at once if none is).
        """
        if not self._byHost:
            callback()
        else:
            self._emptyWaiters.append(callback)

    def closeAll(self) -> int:
        """
        Drop every open tunnel now; return how many there were.
        """
        tunnels = [t for ts in self._byHost.values() for t in ts]
        for tunnel in tunnels:
            tunnel.abort()
        return len(tunnels)
