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
request is instead carried by a L{_Forward} over the pooled HTTP/1.1
connections of L{revproxy.upstream.connection}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.proxy import ReverseProxyResource
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from revproxy.ops.metrics import ProxyMetrics
from revproxy.routing.resolver import NoRouteTable, RouteResolver
from revproxy.routing import HostRoute, Upstream, normalizeRequestHost
from revproxy.http.server import ProxyRequest
from revproxy.upstream.connection import UpstreamConnection
from revproxy.upstream.pool import UpstreamPool

__all__ = ["RoutingProxyResource", "HOP_BY_HOP", "joinPath"]

log = Logger()

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
"""Hop-by-hop fields (RFC 9110 section 7.6.1, and those Go's httputil
drops), never forwarded in either direction."""

# Request fields that the proxy sets itself instead of forwarding.
_REQUEST_DROP = HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
}
_RESPONSE_DROP = HOP_BY_HOP

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

SMALL_BODY = 64 * 1024
"""Request bodies up to this size are sent in the same write as the head."""


def joinPath(base: bytes, target: bytes) -> bytes:
    """
    Join an upstream's base path with a request target the way Go's
    C{httputil.NewSingleHostReverseProxy} does: exactly one slash between
    them, the query kept as it was sent.
    """
    if not base:
        return target
    path, sep, query = target.partition(b"?")
    if base.endswith(b"/"):
        joined = base + path[1:] if path.startswith(b"/") else base + path
    elif path.startswith(b"/"):
        joined = base + path
    elif path:
        joined = base + b"/" + path
    else:
        joined = base
    return joined + sep + query


def _originForm(uri: bytes) -> bytes:
    """
    The path and query of a request target, also for the absolute form
    (C{http://host/path}) that clients may send to a proxy.
    """
    if uri[:1] == b"/":
        return uri
    schemeEnd = uri.find(b"://")
    if schemeEnd > 0:
        slash = uri.find(b"/", schemeEnd + 3)
        query = uri.find(b"?", schemeEnd + 3)
        if slash < 0 or (0 <= query < slash):
            return b"/" + uri[query:] if query >= 0 else b"/"
        return uri[slash:]
    return uri


def _connectionTokens(values: Sequence[bytes] | None) -> frozenset[bytes]:
    if not values:
        return frozenset()
    return frozenset(
        t.strip().lower() for v in values for t in v.split(b",") if t.strip()
    )


AccessLog = Callable[[Request, int, "Upstream | None", float], None]


class RoutingProxyResource(ReverseProxyResource):
    """
    A reverse proxy resource that asks a L{RouteResolver} for the route of
    each request's Host and forwards it over an L{UpstreamPool}.

    @ivar inflight: how many requests are being forwarded now.
    """

    isLeaf = True

    def __init__(
        self,
        resolver: RouteResolver,
        pool: UpstreamPool,
        reactor: IReactorTime,
        responseTimeout: float = 60.0,
        accessLog: AccessLog | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        Resource.__init__(self)
        self.resolver = resolver
        self.pool = pool
        self.reactor = reactor
        self.responseTimeout = responseTimeout
        self.accessLog = accessLog
        self.metrics = metrics
        self.inflight = 0
        self._idleWaiters: list[Callable[[], None]] = []
        self._second = -1
        self._date = b""

    def date(self) -> bytes:
        """
        The value of a Date header for now, on the resource's clock, made
        once a second.
        """
        now = int(self.reactor.seconds())
        if now != self._second:
            self._second = now
            self._date = datetimeToString(now)
        return self._date

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self

    def render(self, request: Request) -> int:
        """
        Route and forward C{request}; answer 4xx/5xx for requests that cannot
        be routed.
        """
        hosts = request.requestHeaders.getRawHeaders(b"host")
        rawHost = hosts[0] if hosts else b""
        try:
            route = self.resolver.resolve(normalizeRequestHost(rawHost))
        except NoRouteTable:
            return self._refuse(request, 503, b"no routes loaded yet")
        if hosts and len(hosts) > 1:
            return self._refuse(request, 400, b"more than one Host header")
        if route is None:
            if not hosts:
                return self._refuse(request, 400, b"request has no Host header")
            return self._refuse(
                request, 404, b"no route for host " + rawHost[:256]
            )
        _Forward(self, request, route, rawHost).start()
        return NOT_DONE_YET

    def _refuse(self, request: Request, code: int, message: bytes) -> int:
        _respond(request, code, message, self.date())
        if self.accessLog is not None:
            self.accessLog(request, code, None, 0.0)
        if self.metrics is not None:
            self.metrics.requestEnded("", code, "", 0.0)
        return NOT_DONE_YET

    # -- in-flight accounting, for draining -------------------------------

    def _started(self) -> None:
        self.inflight += 1

    def _ended(self) -> None:
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


def _respond(request: Request, code: int, message: bytes, date: bytes) -> None:
    """
    Answer C{request} with a short plain-text error.
    """
    request.setResponseCode(code)
    headers = request.responseHeaders
    headers.removeHeader(b"server")
    headers.setRawHeaders(b"date", [date])
    headers.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"x-content-type-options", [b"nosniff"])
    headers.setRawHeaders(b"content-length", [b"%d" % (len(message) + 1,)])
    request.write(message + b"\n")
    request.finish()


