# -*- test-case-name: tests.etcd.test_client -*-
"""
The etcd adapter: the one module of revproxy that talks to etcd.

Everything else sees the small L{IRouteStore} interface: L{EtcdClient}
implements it against etcd's gRPC-JSON gateway, L{MemoryRouteStore} in memory
for unit tests.

We use txaioetcd 18.10.2 (the last release) for what it does right: its
request types (L{KeySet}, L{Transaction}, the C{Op*} and C{Comp*} classes),
the bodies its C{Client} builds for put/delete/txn/status, and its response
parsers.  Each of its defects is wrapped here, and each has a regression test
in C{tests.test_etcd}:

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
    callback.  The watch here is ours: L{WatchStreamDecoder} is a pure,
    buffered decoder of the stream, and L{EtcdWatch} drives it from an
    unbuffered response and reports how and why the stream ended
    (L{WatchEnded}), or fails with the callback's exception.

txaioetcd is imported by this module only; importing it costs about a
quarter of a second (it pulls numpy and friends), so import this module
lazily from code that runs at start-up, never from the plugin file.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Union, cast

import txaioetcd  # type: ignore[import-untyped]
from treq.client import HTTPClient
from treq.response import _Response as Response
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionLost,
    DNSLookupError,
)
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from txaioetcd import _client_commons as commons  # type: ignore[import-untyped]
from zope.interface import Attribute, Interface, implementer

__all__ = [
    "API_PREFIXES",
    "Delete",
    "DeletePrefix",
    "DeleteResult",
    "EndReason",
    "Entry",
    "EtcdClient",
    "EtcdError",
    "EtcdStatus",
    "EtcdTimeout",
    "EtcdUnavailable",
    "EtcdWatch",
    "EventType",
    "IRouteStore",
    "IWatch",
    "MemoryRouteStore",
    "MemoryWatch",
    "ModRevisionIs",
    "Put",
    "Snapshot",
    "TxnResult",
    "ValueIs",
    "WatchCanceled",
    "WatchCreated",
    "WatchEnded",
    "WatchError",
    "WatchEvent",
    "WatchEvents",
    "WatchMessage",
    "WatchProgress",
    "WatchStreamDecoder",
    "prefixRangeEnd",
]

log = Logger()

#: The gateway prefixes tried on each endpoint, in order: etcd 3.4 to 3.6
#: serve C{/v3/}, 3.3 serves C{/v3beta/}, 3.2 and 3.3 serve C{/v3alpha/}.
API_PREFIXES: tuple[str, ...] = ("/v3/", "/v3beta/", "/v3alpha/")

#: Unary gateway methods that may be sent again after a failure that leaves
#: unknown whether etcd received them.
_IDEMPOTENT = frozenset({"kv/range", "maintenance/status"})

#: The base URL given to txaioetcd's request assemblers, which want one; we
#: use only the bodies they build.
_NO_URL = ""

_HEADERS = {b"Content-Type": [b"application/json"]}
# Without hasleader, a member cut off from its cluster keeps a watch open and
# silent; with it, the stream ends with "etcdserver: no leader".
_WATCH_HEADERS = {**_HEADERS, b"Grpc-Metadata-hasleader": [b"true"]}

JSON = dict[str, Any]


# --------------------------------------------------------------------------
# Errors and results


class EtcdError(Exception):
    """
    etcd (or its gateway) answered with an error.

    @ivar code: the gRPC status code, if etcd gave one.
    @ivar message: etcd's message.
    @ivar http_code: the HTTP status of the answer, if it was one.
    """

    def __init__(
        self, code: int | None, message: str, httpCode: int | None = None
    ) -> None:
        super().__init__(code, message, httpCode)
        self.code = code
        self.message = message
        self.httpCode = httpCode

    def __str__(self) -> str:
        return f"etcd error {self.code} (HTTP {self.httpCode}): {self.message}"


class EtcdUnavailable(Exception):
    """
    No endpoint could be reached, or the request may not be resent after its
    endpoint failed.  C{args[0]} lists what went wrong, endpoint by endpoint.
    """


class EtcdTimeout(Exception):
    """
    An etcd request got no complete answer within the client's timeout.
    """


class EventType(enum.Enum):
    """
    The kind of a watch event.
    """

    PUT = "PUT"
    DELETE = "DELETE"


class Entry(NamedTuple):
    """
    One key as read from etcd.
    """

    key: bytes
    value: bytes
    modRevision: int


class Snapshot(NamedTuple):
    """
    The keys under a prefix as of C{revision}: watch from C{revision + 1} to
    follow them without a gap.
    """

    revision: int
    entries: list[Entry]


class DeleteResult(NamedTuple):
    """
    What a delete did: the store's revision afterwards and how many keys went.
    """

    revision: int
    deleted: int


class TxnResult(NamedTuple):
    """
    Whether a transaction's comparisons held (and its success operations were
    applied), and the store's revision afterwards.
    """

    succeeded: bool
    revision: int


class EtcdStatus(NamedTuple):
    """
    A member's status.
    """

    version: str
    revision: int
    leader: int
    memberId: int
    raftTerm: int


@dataclass(frozen=True)
class Put:
    """
    Transaction operation: set C{key} to C{value}.
    """

    key: bytes
    value: bytes


@dataclass(frozen=True)
class Delete:
    """
    Transaction operation: delete C{key}.
    """

    key: bytes


@dataclass(frozen=True)
class DeletePrefix:
    """
    Transaction operation: delete every key starting with C{prefix}.
    """

    prefix: bytes


@dataclass(frozen=True)
class ModRevisionIs:
    """
    Transaction comparison: C{key} was last modified at C{revision}; a
    revision of 0 means the key does not exist.
    """

    key: bytes
    revision: int


@dataclass(frozen=True)
class ValueIs:
    """
    Transaction comparison: C{key} exists and holds C{value}.
    """

    key: bytes
    value: bytes


Operation = Union[Put, Delete, DeletePrefix]
Comparison = Union[ModRevisionIs, ValueIs]


def prefixRangeEnd(prefix: bytes) -> bytes:
    """
    The end of the key range holding every key that starts with C{prefix}:
    the prefix with its last byte below 0xff incremented (what etcd's
    C{GetPrefixRangeEnd} computes).

    @raise ValueError: for an empty prefix, or one of only 0xff bytes.
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        del end[-1]
    raise ValueError(f"no key range for the prefix {prefix!r}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------
# The watch stream decoder


@dataclass(frozen=True)
class WatchEvent:
    """
    One change of one key.  A DELETE has an empty C{value}.
    """

    type: EventType
    key: bytes
    value: bytes
    modRevision: int


@dataclass(frozen=True)
class WatchEvents:
    """
    A batch of events; all events of one revision arrive in one batch.

    @ivar revision: the store's revision when etcd sent the batch (it may be
        above the events' own revisions).
    """

    revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True)
