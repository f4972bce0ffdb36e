# -*- test-case-name: tests.etcd.test_client -*-
"""
The etcd adapter: L{EtcdClient}, the one class of revproxy that sends
requests to etcd, and the only module (with L{revproxy._compat}) that
imports txaioetcd.

Everything else sees the small L{IRouteStore} interface of
L{revproxy.etcd.types}: L{EtcdClient} implements it against etcd's
gRPC-JSON gateway, L{revproxy.etcd.memory.MemoryRouteStore} in memory for
unit tests.

We use txaioetcd 18.10.2 (the last release) for what it does right: its
request types (L{KeySet}, L{Transaction}, the C{Op*} and C{Comp*} classes),
the bodies its C{Client} builds for put/delete/txn/status, and its response
parsers.  Each of its defects is worked around here, and each has a
regression test in C{tests.etcd.test_client} (or C{tests.etcd.test_decoder}
for the watch stream):

  - It calls the gateway under C{/v3alpha/}, which etcd 3.4 and later no
    longer serve (404); they serve C{/v3/} (3.3 serves C{/v3beta/} and
    C{/v3alpha/}).  L{EtcdClient} discovers the prefix once per endpoint
    (C{/v3/}, then C{/v3beta/}, then C{/v3alpha/}) and forgets it on a 404,
    so a rolling upgrade of the cluster is followed.
  - C{Client.get/set/delete/submit} post through module-level C{treq.post},
    i.e. the global reactor and a global connection pool, whatever reactor
    the C{Client} was given; and they are C{inlineCallbacks} functions ending
    in C{returnValue}, deprecated since Twisted 24.7 and bound to be removed.
    So we do not call C{Client} at all: L{EtcdClient} builds each request
    body with txaioetcd's request assemblers and types, sends it with the
    injected HTTP client on the injected reactor, rotating through the
    endpoints, and parses the answer with txaioetcd's response types.
  - C{Client._post} never looks at the HTTP status: an error answer such as
    C{{"error": ..., "code": 11}} is parsed as an empty result.  We raise
    L{EtcdError} for every non-200 answer.
  - C{Client.get} forwards only C{key} and C{range_end} and drops every other
    keyword argument (C{revision}, C{limit}, ...) silently, and C{KeySet}'s
    prefix end is wrong for a prefix ending in C{0xff}.  Range reads are built
    here (L{EtcdClient.get_prefix}, with L{prefixRangeEnd}) and parsed with
    txaioetcd's C{Range}.
  - C{KeyValue._parse} turns an absent value into L{None}; the gateway omits
    empty fields, so an empty value arrives as L{None}.  We map it to C{b""}.
  - Its watch is unusable: C{_StreamingReceiver} splits each TCP read on
    newlines without keeping the remainder, so a message split across reads
    is dropped (events are lost, silently, under load); it hands the callback
    only each event's C{kv}, so a DELETE looks like a value of L{None}; it
    ignores C{canceled} and C{compact_revision}, so a watch cancelled by
    compaction looks like a quiet, healthy one forever; it does not send
    C{Grpc-Metadata-hasleader}, so a member cut off from its cluster keeps the
    stream open and silent; and it logs and swallows exceptions raised by the
    callback.  The watch is ours:
    L{revproxy.etcd.decoder.WatchStreamDecoder} is a pure, buffered decoder
    of the stream, and L{revproxy.etcd.watch.EtcdWatch} drives it from an
    unbuffered response and reports how and why the stream ended
    (L{WatchEnded}), or fails with the callback's exception.

So what is ours: the transport (which endpoint, which gateway prefix, the
injected HTTP client and reactor, timeouts, failover, the status check), the
range read, the watch and its decoder.  What is txaioetcd's: the request
types and the bodies built from them, and the parsers of the answers.
txaioetcd keeps its assemblers and parsers under private names; those are
reached only through L{revproxy._compat}, where each is pinned by a test.

txaioetcd is imported by this module only; importing it costs about a
quarter of a second (it pulls numpy and friends), so import this module
lazily from code that runs at start-up, never from the plugin file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, cast

import txaioetcd  # type: ignore[import-untyped]
from treq import content
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionLost,
    DNSLookupError,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from revproxy._compat import (
    etcdDeleteRequest,
    etcdPutRequest,
    etcdStatusRequest,
    etcdTxnHeader,
    etcdTxnRequest,
    parseEtcdDeleted,
    parseEtcdRange,
    parseEtcdRevision,
    parseEtcdStatus,
)
from revproxy.etcd.decoder import isEtcdAnswer, parseUnaryAnswer
from revproxy.etcd.http import BytesProducer, Timeout, describeProblem, wasCancelled
from revproxy.etcd.types import (
    Comparison,
    Delete,
    DeleteResult,
    EtcdError,
    EtcdStatus,
    EtcdTimeout,
    EtcdUnavailable,
    Entry,
    IRouteStore,
    ModRevisionIs,
    OnEvents,
    OnProgress,
    Operation,
    Put,
    Snapshot,
    TxnResult,
    prefixRangeEnd,
)
from revproxy.etcd.watch import EtcdWatch

__all__ = ["API_PREFIXES", "EtcdClient"]

log = Logger()

#: The gateway prefixes tried on each endpoint, in order: etcd 3.4 to 3.6
#: serve C{/v3/}, 3.3 serves C{/v3beta/}, 3.2 and 3.3 serve C{/v3alpha/}.
API_PREFIXES: tuple[str, ...] = ("/v3/", "/v3beta/", "/v3alpha/")

#: Unary gateway methods that may be sent again after a failure that leaves
#: unknown whether etcd received them.
_IDEMPOTENT = frozenset({"kv/range", "maintenance/status"})

_HEADERS = {b"Content-Type": [b"application/json"]}
# Without hasleader, a member cut off from its cluster keeps a watch open and
# silent; with it, the stream ends with "etcdserver: no leader".
_WATCH_HEADERS = {**_HEADERS, b"Grpc-Metadata-hasleader": [b"true"]}

JSON = dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------
# The etcd client


#: Failures after which the request surely did not reach etcd.
_NOT_SENT = (ConnectError, DNSLookupError)
#: Failures after which etcd may or may not have received the request.
_MAYBE_SENT = (
    ResponseNeverReceived,
    RequestTransmissionFailed,
    ResponseFailed,
    ConnectionLost,
)


@implementer(IRouteStore)
class EtcdClient:
    """
    An L{IRouteStore} on etcd's gRPC-JSON gateway, for etcd 3.3 to 3.6.

    Requests go to one endpoint until it fails to connect (or to answer in
    time), then to the next.  A request that may have reached etcd is sent
    again to the next endpoint only if it is a read.

    @param reactor: the clock for timeouts.
    @param endpoints: base URLs, e.g. C{["http://127.0.0.1:2379"]}.
    @param http_client: a treq client on an C{Agent} of the same reactor.
    @param timeout: seconds a unary request (and a watch's response headers)
        may take, per endpoint.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        endpoints: Sequence[str],
        httpClient: HTTPClient,
        timeout: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self._reactor = reactor
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._http = httpClient
        self._timeout = timeout
        self._current = 0
        self._prefixes: dict[str, str] = {}
        self._discovering: dict[str, list[Deferred[str]]] = {}

    @property
    def endpoint(self) -> str:
        """
        The endpoint requests go to now.
        """
        return self._endpoints[self._current]

    # -- transport

    def apiPrefix(self, endpoint: str) -> str | None:
        """
        The gateway prefix discovered for C{endpoint}, if any yet.
        """
        return self._prefixes.get(endpoint.rstrip("/"))

    def _post(self, url: str, body: JSON, stream: bool = False) -> Deferred[IResponse]:
        # Not treq's json=: it wraps the body in a FileBodyProducer, which
        # writes through the global cooperator, i.e. the global reactor.
        return cast(
            "Deferred[IResponse]",
            self._http.post(
                url,
                data=BytesProducer(json.dumps(body, separators=(",", ":")).encode()),
                headers=Headers(_WATCH_HEADERS if stream else _HEADERS),
                unbuffered=stream,
                reactor=self._reactor,  # type: ignore[arg-type]
            ),
        )

    async def _discover(self, endpoint: str) -> str:
        for prefix in API_PREFIXES:
            response = await self._post(endpoint + prefix + "maintenance/status", {})
            body = await content(response)
            if response.code == 404:
                continue
            if not isEtcdAnswer(body):
                why = f"it answered HTTP {response.code} to an etcd status request"
                raise EtcdError(None, f"{endpoint} is not etcd ({why})", response.code)
            log.info("etcd {endpoint} serves its gateway under {prefix}",
                     endpoint=endpoint, prefix=prefix)
            return prefix
        why = f"no etcd v3 gateway under {', '.join(API_PREFIXES)}"
        raise EtcdError(None, f"{endpoint} is not etcd ({why})", 404)

    async def _prefixFor(self, endpoint: str) -> str:
        known = self._prefixes.get(endpoint)
        if known is not None:
            return known
        waiters = self._discovering.get(endpoint)
        if waiters is not None:
            waiter: Deferred[str] = Deferred()
            waiters.append(waiter)
            return await waiter
        waiters = self._discovering[endpoint] = []
        try:
            prefix = await self._discover(endpoint)
        except BaseException:
            failure = Failure()
            del self._discovering[endpoint]
            for w in waiters:
                if not w.called:
                    w.errback(failure)
            raise
        del self._discovering[endpoint]
        self._prefixes[endpoint] = prefix
        for w in waiters:
            if not w.called:
                w.callback(prefix)
        return prefix

    async def _attempt(
        self, endpoint: str, method: str, body: JSON, stream: bool
    ) -> tuple[IResponse, bytes | None]:
        """
        One request to one endpoint; on a 404 (an upgraded member no longer
        serving the prefix we found), rediscover the prefix and try once more.
        """
        for _ in range(2):
            prefix = await self._prefixFor(endpoint)
            response = await self._post(endpoint + prefix + method, body, stream)
            if response.code == 404:
                await content(response)
                log.warn(
                    "etcd {endpoint} answers 404 under {prefix}; rediscovering",
                    endpoint=endpoint,
                    prefix=prefix,
                )
                self._prefixes.pop(endpoint, None)
                continue
            if stream and response.code == 200:
                return response, None
            return response, await content(response)
        raise EtcdError(None, f"{endpoint} answers 404 for {method}", 404)

    async def _send(
        self, method: str, body: JSON, stream: bool = False
    ) -> tuple[IResponse, bytes | None]:
        """
        Send a request to the current endpoint, moving on to the next on a
        connection failure.  For a stream, the body is left unread.
        """
        problems: list[str] = []
        retryUnknown = method in _IDEMPOTENT or stream
        # A pooled keep-alive connection that etcd closed just as it was
        # reused fails with ResponseNeverReceived: the request was not
        # processed.  A read or a watch is then tried once more on the same
        # endpoint (on a new connection) before moving to the next endpoint.
        staleRetry = retryUnknown
        attempts = 0
        while attempts < len(self._endpoints):
            attempts += 1
            index = self._current
            endpoint = self._endpoints[index]
            attempt = Deferred.fromCoroutine(
                self._attempt(endpoint, method, body, stream)
            )
            timeout = Timeout(self._reactor, self._timeout, attempt)
            try:
                return await attempt
            except Exception as e:
                timeout.stop()
                problem: BaseException = e
                if timeout.fired:
                    problem = EtcdTimeout(f"Timeout: no answer within {self._timeout}s")
                    sent = True
                elif wasCancelled(e) or isinstance(e, ConnectingCancelledError):
                    # Our caller cancelled the request.
                    raise CancelledError() from e
                elif isinstance(e, _NOT_SENT):
                    sent = False
                elif isinstance(e, ResponseNeverReceived) and staleRetry:
                    staleRetry = False
                    attempts -= 1
                    log.info(
                        "etcd {endpoint}: connection closed before answering "
                        "{method}; trying it again",
                        endpoint=endpoint,
                        method=method,
                    )
                    continue
                elif isinstance(e, _MAYBE_SENT):
                    sent = True
                else:
                    raise
            finally:
                timeout.stop()
            reason = describeProblem(problem)
            problems.append(f"{endpoint}: {reason}")
            if self._current == index:
                self._current = (index + 1) % len(self._endpoints)
            if len(self._endpoints) > 1:  # else the caller's line says it
                log.warn("etcd {endpoint} failed ({problem}) on {method}; next "
                         "endpoint: {next}", endpoint=endpoint, problem=reason,
                         method=method, next=self._endpoints[self._current])
            if sent and not retryUnknown:
                break
        raise EtcdUnavailable(problems)

    def _unary(self, method: str, body: JSON) -> Deferred[JSON]:
        async def call() -> JSON:
            response, content = await self._send(method, body)
            return parseUnaryAnswer(response.code, content or b"")

        return Deferred.fromCoroutine(call())

    def call(self, method: str, body: JSON) -> Deferred[JSON]:
        """
        One unary gateway call (e.g. C{"lease/grant"}) with the failover of
        the others, for L{revproxy.etcd.leases}.
        """
        return self._unary(method, body)

    # -- IRouteStore

    def status(self) -> Deferred[EtcdStatus]:
        """
        The status of the current endpoint's member.
        """

        def convert(status: Any) -> EtcdStatus:
            header = status.header
            return EtcdStatus(
                version=status.version or "",
                revision=header.revision or 0,
                leader=status.leader or 0,
                memberId=header.member_id or 0,
                raftTerm=status.raft_term or 0,
            )

        return self._unary("maintenance/status", etcdStatusRequest()).addCallback(
            lambda obj: convert(parseEtcdStatus(obj))
        )

    def getPrefix(
        self, prefix: bytes, revision: int | None = None
    ) -> Deferred[Snapshot]:
        """
        Read every key starting with C{prefix}, at C{revision} if given (a
        compacted revision fails with L{EtcdError} code 11), else now.
        """
        body: JSON = {"key": _b64(prefix), "range_end": _b64(prefixRangeEnd(prefix))}
        if revision is not None:
            body["revision"] = str(revision)

        def convert(obj: JSON) -> Snapshot:
            result = parseEtcdRange(obj)
            entries = [
                Entry(kv.key, kv.value or b"", kv.mod_revision or 0)
                for kv in result.kvs
            ]
            return Snapshot(result.header.revision, entries)

        return self._unary("kv/range", body).addCallback(convert)

    def put(self, key: bytes, value: bytes) -> Deferred[int]:
        return self._unary("kv/put", etcdPutRequest(key, value)).addCallback(
            lambda obj: _headerRevision(parseEtcdRevision(obj).header)
        )

    def delete(self, key: bytes) -> Deferred[DeleteResult]:
        return self._deleteRange(txaioetcd.KeySet(key))

    def deletePrefix(self, prefix: bytes) -> Deferred[DeleteResult]:
        return self._deleteRange(
            txaioetcd.KeySet(prefix, range_end=prefixRangeEnd(prefix))
        )

    def _deleteRange(self, keys: Any) -> Deferred[DeleteResult]:
        return self._unary("kv/deleterange", etcdDeleteRequest(keys)).addCallback(
            lambda obj: _deleted(parseEtcdDeleted(obj))
        )

    def txn(
        self,
        compare: Sequence[Comparison],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> Deferred[TxnResult]:
        transaction = txaioetcd.Transaction(
            compare=[_comparison(c) for c in compare] or None,
            success=[_operation(o) for o in success] or None,
            failure=[_operation(o) for o in failure] or None,
        )

        def convert(obj: JSON) -> TxnResult:
            header = etcdTxnHeader(obj)
            return TxnResult(bool(obj.get("succeeded")), _headerRevision(header))

        return self._unary("kv/txn", etcdTxnRequest(transaction)).addCallback(convert)

    def watch(
        self,
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None = None,
    ) -> EtcdWatch:
        create: JSON = {
            "key": _b64(prefix),
            "range_end": _b64(prefixRangeEnd(prefix)),
            "progress_notify": True,
        }
        if startRevision > 0:
            create["start_revision"] = str(startRevision)
        w = EtcdWatch(startRevision, onEvents, onProgress)
        w._start(self._send("watch", {"create_request": create}, stream=True))
        return w


def _headerRevision(header: Any) -> int:
    return int(header.revision or 0) if header is not None else 0


def _deleted(result: Any) -> DeleteResult:
    return DeleteResult(_headerRevision(result.header), int(result.deleted or 0))


def _comparison(c: Comparison) -> Any:
    if isinstance(c, ModRevisionIs):
        return txaioetcd.CompModified(c.key, "==", c.revision)
    return txaioetcd.CompValue(c.key, "==", c.value)


def _operation(o: Operation) -> Any:
    if isinstance(o, Put):
        return txaioetcd.OpSet(o.key, o.value)
    if isinstance(o, Delete):
        return txaioetcd.OpDel(o.key)
    return txaioetcd.OpDel(
        txaioetcd.KeySet(o.prefix, range_end=prefixRangeEnd(o.prefix))
    )