@implementer(IPushProducer)
class _Forward:
    """
    One client request on its way to an upstream and its response on the
    way back.  It is the L{revproxy.upstream.connection.ResponseReceiver} of the upstream
    connection and the push producer of the client's response.
    """

    def __init__(
        self,
        resource: RoutingProxyResource,
        request: Request,
        route: HostRoute,
        rawHost: bytes,
    ) -> None:
        self._resource = resource
        self._request = request
        self._route = route
        self._rawHost = rawHost
        self._conn: UpstreamConnection | None = None
        self._cancelConnect: Callable[[], None] | None = None
        self._timer: IDelayedCall | None = None
        self._tried: list[Upstream] = []
        self._upstream: Upstream | None = None
        self._headers: list[bytes] | None = None
        self._body: bytes | IO[bytes] | None = None
        self._responded = False
        self._producing = False
        self._done = False
        self._start = resource.reactor.seconds()

    # -- sending ---------------------------------------------------------

    def start(self) -> None:
        self._resource._started()
        request = self._request
        if isinstance(request, ProxyRequest):
            request.watcher = self
        else:
            request.notifyFinish().addErrback(self.clientGone)
        self._headers = self._requestHeaders()
        self._body = self._requestBody()
        self._connect(self._route.pick(), fresh=False)

    def _requestHeaders(self) -> list[bytes]:
        """
        The header lines to send upstream, without the request line.
        """
        request = self._request
        headers = request.requestHeaders
        drop = _REQUEST_DROP
        connection = headers.getRawHeaders(b"connection")
        extra = _connectionTokens(connection) if connection else None
        lines: list[bytes] = []
        append = lines.append
        forwardedFor: list[bytes] | None = None
        for name, values in headers.getAllRawHeaders():
            lname = name.lower()
            if lname in drop or (extra and lname in extra):
                if lname == b"x-forwarded-for":
                    forwardedFor = list(values)
                continue
            for value in values:
                append(name + b": " + value + b"\r\n")
        client = request.getClientAddress()
        clientHost = getattr(client, "host", None)
        if clientHost is not None:
            ip = clientHost.encode("ascii")
            if forwardedFor:
                ip = b", ".join(forwardedFor) + b", " + ip
            append(b"X-Forwarded-For: " + ip + b"\r\n")
        elif forwardedFor:
            append(b"X-Forwarded-For: " + b", ".join(forwardedFor) + b"\r\n")
        if self._rawHost:
            append(b"X-Forwarded-Host: " + self._rawHost + b"\r\n")
        append(
            b"X-Forwarded-Proto: https\r\n"
            if request.isSecure()
            else b"X-Forwarded-Proto: http\r\n"
        )
        return lines

    def _requestBody(self) -> bytes | IO[bytes] | None:
        request = self._request
        content = request.content
        headers = request.requestHeaders
        framed = headers.hasHeader(b"content-length") or headers.hasHeader(
            b"transfer-encoding"
        )
        if content is None:
            size = 0
        else:
            content.seek(0, 2)
            size = content.tell()
            content.seek(0)
        if not framed and size == 0:
            return None
        self._headers.append(b"Content-Length: %d\r\n" % (size,))  # type: ignore[union-attr]
        if size == 0:
            return b""
        if size <= SMALL_BODY:
            return content.read()  # type: ignore[union-attr,no-any-return]
        return content

    def _head(self, upstream: Upstream) -> bytes:
        request = self._request
        target = _originForm(request.uri)
        if upstream.basePath:
            target = joinPath(upstream.basePath, target)
        return b"".join(
            [request.method, b" ", target, b" HTTP/1.1\r\n", *self._headers, b"\r\n"]  # type: ignore[misc]
        )

    def _connect(self, upstream: Upstream, fresh: bool) -> None:
        self._upstream = upstream
        self._cancelConnect = self._resource.pool.connection(
            upstream, self._connected, self._connectFailed, fresh
        )

    def _connected(self, conn: UpstreamConnection) -> None:
        self._cancelConnect = None
        if self._done:
            conn.abort()
            return
        self._conn = conn
        self._timer = self._resource.reactor.callLater(
            self._resource.responseTimeout, self._timedOut
        )
        conn.send(
            self._head(self._upstream),  # type: ignore[arg-type]
            self._body,
            self,
            self._request.method == b"HEAD",
        )

    def _connectFailed(self, reason: Failure) -> None:
        self._cancelConnect = None
        if self._done:
            return
        upstream = self._upstream
        assert upstream is not None
        log.warn(
            "cannot connect to upstream {upstream} for {host}: {error}",
            upstream=str(upstream),
            host=self._route.host,
            error=reason.getErrorMessage(),
        )
        self._tried.append(upstream)
        # Nothing was sent, so any method can go to the next upstream.
        left = [u for u in self._route.upstreams if u not in self._tried]
        if left:
            self._connect(self._route.balancer.pick(left), fresh=False)
            return
        self._fail(502, b"no upstream for this host could be reached")

    # -- the Exchange interface -------------------------------------------

    def responseStarted(
        self,
        code: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        bodyLength: int,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._responded = True
        request = self._request
        request.setResponseCode(code, reason or None)
        out = request.responseHeaders
        if not isinstance(request, ProxyRequest):
            # twisted.web's own Request set these for itself.
            out.removeHeader(b"server")
            out.removeHeader(b"date")
        drop = _RESPONSE_DROP
        kept = []
        extra: frozenset[bytes] | None = None
        hasDate = False
        for name, value in headers:
            lname = name.lower()
            if lname in drop:
                if lname == b"connection":
                    extra = _connectionTokens([value])
                continue
            if lname == b"date":
                hasDate = True
            kept.append((lname, name, value))
        add = out.addRawHeader
        for lname, name, value in kept:
            if extra is None or lname not in extra:
                add(name, value)
        if not hasDate:
            out.setRawHeaders(b"date", [self._resource.date()])
        if bodyLength < 0 or bodyLength > SMALL_BODY:
            # A body that may not fit the client's socket buffer: let the
            # client's transport pause the upstream.  A small one is
            # written whole without pausing anything.
            self._producing = True
            request.registerProducer(self, True)

    def bodyReceived(self, data: bytes) -> None:
        self._request.write(data)

    def responseEnded(self) -> None:
        self._conn = None
        request = self._request
        if self._producing:
            self._producing = False
            if request.channel is not None:
                request.unregisterProducer()
        if self._done:
            return
        # Finish the response before accounting for it: the end of the last
        # request in flight lets a drain close the client connections.
        request.finish()
        self._finish(request.code)

    def exchangeFailed(self, reason: Failure, responseBytes: bool) -> None:
        conn = self._conn
        self._conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done:
            return
        upstream = self._upstream
        if self._responded:
            # Too late for an error status: cut the client off so that it
            # sees an incomplete response, not a complete wrong one.
            log.warn(
                "upstream {upstream} failed during the response for {host}: {error}",
                upstream=str(upstream),
                host=self._route.host,
                error=reason.getErrorMessage(),
            )
            request = self._request
            if self._producing:
                self._producing = False
                request.unregisterProducer()
            self._finish(request.code)
            if request.channel is not None:
                request.channel.forceAbortClient()
            return
        if (
            conn is not None
            and conn.reused
            and not responseBytes
            and self._request.method in IDEMPOTENT
        ):
            # A pooled connection that the upstream closed as we reused it:
            # the request was not processed, try once on a new connection.
            self._connect(upstream, fresh=True)  # type: ignore[arg-type]
            return
        log.warn(
            "upstream {upstream} failed for {host}: {error}",
            upstream=str(upstream),
            host=self._route.host,
            error=reason.getErrorMessage(),
        )
        self._fail(502, b"the upstream server failed to answer")

    def _timedOut(self) -> None:
        self._timer = None
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
        log.warn(
            "upstream {upstream} sent no response headers for {host} within "
            "{timeout} seconds",
            upstream=str(self._upstream),
            host=self._route.host,
            timeout=self._resource.responseTimeout,
        )
        self._fail(504, b"the upstream server did not answer in time")

    # -- the client side ---------------------------------------------------

    def _fail(self, code: int, message: bytes) -> None:
        request = self._request
        _respond(request, code, message, self._resource.date())
        self._finish(code)

    def _finish(self, code: int) -> None:
        """
        Account for the end of this request, once.
        """
        self._done = True
        request = self._request
        if isinstance(request, ProxyRequest):
            request.watcher = None
        resource = self._resource
        accessLog = resource.accessLog
        metrics = resource.metrics
        if accessLog is not None or metrics is not None:
            duration = resource.reactor.seconds() - self._start
            if accessLog is not None:
                accessLog(self._request, code, self._upstream, duration)
            if metrics is not None:
                upstream = self._upstream
                metrics.requestEnded(
                    self._route.host,
                    code,
                    upstream.name if upstream is not None else "",
                    duration,
                )
        resource._ended()

    def clientGone(self, reason: Failure) -> None:
        """
        The client disconnected before the response was complete: stop the
        upstream request and close its connection.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._cancelConnect is not None:
            cancel, self._cancelConnect = self._cancelConnect, None
            cancel()
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
        if not self._done:
            self._finish(499)

    # IPushProducer, toward the client.

    def pauseProducing(self) -> None:
        if self._conn is not None:
            self._conn.pauseReading()

    def resumeProducing(self) -> None:
        if self._conn is not None:
            self._conn.resumeReading()

    def stopProducing(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