class WatchCreated:
    """
    etcd has created the watch; C{revision} is the store's revision then.
    """

    revision: int
    watchId: int


@dataclass(frozen=True)
class WatchProgress:
    """
    A progress notification: every event up to C{revision} has been sent.
    """

    revision: int


@dataclass(frozen=True)
class WatchCanceled:
    """
    etcd cancelled the watch.  With a C{compactRevision}, the start revision
    was compacted away: re-read the prefix and watch from the new revision.
    """

    revision: int
    compactRevision: int | None
    reason: str


@dataclass(frozen=True)
class WatchError:
    """
    The stream reported an error, or could not be decoded (C{code} L{None}).
    """

    code: int | None
    message: str


WatchMessage = Union[
    WatchEvents, WatchCreated, WatchProgress, WatchCanceled, WatchError
]


def _int(value: object) -> int:
    """
    An int64 field of the gateway's JSON: a decimal string, or absent (0).
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _decodeEvent(event: JSON) -> WatchEvent:
    kv = event.get("kv")
    if not isinstance(kv, dict) or "key" not in kv:
        raise ValueError("event without a key")
    kind = event.get("type", "PUT")
    return WatchEvent(
        type=EventType(kind),
        key=base64.b64decode(kv["key"], validate=True),
        value=base64.b64decode(kv.get("value", ""), validate=True),
        modRevision=_int(kv.get("mod_revision")),
    )


def decodeWatchMessage(line: bytes) -> WatchMessage:
    """
    Decode one message of a gateway watch stream.  Never raises: what cannot
    be decoded becomes a L{WatchError} with a C{code} of L{None}.
    """
    try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        if "error" in obj:
            error = obj["error"]
            if not isinstance(error, dict):
                return WatchError(None, str(error))
            code = error.get("grpc_code", error.get("code"))
            return WatchError(
                None if code is None else _int(code), str(error.get("message", ""))
            )
        result = obj.get("result")
        if not isinstance(result, dict):
            raise ValueError("neither result nor error")
        header = result.get("header") or {}
        revision = _int(header.get("revision"))
        compactRevision = _int(result.get("compact_revision"))
        if result.get("canceled") or compactRevision:
            return WatchCanceled(
                revision=revision,
                compactRevision=compactRevision or None,
                reason=str(result.get("cancel_reason", "")),
            )
        if result.get("created"):
            return WatchCreated(revision, _int(result.get("watch_id")))
        events = result.get("events")
        if events:
            return WatchEvents(revision, tuple(_decodeEvent(e) for e in events))
        return WatchProgress(revision)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        shown = line[:200]
        return WatchError(None, f"undecodable watch message {shown!r}: {e}")


class WatchStreamDecoder:
    """
    A buffered decoder of a gateway watch stream: newline-delimited JSON
    objects, cut into reads anywhere.  No I/O: L{feed} it bytes, get messages.

    A message without its trailing newline waits in the buffer for more data,
    or for L{finish}.  A message that grows beyond C{maxMessageSize} bytes
    without a newline becomes a L{WatchError}, and the buffer is dropped.
    """

    def __init__(self, maxMessageSize: int = 64 * 1024 * 1024) -> None:
        self._max = maxMessageSize
        self._pending: list[bytes] = []
        self._pendingSize = 0

    def feed(self, data: bytes) -> list[WatchMessage]:
        """
        Add the bytes of one read; return the messages they complete.
        """
        messages: list[WatchMessage] = []
        start = 0
        newline = data.find(b"\n")
        while newline != -1:
            if self._pending:
                self._pending.append(data[start:newline])
                line = b"".join(self._pending)
                self._pending = []
                self._pendingSize = 0
            else:
                line = data[start:newline]
            if line.strip():
                messages.append(decodeWatchMessage(line))
            start = newline + 1
            newline = data.find(b"\n", start)
        if start < len(data):
            rest = data[start:]
            self._pending.append(rest)
            self._pendingSize += len(rest)
            if self._pendingSize > self._max:
                self._pending = []
                self._pendingSize = 0
                messages.append(
                    WatchError(
                        None,
                        f"watch message longer than {self._max} bytes",
                    )
                )
        return messages

    def finish(self) -> list[WatchMessage]:
        """
        The stream has ended: decode what is left in the buffer, if anything.
        """
        line = b"".join(self._pending)
        self._pending = []
        self._pendingSize = 0
        if line.strip():
            return [decodeWatchMessage(line)]
        return []


# --------------------------------------------------------------------------
# Watches and the store interface


class EndReason(enum.Enum):
    """
    Why a watch ended.
    """

    #: L{IWatch.cancel} was called.
    CANCELLED = "cancelled"
    #: The start revision has been compacted: re-read, then watch again.
    COMPACTED = "compacted"
    #: etcd cancelled the watch for another reason.
    SERVER_CANCELED = "server-canceled"
    #: The stream reported an error (e.g. "etcdserver: no leader"), could not
    #: be decoded, or etcd refused the watch.
    ERROR = "error"
    #: The connection was lost or closed, or no endpoint could be reached.
    CONNECTION_LOST = "connection-lost"


@dataclass(frozen=True)
class WatchEnded:
    """
    How a watch ended.

    @ivar next_revision: the first revision not yet delivered: watch again
        from here to continue without a gap (unless C{reason} is
        L{EndReason.COMPACTED}).
    @ivar compact_revision: for L{EndReason.COMPACTED}, etcd's compaction
        revision.
    @ivar error: for L{EndReason.ERROR}, what etcd said.
    @ivar detail: a human-readable account, for the log.
    """

    reason: EndReason
    nextRevision: int
    compactRevision: int | None = None
    error: WatchError | None = None
    detail: str = ""


OnEvents = Callable[[WatchEvents], object]
OnProgress = Callable[[int], object]


class IWatch(Interface):
    """
    A running watch of a key prefix.
    """

    ended = Attribute(
        "A Deferred that fires with a WatchEnded once the watch has ended "
        "and its connection is closed, or fails with the exception a "
        "callback raised."
    )
    nextRevision = Attribute("The first revision not yet delivered (int).")

    def cancel() -> None:
        """
        End the watch; C{ended} fires with L{EndReason.CANCELLED} unless it
        has ended already.
        """


class IRouteStore(Interface):
    """
    The operations on etcd that revproxy needs.  Keys and values are bytes;
    revisions are etcd's store revisions.
    """

    def getPrefix(prefix: bytes) -> Deferred[Snapshot]:
        """
        Read every key starting with C{prefix}, and the revision of the read.
        """

    def put(key: bytes, value: bytes) -> Deferred[int]:
        """
        Set C{key}; fire with the new revision.
        """

    def delete(key: bytes) -> Deferred[DeleteResult]:
        """
        Delete C{key}.
        """

    def deletePrefix(prefix: bytes) -> Deferred[DeleteResult]:
        """
        Delete every key starting with C{prefix}.
        """

    def txn(
        compare: Sequence[Comparison],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> Deferred[TxnResult]:
        """
        Apply C{success} atomically if every comparison holds, else
        C{failure}.  etcd limits the operations per transaction (128 by
        default, C{--max-txn-ops}).
        """

    def watch(
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None = None,
    ) -> IWatch:
        """
        Watch every key starting with C{prefix} from C{startRevision}
        (inclusive; 0 means from now).  C{onEvents} gets each batch of
        events, in revision order, each revision once; C{onProgress} gets
        the revision of each progress notification.  An exception from
        either ends the watch: its C{ended} fails with it.
        """


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


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body written at once, with no cooperator and no reactor.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _wasCancelled(exc: BaseException) -> bool:
    if isinstance(exc, CancelledError):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(CancelledError) for r in reasons)


class _Timeout:
    """
    Cancel a Deferred after C{seconds} on C{reactor}, remembering that it did.
    """

    def __init__(self, reactor: IReactorTime, seconds: float, d: Deferred[Any]) -> None:
        self.fired = False

        def expire() -> None:
            self.fired = True
            d.cancel()

        self._call: IDelayedCall = reactor.callLater(seconds, expire)

    def stop(self) -> None:
        if self._call.active():
            self._call.cancel()


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

    def _post(self, url: str, body: JSON, stream: bool = False) -> Deferred[Response]:
        # Not treq's json=: it wraps the body in a FileBodyProducer, which
        # writes through the global cooperator, i.e. the global reactor.
        return self._http.post(
            url,
            data=_BytesProducer(json.dumps(body, separators=(",", ":")).encode()),
            headers=Headers(_WATCH_HEADERS if stream else _HEADERS),
            unbuffered=stream,
            reactor=self._reactor,  # type: ignore[arg-type]
        )

    async def _discover(self, endpoint: str) -> str:
        for prefix in API_PREFIXES:
            response = await self._post(endpoint + prefix + "maintenance/status", {})
            await response.content()
            if response.code != 404:
                log.info(
                    "etcd {endpoint} serves its gateway under {prefix}",
                    endpoint=endpoint,
                    prefix=prefix,
                )
                return prefix
        raise EtcdError(
            None, f"{endpoint} serves no etcd v3 gateway under {API_PREFIXES}", 404
        )

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
    ) -> tuple[Response, bytes | None]:
        """
        One request to one endpoint; on a 404 (an upgraded member no longer
        serving the prefix we found), rediscover the prefix and try once more.
        """
        for _ in range(2):
            prefix = await self._prefixFor(endpoint)
            response = await self._post(endpoint + prefix + method, body, stream)
            if response.code == 404:
                await response.content()
                log.warn(
                    "etcd {endpoint} answers 404 under {prefix}; rediscovering",
                    endpoint=endpoint,
                    prefix=prefix,
                )
                self._prefixes.pop(endpoint, None)
                continue
            if stream and response.code == 200:
                return response, None
            return response, await response.content()
        raise EtcdError(None, f"{endpoint} answers 404 for {method}", 404)

    async def _send(
        self, method: str, body: JSON, stream: bool = False
    ) -> tuple[Response, bytes | None]:
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
            timeout = _Timeout(self._reactor, self._timeout, attempt)
            try:
                return await attempt
            except Exception as e:
                timeout.stop()
                problem: BaseException = e
                if timeout.fired:
                    problem = EtcdTimeout(f"no answer within {self._timeout}s")
                    sent = True
                elif _wasCancelled(e) or isinstance(e, ConnectingCancelledError):
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
            problems.append(f"{endpoint}: {problem!r}")
            if self._current == index:
                self._current = (index + 1) % len(self._endpoints)
            log.warn(
                "etcd {endpoint} failed ({problem}) on {method}; next endpoint: {next}",
                endpoint=endpoint,
                problem=repr(problem),
                method=method,
                next=self._endpoints[self._current],
            )
            if sent and not retryUnknown:
                break
        raise EtcdUnavailable(problems)

    def _unary(self, method: str, body: JSON) -> Deferred[JSON]:
        async def call() -> JSON:
            response, content = await self._send(method, body)
            return _parseUnary(response.code, content or b"")

        return Deferred.fromCoroutine(call())

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

        body = commons.StatusRequestAssembler(_NO_URL).data
        return self._unary("maintenance/status", body).addCallback(
            lambda obj: convert(txaioetcd.Status._parse(obj))
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
            result = txaioetcd.Range._parse(obj)
            entries = [
                Entry(kv.key, kv.value or b"", kv.mod_revision or 0)
                for kv in result.kvs
            ]
            return Snapshot(result.header.revision, entries)

        return self._unary("kv/range", body).addCallback(convert)

    def put(self, key: bytes, value: bytes) -> Deferred[int]:
        body = commons.PutRequestAssembler(_NO_URL, key, value).data
        return self._unary("kv/put", body).addCallback(
            lambda obj: _headerRevision(txaioetcd.Revision._parse(obj).header)
        )

    def delete(self, key: bytes) -> Deferred[DeleteResult]:
        return self._deleteRange(txaioetcd.KeySet(key))

    def deletePrefix(self, prefix: bytes) -> Deferred[DeleteResult]:
        return self._deleteRange(
            txaioetcd.KeySet(prefix, range_end=prefixRangeEnd(prefix))
        )

    def _deleteRange(self, keys: Any) -> Deferred[DeleteResult]:
        body = commons.DeleteRequestAssembler(_NO_URL, keys).data
        return self._unary("kv/deleterange", body).addCallback(
            lambda obj: _deleted(txaioetcd.Deleted._parse(obj))
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
            header, _ = commons.validate_client_submit_response(obj)
            return TxnResult(bool(obj.get("succeeded")), _headerRevision(header))

        return self._unary("kv/txn", transaction._marshal()).addCallback(convert)

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


def _parseUnary(code: int, content: bytes) -> JSON:
    try:
        obj = json.loads(content)
    except ValueError:
        obj = None
    if code == 200 and isinstance(obj, dict):
        return obj
    if isinstance(obj, dict):
        raw = obj.get("code")
        message = obj.get("message") or obj.get("error") or ""
        raise EtcdError(None if raw is None else _int(raw), str(message), code)
    text = content[:200].decode("utf-8", "replace").strip()
    raise EtcdError(None, text or f"HTTP {code}", code)


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


class _WatchProtocol(Protocol):
    """
    Receives a watch response body and feeds it to the decoder.
    """

    def __init__(self, watch: EtcdWatch) -> None:
        self._watch = watch
        self._decoder = WatchStreamDecoder()

    def dataReceived(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            if self._watch._ending is not None:
                return
            self._watch._message(message)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        for message in self._decoder.finish():
            if self._watch._ending is not None:
                break
            self._watch._message(message)
        self._watch._connectionLost(reason)


def _stop(protocol: Protocol) -> None:
    """
    Close the connection under a response body protocol.
    """
    transport = protocol.transport
    if transport is not None:
        cast(IPushProducer, transport).stopProducing()


@implementer(IWatch)
class EtcdWatch:
    """
    A watch on etcd's gateway; made by L{EtcdClient.watch}.
    """

    def __init__(
        self,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None,
    ) -> None:
        self.ended: Deferred[WatchEnded] = Deferred()
        self._onEvents = onEvents
        self._onProgress = onProgress
        # The last revision delivered (or known complete): older etcd
        # releases may send an event twice; each revision is delivered once.
        self._applied = max(startRevision - 1, 0)
        self._ending: WatchEnded | Failure | None = None
        self._request: Deferred[Any] | None = None
        self._protocol: _WatchProtocol | None = None

    @property
    def nextRevision(self) -> int:
        return self._applied + 1

    def _start(self, coro: Any) -> None:
        self._request = Deferred.fromCoroutine(coro)
        self._request.addCallbacks(self._responded, self._notResponded)

    def _responded(self, result: tuple[Response, bytes | None]) -> None:
        self._request = None
        response, content = result
        if self._ending is not None:
            # Cancelled while the response was on its way: close it.
            self._protocol = _WatchProtocol(self)
            response.deliverBody(self._protocol)
            _stop(self._protocol)
            return
        if response.code != 200:
            try:
                _parseUnary(response.code, content or b"")
                error = WatchError(None, f"HTTP {response.code}")
            except EtcdError as e:
                error = WatchError(e.code, e.message)
            self._fire(self._ended(EndReason.ERROR, error=error, detail=error.message))
            return
        self._protocol = _WatchProtocol(self)
        response.deliverBody(self._protocol)

    def _notResponded(self, failure: Failure) -> None:
        self._request = None
        if self._ending is not None:
            self._fire(self._ending)
        elif failure.check(EtcdUnavailable, EtcdTimeout):
            self._fire(
                self._ended(EndReason.CONNECTION_LOST, detail=str(failure.value))
            )
        elif failure.check(EtcdError):
            e = cast(EtcdError, failure.value)
            error = WatchError(e.code, e.message)
            self._fire(self._ended(EndReason.ERROR, error=error, detail=e.message))
        else:
            log.failure("etcd watch could not start", failure)
            self._fire(failure)

    def _ended(
        self,
        reason: EndReason,
        compactRevision: int | None = None,
        error: WatchError | None = None,
        detail: str = "",
    ) -> WatchEnded:
        return WatchEnded(reason, self.nextRevision, compactRevision, error, detail)

    def _message(self, message: WatchMessage) -> None:
        try:
            if isinstance(message, WatchEvents):
                applied = self._applied
                fresh = tuple(e for e in message.events if e.modRevision > applied)
                if fresh:
                    self._applied = max(e.modRevision for e in fresh)
                    if len(fresh) != len(message.events):
                        message = WatchEvents(message.revision, fresh)
                    self._onEvents(message)
            elif isinstance(message, WatchProgress):
                self._applied = max(self._applied, message.revision)
                if self._onProgress is not None:
                    self._onProgress(message.revision)
            elif isinstance(message, WatchCreated):
                log.debug(
                    "etcd watch created at revision {revision}",
                    revision=message.revision,
                )
            elif isinstance(message, WatchCanceled):
                if message.compactRevision is not None:
                    reason = EndReason.COMPACTED
                    detail = f"revision {self.nextRevision} compacted"
                else:
                    reason = EndReason.SERVER_CANCELED
                    detail = message.reason or "canceled by etcd"
                self._end(self._ended(reason, message.compactRevision, detail=detail))
            else:
                self._end(
                    self._ended(EndReason.ERROR, error=message, detail=message.message)
                )
        except Exception:
            failure = Failure()
            log.failure("etcd watch callback failed; ending the watch", failure)
            self._end(failure)

    def _end(self, result: WatchEnded | Failure) -> None:
        """
        End the stream: close the connection; C{ended} fires once it is lost.
        """
        if self._ending is not None:
            return
        self._ending = result
        if self._protocol is not None:
            _stop(self._protocol)
        elif self._request is not None:
            self._request.cancel()

    def _connectionLost(self, reason: Failure) -> None:
        self._protocol = None
        if self._ending is None:
            if reason.check(ResponseDone, PotentialDataLoss):
                detail = "etcd closed the watch stream"
            else:
                detail = f"watch connection lost: {reason.getErrorMessage()}"
            self._ending = self._ended(EndReason.CONNECTION_LOST, detail=detail)
        self._fire(self._ending)

    def _fire(self, result: WatchEnded | Failure) -> None:
        if self.ended.called:
            return
        self._ending = result
        if isinstance(result, WatchEnded):
            log.info(
                "etcd watch ended ({reason}): {detail}; next revision {nextRevision}",
                reason=result.reason.value,
                detail=result.detail,
                nextRevision=result.nextRevision,
            )
            self.ended.callback(result)
        else:
            self.ended.errback(result)

    def cancel(self) -> None:
        self._end(self._ended(EndReason.CANCELLED, detail="cancelled"))


# --------------------------------------------------------------------------
# The in-memory fake


class _Record(NamedTuple):
    value: bytes
    modRevision: int


@implementer(IWatch)
class MemoryWatch:
    """
    A watch on a L{MemoryRouteStore}.
    """

    def __init__(
        self,
        store: MemoryRouteStore,
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None,
    ) -> None:
        self.ended: Deferred[WatchEnded] = Deferred()
        self.prefix = prefix
        self._store = store
        self._onEvents = onEvents
        self._onProgress = onProgress
        self._applied = max(startRevision - 1, 0)

    @property
    def nextRevision(self) -> int:
        return self._applied + 1

    def _deliver(self, revision: int, events: tuple[WatchEvent, ...]) -> None:
        if self.ended.called or revision <= self._applied:
            return
        mine = tuple(e for e in events if e.key.startswith(self.prefix))
        self._applied = revision
        if not mine:
            return
        try:
            self._onEvents(WatchEvents(revision, mine))
        except Exception:
            failure = Failure()
            log.failure("etcd watch callback failed; ending the watch", failure)
            self._store._forget(self)
            self.ended.errback(failure)

    def progress(self) -> None:
        """
        Send a progress notification at the store's revision.
        """
        if self.ended.called:
            return
        self._applied = max(self._applied, self._store.revision)
        if self._onProgress is not None:
            try:
                self._onProgress(self._store.revision)
            except Exception:
                failure = Failure()
                log.failure("etcd watch callback failed; ending the watch", failure)
                self._store._forget(self)
                self.ended.errback(failure)

    def end(
        self,
        reason: EndReason,
        compactRevision: int | None = None,
        error: WatchError | None = None,
        detail: str = "",
    ) -> None:
        """
        End the watch as etcd or the network would.
        """
        if self.ended.called:
            return
        self._store._forget(self)
        self.ended.callback(
            WatchEnded(reason, self.nextRevision, compactRevision, error, detail)
        )

    def cancel(self) -> None:
        self.end(EndReason.CANCELLED, detail="cancelled")


@implementer(IRouteStore)
class MemoryRouteStore:
    """
    An in-memory L{IRouteStore} with etcd's revision semantics, for unit
    tests.  Every change increments L{revision}; watches get the change
    synchronously, or through C{clock.callLater(0, ...)} if a clock is given.
    History is kept for watches from past revisions until L{compact}.

    @ivar unavailable: while true, every call fails with L{EtcdUnavailable}
        and new watches end with L{EndReason.CONNECTION_LOST}.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.revision = 1
        self.compactRevision = 0
        self.unavailable = False
        self._clock = clock
        self._data: dict[bytes, _Record] = {}
        self._history: list[tuple[int, tuple[WatchEvent, ...]]] = []
        self.watches: list[MemoryWatch] = []

    def items(self) -> dict[bytes, bytes]:
        """
        The current keys and values.
        """
        return {k: r.value for k, r in self._data.items()}

    def _check(self) -> None:
        if self.unavailable:
            raise EtcdUnavailable(["memory store is unavailable"])

    def _commit(self, events: list[WatchEvent]) -> None:
        batch = tuple(events)
        self._history.append((self.revision, batch))
        for watch in list(self.watches):
            self._schedule(watch._deliver, self.revision, batch)

    def _schedule(self, f: Callable[..., object], *args: object) -> None:
        if self._clock is None:
            f(*args)
        else:
            self._clock.callLater(0, f, *args)

    def _forget(self, watch: MemoryWatch) -> None:
        if watch in self.watches:
            self.watches.remove(watch)

    def _apply(self, ops: Sequence[Operation]) -> tuple[int, list[WatchEvent]]:
        revision = self.revision + 1
        events: list[WatchEvent] = []
        deleted = 0
        for op in ops:
            if isinstance(op, Put):
                self._data[op.key] = _Record(op.value, revision)
                events.append(WatchEvent(EventType.PUT, op.key, op.value, revision))
                continue
            if isinstance(op, Delete):
                keys = [op.key] if op.key in self._data else []
            else:
                keys = sorted(k for k in self._data if k.startswith(op.prefix))
            for k in keys:
                del self._data[k]
                events.append(WatchEvent(EventType.DELETE, k, b"", revision))
                deleted += 1
        if events:
            self.revision = revision
            self._commit(events)
        return deleted, events

    def getPrefix(
        self, prefix: bytes, revision: int | None = None
    ) -> Deferred[Snapshot]:
        try:
            self._check()
            if revision is not None:
                raise NotImplementedError("reads at a past revision")
        except Exception:
            return fail()
        entries = [
            Entry(k, r.value, r.modRevision)
            for k, r in sorted(self._data.items())
            if k.startswith(prefix)
        ]
        return succeed(Snapshot(self.revision, entries))

    def put(self, key: bytes, value: bytes) -> Deferred[int]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        self._apply([Put(key, value)])
        return succeed(self.revision)

    def delete(self, key: bytes) -> Deferred[DeleteResult]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        deleted, _ = self._apply([Delete(key)])
        return succeed(DeleteResult(self.revision, deleted))

    def deletePrefix(self, prefix: bytes) -> Deferred[DeleteResult]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()
        deleted, _ = self._apply([DeletePrefix(prefix)])
        return succeed(DeleteResult(self.revision, deleted))

    def txn(
        self,
        compare: Sequence[Comparison],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> Deferred[TxnResult]:
        try:
            self._check()
        except EtcdUnavailable:
            return fail()

        def holds(c: Comparison) -> bool:
            record = self._data.get(c.key)
            if isinstance(c, ModRevisionIs):
                return (record.modRevision if record else 0) == c.revision
            return record is not None and record.value == c.value

        succeeded = all(holds(c) for c in compare)
        self._apply(success if succeeded else failure)
        return succeed(TxnResult(succeeded, self.revision))

    def compact(self, revision: int) -> None:
        """
        Forget the history up to C{revision}, as etcd's compaction does:
        watches from at or below it are cancelled with L{EndReason.COMPACTED}.
        """
        self.compactRevision = max(self.compactRevision, revision)
        self._history = [(r, e) for r, e in self._history if r > revision]

    def watch(
        self,
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None = None,
    ) -> MemoryWatch:
        if startRevision <= 0:
            startRevision = self.revision + 1
        w = MemoryWatch(self, prefix, startRevision, onEvents, onProgress)
        if self.unavailable:
            self._schedule(
                w.end,
                EndReason.CONNECTION_LOST,
                None,
                None,
                "memory store is unavailable",
            )
            return w
        if startRevision <= self.compactRevision:
            self._schedule(
                w.end,
                EndReason.COMPACTED,
                self.compactRevision,
                None,
                f"revision {startRevision} compacted",
            )
            return w
        self.watches.append(w)
        for revision, events in self._history:
            if revision >= startRevision:
                self._schedule(w._deliver, revision, events)
        return w

    def disconnect(self, reason: EndReason = EndReason.CONNECTION_LOST) -> None:
        """
        End every running watch with C{reason}, as a lost connection would.
        """
        for w in list(self.watches):
            w.end(reason, detail="disconnected")
