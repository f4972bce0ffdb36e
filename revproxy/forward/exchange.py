# -*- test-case-name: tests.forward.test_exchange -*-
"""
The exchange: one client request on its way to an upstream and its
response on the way back.

Its life is a sequence of phases, each a method:

 1. L{Exchange.pick}: the host's balancing policy chooses an upstream;
 2. L{Exchange.connect}: the pool gives a connection to it, pooled or new;
 3. L{Exchange.send}: the request head and body go out (a small body in the
    head's write, a large one streamed by the connection's body sender);
 4. L{Exchange.awaitResponse}: the response timeout runs until the head
    arrives;
 5. L{Exchange.streamResponse}: the head is relayed and the body streams
    to the client, with flow control both ways;
 6. L{Exchange.finish} or L{Exchange.fail}: the client is answered and the
    request accounted for, once.

Failures go through L{Exchange.connectFailed} and L{Exchange.exchangeFailed},
which ask the L{revproxy.forward.retry.RetryPolicy} whether to try again.
The exchange keeps the runtime state of its upstream up to date (in flight,
failures, successes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from revproxy.http.errors import respondWithError
from revproxy.http.headers import (
    forwardedHeaderLines,
    joinPath,
    originForm,
    relayResponseHeaders,
)
from revproxy.http.server import ProxyRequest
from revproxy.http.upgrade import requestedUpgrade
from revproxy.routing import HostRoute, Upstream
from revproxy.upstream.connection import UpstreamConnection
from revproxy.upstream.state import UP, HostState, UpstreamState

if TYPE_CHECKING:
    from revproxy.forward.resource import RoutingProxyResource

__all__ = ["Exchange", "SMALL_BODY"]

log = Logger()

SMALL_BODY = 64 * 1024
"""Request bodies up to this size are sent in the same write as the head;
response bodies up to this size are written to the client without flow
control."""


@implementer(IPushProducer)
class Exchange:
    """
    One request's life, phase by phase.  It is the
    L{revproxy.upstream.connection.ResponseReceiver} of its upstream
    connection, the L{revproxy.http.server.ClientWatcher} of its request and
    the push producer of the client's response.
    """

    __slots__ = (
        "_resource",
        "_request",
        "_route",
        "_host",
        "_rawHost",
        "_conn",
        "_cancelConnect",
        "_timer",
        "_tried",
        "_state",
        "_upstream",
        "_headers",
        "_body",
        "_responded",
        "_producing",
        "_done",
        "_start",
        "_upgrade",
    )

    _upstream: Upstream | None
    _headers: list[bytes]
    _body: bytes | IO[bytes] | None

    def __init__(
        self,
        resource: RoutingProxyResource,
        request: Request,
        host: HostState,
        rawHost: bytes,
    ) -> None:
        self._resource = resource
        self._request = request
        self._host = host
        self._route: HostRoute = host.route
        self._rawHost = rawHost
        self._conn: UpstreamConnection | None = None
        self._cancelConnect: Callable[[], None] | None = None
        self._timer: IDelayedCall | None = None
        self._tried: list[UpstreamState] | None = None
        self._state: UpstreamState | None = None
        self._upstream = None
        self._responded = False
        self._producing = False
        self._done = False
        self._start = resource.reactor.seconds()

    def start(self) -> None:
        """
        Begin: watch the client, prepare the request, then pick.
        """
        self._resource.exchangeStarted()
        request = self._request
        if isinstance(request, ProxyRequest):
            request.watcher = self
        else:
            request.notifyFinish().addErrback(self.clientGone)
        self._headers = forwardedHeaderLines(request, self._rawHost)
        upgrade = requestedUpgrade(request)
        self._upgrade = upgrade is not None
        if upgrade is not None:
            self._headers += upgrade
        self._body = self._requestBody()
        self.pick()

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
        self._headers.append(b"Content-Length: %d\r\n" % (size,))
        if size == 0:
            return b""
        if size <= SMALL_BODY:
            return content.read()  # type: ignore[union-attr,no-any-return]
        return content

    # -- 1. pick -----------------------------------------------------------

    def pick(self) -> None:
        """
        Let the host's policy choose among all its upstreams, and connect.
        """
        state = self._state = self._host.pick()
        self._upstream = state.upstream
        state.inflight += 1
        self.connect(fresh=False)

    # -- 2. connect --------------------------------------------------------

    def connect(self, fresh: bool) -> None:
        """
        Ask the pool for a connection to the chosen upstream: an idle one,
        unless C{fresh}, else a new one.
        """
        self._cancelConnect = self._resource.pool.connection(
            self._upstream, self._connected, self.connectFailed, fresh  # type: ignore[arg-type]
        )

    def _connected(self, conn: UpstreamConnection) -> None:
        self._cancelConnect = None
        if self._done:
            conn.abort()
            return
        self._conn = conn
        self.awaitResponse()
        self.send(conn)

    def connectFailed(self, reason: Failure) -> None:
        """
        No connection could be made to the chosen upstream: fail over to
        another, as the retry policy allows, or answer 502.
        """
        self._cancelConnect = None
        if self._done:
            return
        upstream = self._upstream
        log.warn(
            "cannot connect to upstream {upstream} for {host}: {error}",
            upstream=str(upstream),
            host=self._route.host,
            error=reason.getErrorMessage(),
        )
        state = self._state
        assert state is not None
        self._state = None
        state.inflight -= 1
        if not reason.check(CancelledError):
            # A cancelled attempt (the client went away) says nothing about
            # the upstream.
            state.failed(self._resource.reactor.seconds())
        tried = self._tried
        if tried is None:
            tried = self._tried = []
        tried.append(state)
        # Nothing was sent, so any method can go to the next upstream.
        left = self._resource.retry.failover(self._host.states, tried)
        if left:
            state = self._state = self._host.pickFrom(left)
            self._upstream = state.upstream
            state.inflight += 1
            self.connect(fresh=False)
            return
        self.fail(502, b"no upstream for this host could be reached")

    # -- 3. send -------------------------------------------------------------

    def send(self, conn: UpstreamConnection) -> None:
        """
        Send the request head and body on C{conn}.
        """
        request = self._request
        conn.send(self.head(), self._body, self, request.method == b"HEAD", self._upgrade)

    def head(self) -> bytes:
        """
        The request line and header block for the chosen upstream.
        """
        request = self._request
        target = originForm(request.uri)
        basePath = self._upstream.basePath  # type: ignore[union-attr]
        if basePath:
            target = joinPath(basePath, target)
        return b"".join(
            [request.method, b" ", target, b" HTTP/1.1\r\n", *self._headers, b"\r\n"]
        )

    # -- 4. await the response -----------------------------------------------

    def awaitResponse(self) -> None:
        """
        Start the response timeout: the head must arrive in time.
        """
        resource = self._resource
        self._timer = resource.reactor.callLater(resource.responseTimeout, self.timedOut)

    def timedOut(self) -> None:
        """
        No response head in time: drop the connection and answer 504.
        """
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
        if self._state is not None:
            self._state.failed(self._resource.reactor.seconds())
        self.fail(504, b"the upstream server did not answer in time")

    # -- 5. stream the response (the ResponseReceiver interface) --------------

    def responseStarted(
        self,
        code: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        bodyLength: int,
    ) -> None:
        """
        The response head arrived: relay it, and let the client's transport
        pause the upstream if the body may not fit its buffer.
        """
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
        if not relayResponseHeaders(out, headers):
            out.setRawHeaders(b"date", [self._resource.dates.now()])
        if bodyLength < 0 or bodyLength > SMALL_BODY:
            self.streamResponse()

    def streamResponse(self) -> None:
        """
        A body that may not fit the client's socket buffer: register as the
        response's producer, so that the client's transport pauses the
        upstream.  A small body is written whole without pausing anything.
        """
        self._producing = True
        self._request.registerProducer(self, True)

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
        state = self._state
        if state is not None and (state.consecutiveFailures or state.health is not UP):
            state.succeeded()
        # Finish the response before accounting for it: the end of the last
        # request in flight lets a drain close the client connections.
        request.finish()
        self.finish(request.code)

    def switchedProtocols(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """
        The upstream switched protocols: the request ends as a tunnel
        (L{revproxy.forward.tunnel}), logged when the tunnel ends.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self._conn
        self._conn = None
        if self._done or conn is None:
            if conn is not None:
                conn.abort()
            return
        self._responded = True
        state = self._state
        if state is not None and (state.consecutiveFailures or state.health is not UP):
            state.succeeded()
        self._resource.tunnels.open(
            self._request, conn, self._route, self._upstream, self._start,  # type: ignore[arg-type]
            reason, headers, rest,
        )
        self.finish(101)

    def exchangeFailed(self, reason: Failure, responseBytes: bool) -> None:
        conn = self._conn
        self._conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done:
            return
        upstream = self._upstream
        resource = self._resource
        if self._responded:
            # Too late for an error status: cut the client off so that it
            # sees an incomplete response, not a complete wrong one.
            log.warn(
                "upstream {upstream} failed during the response for {host}: {error}",
                upstream=str(upstream),
                host=self._route.host,
                error=reason.getErrorMessage(),
            )
            if self._state is not None:
                self._state.failed(resource.reactor.seconds())
            request = self._request
            if self._producing:
                self._producing = False
                request.unregisterProducer()
            self.finish(request.code)
            if request.channel is not None:
                request.channel.forceAbortClient()
            return
        if conn is not None and resource.retry.retryOnFreshConnection(
            self._request.method, conn.reused, responseBytes
        ):
            # A pooled connection that the upstream closed as we reused it:
            # the request was not processed, try once on a new connection.
            self.connect(fresh=True)
            return
        log.warn(
            "upstream {upstream} failed for {host}: {error}",
            upstream=str(upstream),
            host=self._route.host,
            error=reason.getErrorMessage(),
        )
        if self._state is not None:
            self._state.failed(resource.reactor.seconds())
        self.fail(502, b"the upstream server failed to answer")

    # -- 6. finish or fail -----------------------------------------------------

    def fail(self, code: int, message: bytes) -> None:
        """
        Answer the client with a short error, and account for it.
        """
        respondWithError(self._request, code, message, self._resource.dates.now())
        self.finish(code)

    def finish(self, code: int) -> None:
        """
        Account for the end of this request, once: the upstream's in-flight
        count, the access log, the metrics and the resource's in-flight
        count.
        """
        self._done = True
        state = self._state
        if state is not None:
            self._state = None
            state.inflight -= 1
        request = self._request
        if isinstance(request, ProxyRequest):
            request.watcher = None
        resource = self._resource
        accessLog = resource.accessLog
        metrics = resource.metrics
        if accessLog is not None or metrics is not None:
            duration = resource.reactor.seconds() - self._start
            upstream = self._upstream
            if accessLog is not None and code != 101:  # a tunnel logs its end
                accessLog(request, code, upstream, duration)
            if metrics is not None:
                metrics.requestEnded(
                    self._route.host,
                    code,
                    upstream.name if upstream is not None else "",
                    duration,
                )
        resource.exchangeEnded()

    # -- the client side -------------------------------------------------------

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
            self.finish(499)

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
