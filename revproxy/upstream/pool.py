# -*- test-case-name: tests.upstream.test_pool -*-
"""
The upstream pool: persistent HTTP/1.1 connections to upstreams, a bounded
stack of idle ones per upstream, closed after an idle timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure

from revproxy.routing import Upstream
from revproxy.upstream.connection import UpstreamConnection

__all__ = ["UpstreamPool", "ConnectCallback", "FailCallback", "connectFailure"]


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self._key = key

    def buildProtocol(self, addr: object) -> UpstreamConnection:
        return UpstreamConnection(self._pool, self._key)


class _Unpooled:
    """
    Stands in for the pool for a dedicated connection: it is closed after
    its one request, never kept idle or given to anyone else.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def _release(self, conn: UpstreamConnection) -> None:
        if conn.transport is not None:
            conn.transport.loseConnection()

    def _lost(self, conn: UpstreamConnection) -> None:
        pass



ConnectCallback = Callable[[UpstreamConnection], None]
FailCallback = Callable[[Failure], None]


class UpstreamPool(Service):
    """
    Persistent connections to upstreams, a bounded stack of idle ones per
    upstream.

    @param reactor: the reactor to connect with and to keep time by.
    @param connectTimeout: seconds to wait for a new connection.
    @param maxIdle: the most idle connections kept per upstream.
    @param idleTimeout: seconds an idle connection is kept.
    @param endpointFactory: makes the endpoint for an upstream; by default
        a TCP endpoint for IP literals, a C{HostnameEndpoint} for names, and
        TLS around it for C{https}.
    @param tlsTrustRoot: the C{IOpenSSLTrustRoot} that https upstreams'
        certificates are verified against; L{None} for the platform's.
    """

    name = "upstream-pool"

    def __init__(
        self,
        reactor: IReactorTCP,
        connectTimeout: float = 5.0,
        maxIdle: int = 64,
        idleTimeout: float = 60.0,
        endpointFactory: Callable[[Upstream], IStreamClientEndpoint] | None = None,
        tlsTrustRoot: Any = None,
    ) -> None:
        self._reactor = reactor
        self._tlsTrustRoot = tlsTrustRoot
        self.clock: IReactorTime = reactor  # type: ignore[assignment]
        self.connectTimeout = connectTimeout
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self._endpointFactory = endpointFactory or self._defaultEndpoint
        self._endpoints: dict[tuple[str, str, int], IStreamClientEndpoint] = {}
        self._idle: dict[tuple[str, str, int], list[UpstreamConnection]] = {}
        self._busy: set[UpstreamConnection] = set()
        self._connecting: set[Deferred[UpstreamConnection]] = set()
        self._sweeper: IDelayedCall | None = None
        self.opened = 0

    def _defaultEndpoint(self, upstream: Upstream) -> IStreamClientEndpoint:
        reactor = self._reactor
        host = upstream.host
        timeout = self.connectTimeout
        endpoint: IStreamClientEndpoint
        if ":" in host:
            endpoint = TCP6ClientEndpoint(reactor, host, upstream.port, timeout)
        elif host.replace(".", "").isdigit():
            endpoint = TCP4ClientEndpoint(reactor, host, upstream.port, timeout)
        else:
            endpoint = HostnameEndpoint(reactor, host, upstream.port, timeout)
        if upstream.scheme == "https":
            endpoint = wrapClientTLS(
                optionsForClientTLS(host, trustRoot=self._tlsTrustRoot), endpoint
            )
        return endpoint

    def connection(
        self,
        upstream: Upstream,
        onConnection: ConnectCallback,
        onFailure: FailCallback,
        fresh: bool = False,
    ) -> Callable[[], None]:
        """
        Get a connection to C{upstream}: an idle one if there is one (and not
        C{fresh}), else a new one.  C{onConnection} gets it, synchronously
        for an idle one; C{onFailure} gets the reason a new one could not be
        made.  Returns a function that cancels the wait.
        """
        key = upstream.key
        if not fresh:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if conn.connected:
                    self._busy.add(conn)
                    onConnection(conn)
                    return _noop
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._endpointFactory(upstream)
        d: Deferred[UpstreamConnection] = endpoint.connect(  # type: ignore[assignment]
            _ConnectionFactory(self, key)
        )
        self._connecting.add(d)

        def connected(conn: UpstreamConnection) -> None:
            self._connecting.discard(d)
            self.opened += 1
            self._busy.add(conn)
            onConnection(conn)

        def failed(f: Failure) -> None:
            self._connecting.discard(d)
            onFailure(f)

        d.addCallbacks(connected, failed)
        return d.cancel

    def dedicatedConnection(
        self, upstream: Upstream, onConnection: ConnectCallback, onFailure: FailCallback
    ) -> Callable[[], None]:
        """
        Open a new connection to C{upstream} with the pool's endpoint (its
        connect timeout and TLS verification) that is closed after one
        request and never shared: for health checks.  Returns a function
        that cancels the attempt.
        """
        key = upstream.key
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._endpointFactory(upstream)
        factory = _ConnectionFactory(_Unpooled(self.clock), key)  # type: ignore[arg-type]
        d: Deferred[UpstreamConnection] = endpoint.connect(factory)  # type: ignore[assignment]
        d.addCallbacks(onConnection, onFailure)
        return d.cancel

    def _release(self, conn: UpstreamConnection) -> None:
        self._busy.discard(conn)
        if not self.running:
            conn.transport.loseConnection()  # type: ignore[union-attr]
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.maxIdle:
            conn.transport.loseConnection()  # type: ignore[union-attr]
            return
        conn.idleSince = self.clock.seconds()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.clock.callLater(self.idleTimeout, self._sweep)

    def detach(self, conn: UpstreamConnection) -> None:
        """
        C{conn} leaves the pool for good (it switched protocols): it is no
        longer counted and never reused.
        """
        self._busy.discard(conn)

    def _lost(self, conn: UpstreamConnection) -> None:
        self._busy.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        """
        Close the connections that have been idle for C{idleTimeout}.
        """
        self._sweeper = None
        deadline = self.clock.seconds() - self.idleTimeout
        oldest: float | None = None
        for key, idle in list(self._idle.items()):
            # The stack's bottom holds the longest idle connections.
            while idle and idle[0].idleSince <= deadline:
                conn = idle.pop(0)
                conn.transport.loseConnection()  # type: ignore[union-attr]
            if idle:
                first = idle[0].idleSince
                oldest = first if oldest is None else min(oldest, first)
            else:
                del self._idle[key]
        if oldest is not None:
            delay = max(oldest + self.idleTimeout - self.clock.seconds(), 0.0)
            self._sweeper = self.clock.callLater(delay, self._sweep)

    def idleCount(self) -> int:
        """
        How many idle connections the pool holds.
        """
        return sum(len(i) for i in self._idle.values())

    def connectionCounts(self) -> dict[tuple[str, str, int], tuple[int, int]]:
        """
        Idle and busy connections, per upstream key.
        """
        counts: dict[tuple[str, str, int], list[int]] = {}
        for key, idle in self._idle.items():
            counts.setdefault(key, [0, 0])[0] = len(idle)
        for conn in self._busy:
            counts.setdefault(conn.key, [0, 0])[1] += 1
        return {k: (v[0], v[1]) for k, v in counts.items()}

    def busyCount(self) -> int:
        """
        How many connections carry a request now.
        """
        return len(self._busy)

    def stopService(self) -> Deferred[None]:
        """
        Close the idle connections and stop timing them; connections still
        carrying a request close when they are done.
        """
        super().stopService()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for d in list(self._connecting):
            d.cancel()
        idle = [c for conns in self._idle.values() for c in conns]
        self._idle.clear()
        waits = []
        for conn in idle:
            waits.append(conn.whenClosed())
            conn.transport.loseConnection()  # type: ignore[union-attr]
        return DeferredList(waits).addCallback(lambda _: None)  # type: ignore[return-value]


def _noop() -> None:
    pass


def connectFailure(reason: Failure) -> str:
    """
    Why a connection could not be made, as one readable reason: Twisted's
    connect errors put the address's repr in their message.
    """
    value = reason.value
    if isinstance(value, ConnectingCancelledError):
        return "no connection within the connect timeout"
    if isinstance(value, ConnectError):
        text = (value.__doc__ or type(value).__name__).strip().rstrip(".")
        detail = value.osError  # "111: Connection refused", or an address
        return f"{text}: {detail}" if isinstance(detail, str) and detail else text
    return reason.getErrorMessage()
