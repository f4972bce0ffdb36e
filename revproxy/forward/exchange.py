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
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from revproxy.forward.attempts import Attempts
from revproxy.forward.bodies import SMALL_BODY, Body, planBody, replayable
from revproxy.forward.relay import relayHead, sendHeadNow
from revproxy.http.errors import respondWithError
from revproxy.http.headers import forwardedHeaderLines, requestHead
from revproxy.http.server import ProxyRequest
from revproxy.http.upgrade import requestedUpgrade
from revproxy.routing import HostRoute, Upstream
from revproxy.routing.balancing import consistentHash
from revproxy.upstream.connection import UpstreamConnection
from revproxy.upstream.pool import connectFailure
from revproxy.upstream.state import UP, HostState, UpstreamState

if TYPE_CHECKING:
    from revproxy.forward.resource import RoutingProxyResource

__all__ = ["Exchange", "SMALL_BODY", "connectFailure"]

log = Logger()


@implementer(IPushProducer)
class Exchange(Attempts):
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
        "_headers",
        "_body",
        "_responded",
        "_producing",
        "_done",
        "_start",
        "_key",
        "_bodySize",
        "_upgrade",
    )

    _upstream: Upstream | None
    _headers: list[bytes]
    _body: Body

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
        self._timer = None
        self._deadline = None
        self._tried: list[UpstreamState] | None = None
        self._state: UpstreamState | None = None
        self._upstream = None
        self._responded = False
        self._producing = False
        self._done = False
        self._start = resource.reactor.seconds()
        self._key = 0
        self._bodySize = 0
        self._attempts = 0
        self._probe = False
        self._holds = 0

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
        self._headers = forwardedHeaderLines(request, self._rawHost, self._resource.forwarding)
        upgrade = requestedUpgrade(request)
        self._upgrade = upgrade is not None
        if upgrade is not None:
            self._headers += upgrade
        self._bodySize, self._body = planBody(request, self._headers)
        hashKey = self._resource.hashKey
        if hashKey is not None and self._route.policy is consistentHash:
            self._key = hashKey(request)
        self.pick()

    def requestBodyFailed(self, status: int, message: bytes) -> None:
        """
        The client's body cannot be completed: abandon the upstream request,
        and answer C{status} if the response has not begun.
        """
        if self._done:
            return
        conn = self._conn
        self._conn = None
        self.stopTimer()
        if conn is not None:
            conn.abort()
        if self._state is not None:
            state, self._state = self._state, None
            self.release(state)
        if not self._responded:
            self.fail(status, message)
            return
        self.cutOff()

    def cutOff(self) -> None:
        """
        Too late for an error status: end the request and cut the client
        off, so that it sees an incomplete response, not a complete wrong
        one.
        """
        request = self._request
        if self._producing:
            self._producing = False
            request.unregisterProducer()
        self.finish(request.code)
        if request.channel is not None:
            request.channel.forceAbortClient()

    # -- 1. pick -----------------------------------------------------------

    def pick(self) -> None:
        """
        Let the host's policy choose among its usable upstreams, and
        connect; with none usable, hold the request (C{--retry-window}) or
        answer 503.
        """
        now = self._resource.reactor.seconds()
        state = self._host.pick(now, self._key)
        if state is None:
            self.noUpstream(now)
            return
        self.use(state)

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
            error=connectFailure(reason),
        )
        state = self._state
        assert state is not None
        self._state = None
        self.release(state)
        if not reason.check(CancelledError):
            # A cancelled attempt (the client went away) says nothing about
            # the upstream.
            state.failed(self._resource.reactor.seconds())
        # Nothing was sent, so any method can go to the next upstream.
        if not self.retryElsewhere(state, "connect"):
            self.gaveUp(b"no upstream for this host could be reached", unreachable=True)

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
        basePath = self._upstream.basePath  # type: ignore[union-attr]
        return requestHead(request.method, request.uri, basePath, self._headers)

    # -- 4. await the response -----------------------------------------------

    def awaitResponse(self) -> None:
        """
        Start the response timeout: the head must arrive in time.
        """
        deadline = self._deadline = self._conn.deadline  # type: ignore[union-attr]
        deadline.expired = self.timedOut
        deadline.set(self._resource.responseTimeout)

    def timedOut(self) -> None:
        """
        No response head in time: drop the connection and answer 504.
        """
        self._deadline = None
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
        self.stopTimer()
        self._responded = True
        if 502 <= code <= 504 and self._resource.failOn5xx:
            state = self._state
            if state is not None:
                state.failed(self._resource.reactor.seconds())
                # Not a success: the response's end must not restore it.
                self._probe = False
                self._state = None
                self.release(state)
        relayHead(self._request, code, reason, headers, self._resource.dates.now())
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

    def awaitingBody(self) -> None:
        if not self._done:
            sendHeadNow(self._request)

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
        if state is not None and (
            state.consecutiveFailures or state.health is not UP or state.ejectedUntil
        ):
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
        self.stopTimer()
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
        self.stopTimer()
        if self._done:
            return
        upstream, resource = self._upstream, self._resource
        if self._responded:
            log.warn(
                "upstream {upstream} failed during the response for {host}: {error}",
                upstream=str(upstream),
                host=self._route.host,
                error=reason.getErrorMessage(),
            )
            if self._state is not None:
                self._state.failed(resource.reactor.seconds())
            self.cutOff()
            return
        retry = resource.retry.retryOnFreshConnection
        if (
            conn is not None
            and retry(self._request.method, conn.reused, responseBytes)
            and replayable(self._body, self._bodySize, resource.retryBuffer)
        ):
            # A pooled connection that the upstream closed as we reused it:
            # the request was not processed, try once on a new connection.
            resource.retried("stale")
            self.connect(fresh=True)
            return
        log.warn(
            "upstream {upstream} failed for {host}: {error}",
            upstream=str(upstream),
            host=self._route.host,
            error=reason.getErrorMessage(),
        )
        state = self._state
        if state is not None:
            state.failed(resource.reactor.seconds())
            if not responseBytes and replayable(self._body, self._bodySize, resource.retryBuffer):
                # Nothing came back and the proxy still holds the body:
                # another upstream can have the request.
                self._state = None
                self.release(state)
                if self.retryElsewhere(state, "reset"):
                    return
                self.gaveUp(b"the upstream server failed to answer")
                return
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
            self.release(state)
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
        upstream request and close its connection.  The request is
        accounted for first, so that the cancelled attempt is not retried
        elsewhere.
        """
        if not self._done:
            self.finish(499)
        self.stopTimer()
        if self._cancelConnect is not None:
            cancel, self._cancelConnect = self._cancelConnect, None
            cancel()
        self.stopProducing()

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
