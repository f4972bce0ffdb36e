# -*- test-case-name: tests.forward.test_resource -*-
"""
The proxy resource: finds each request's route, forwards the request to an
upstream and streams the response back.

L{RoutingProxyResource} derives from L{twisted.web.proxy.ReverseProxyResource}
(the design card asks for it, and it keeps the resource usable wherever a
C{ReverseProxyResource} is), but it does not forward through
C{twisted.web.proxy.ProxyClient}: on Twisted 26.10 that client forwards
C{Transfer-Encoding: chunked} together with an already de-chunked body
(request smuggling), speaks HTTP/1.0 with a new connection per request,
keeps only the last of repeated headers, answers 501 when it cannot connect
and never stops the upstream when the client goes away (twisted#6768).  Each
request is instead carried by an L{revproxy.forward.exchange.Exchange} over
the pooled HTTP/1.1 connections of L{revproxy.upstream}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.proxy import ReverseProxyResource
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from revproxy.forward.exchange import Exchange
from revproxy.forward.hashkey import HashKey, parseHashKey
from revproxy.forward.reporting import AccessLog, RequestMetrics
from revproxy.forward.retry import STANDARD_RETRY, RetryPolicy
from revproxy.forward.tunnel import TunnelRegistry
from revproxy.http.errors import DateCache, respondWithError
from revproxy.http.forwarding import DEFAULT_POLICY, ForwardingPolicy, assignRequestId
from revproxy.routing import RouteError, normalizeRequestHost
from revproxy.routing.resolver import NoRouteTable, RouteResolver
from revproxy.upstream.pool import UpstreamPool
from revproxy.upstream.state import UpstreamStates

__all__ = ["RoutingProxyResource"]

log = Logger()


class RoutingProxyResource(ReverseProxyResource):
    """
    A reverse proxy resource that asks a L{RouteResolver} for the route of
    each request's Host and forwards it over an L{UpstreamPool}.

    @param states: the runtime state of routes and upstreams; by default a
        new registry that observes C{resolver}.
    @param retry: when a failed request is tried again.
    @param retries: how many times a request may be tried again
        (C{--retries}).
    @param retryBuffer: the largest request body, in bytes, that is sent
        again after it was sent once (C{--retry-buffer}).
    @param retryWindow: how long, in seconds from its arrival, a request
        may wait for an upstream of its host to come back
        (C{--retry-window}); 0 not to wait.
    @param failOn5xx: whether a 502, 503 or 504 from an upstream counts as
        its failure (C{--fail-on-5xx}).
    @param hashKey: the request key of the C{hash} policy.
    @param forwarding: whose forwarding headers are believed, and which
        are sent (L{revproxy.http.forwarding}).
    @param tunnels: the registry of open tunnels; by default a new one
        (with the default timeouts, logging ends to C{accessLog}'s
        C{tunnelEnded} if it has one) that observes C{resolver}.

    @ivar inflight: how many requests are being forwarded now.
    @ivar retryCounts: how many times requests were tried again, by
        reason: C{connect} (a failed connection), C{reset} (a failure
        before any response byte), C{stale} (a pooled connection closed by
        the upstream), C{window} (a held request tried again).
    """

    isLeaf = True
    site: Any = None
    """The L{revproxy.http.server.ProxySite} that serves it, if known (for
    the client side's metrics)."""

    def __init__(
        self,
        resolver: RouteResolver,
        pool: UpstreamPool,
        reactor: IReactorTime,
        responseTimeout: float = 60.0,
        accessLog: AccessLog | None = None,
        metrics: RequestMetrics | None = None,
        states: UpstreamStates | None = None,
        retry: RetryPolicy = STANDARD_RETRY,
        retries: int = 2,
        retryBuffer: int = 64 * 1024,
        retryWindow: float = 0.0,
        failOn5xx: bool = False,
        hashKey: HashKey | None = None,
        tunnels: TunnelRegistry | None = None,
        forwarding: ForwardingPolicy = DEFAULT_POLICY,
    ) -> None:
        # ReverseProxyResource's own state is the one upstream it proxies
        # to: we have none (each request's upstream comes from the route
        # table), so it gets placeholders that nothing reads, and our
        # reactor instead of its default, the global one.
        ReverseProxyResource.__init__(self, "", 0, b"", reactor=reactor)
        if states is None:
            states = UpstreamStates()
            resolver.addObserver(states)
        if tunnels is None:
            tunnels = TunnelRegistry(reactor, log=getattr(accessLog, "tunnelEnded", None))
            resolver.addObserver(tunnels)
        self.tunnels = tunnels
        self.forwarding = forwarding
        self.resolver = resolver
        self.pool = pool
        self.reactor = reactor
        self.states = states
        self.retry = retry
        self.retries = retries
        self.retryBuffer = retryBuffer
        self.retryWindow = retryWindow
        self.failOn5xx = failOn5xx
        self.hashKey = hashKey if hashKey is not None else parseHashKey("client-ip")
        self.retryCounts: dict[str, int] = {}
        self.responseTimeout = responseTimeout
        self.accessLog = accessLog
        self.metrics = metrics
        self.dates = DateCache(reactor)
        self.inflight = 0
        self._idleWaiters: list[Callable[[], None]] = []

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self

    def render(self, request: Request) -> int:
        """
        Route and forward C{request}; answer 4xx/5xx for requests that cannot
        be routed.  Every request gets its id first, so that every answer
        carries it.
        """
        assignRequestId(request, self.forwarding)
        hosts = request.requestHeaders.getRawHeaders(b"host")
        rawHost = hosts[0] if hosts else b""
        try:
            route = self.resolver.resolve(normalizeRequestHost(rawHost))
        except NoRouteTable:
            return self._refuse(request, 503, b"no routes loaded yet")
        except RouteError as e:
            # A route source that decides per request (a host converter)
            # named something that is not an upstream.
            log.warn(
                "no usable route for host {host}: {error}",
                host=rawHost[:256].decode("latin-1"),
                error=str(e),
            )
            return self._refuse(request, 502, b"the route for this host is not usable")
        if hosts and len(hosts) > 1:
            return self._refuse(request, 400, b"more than one Host header")
        if route is None:
            if not hosts:
                return self._refuse(request, 400, b"request has no Host header")
            return self._refuse(
                request, 404, b"no route for host " + rawHost[:256]
            )
        Exchange(self, request, self.states.forRoute(route), rawHost).start()
        return NOT_DONE_YET

    def _refuse(self, request: Request, code: int, message: bytes) -> int:
        respondWithError(request, code, message, self.dates.now())
        if self.accessLog is not None:
            self.accessLog(request, code, None, 0.0)
        if self.metrics is not None:
            self.metrics.requestEnded("", code, "", 0.0)
        return NOT_DONE_YET

    def retried(self, reason: str) -> None:
        """
        Count a request tried again for C{reason}.
        """
        counts = self.retryCounts
        counts[reason] = counts.get(reason, 0) + 1

    # -- in-flight accounting, for draining -------------------------------

    def exchangeStarted(self) -> None:
        """
        An exchange began.
        """
        self.inflight += 1

    def exchangeEnded(self) -> None:
        """
        An exchange ended; the last one in flight calls the idle waiters.
        """
        self.inflight -= 1
        if self.inflight == 0 and self._idleWaiters:
            waiters, self._idleWaiters = self._idleWaiters, []
            for w in waiters:
                w()

    def whenIdle(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once no request is in flight (at once if none is).
        """
        if self.inflight == 0:
            callback()
        else:
            self._idleWaiters.append(callback)
