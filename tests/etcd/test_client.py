"""
Tests for L{revproxy.etcd.client}: the watch stream decoder, the gateway client on
an in-memory HTTP server, and the in-memory route store.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI, ResponseNeverReceived
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer
from zope.interface.verify import verifyObject

from revproxy.etcd.client import (
    Delete,
    DeletePrefix,
    DeleteResult,
    EndReason,
    Entry,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    EventType,
    IRouteStore,
    IWatch,
    MemoryRouteStore,
    ModRevisionIs,
    Put,
    Snapshot,
    TxnResult,
    ValueIs,
    WatchCanceled,
    WatchCreated,
    WatchEnded,
    WatchError,
    WatchEvent,
    WatchEvents,
    WatchProgress,
    WatchStreamDecoder,
    prefixRangeEnd,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def header(revision: int) -> dict[str, str]:
    return {
        "cluster_id": "1",
        "member_id": "2",
        "revision": str(revision),
        "raft_term": "2",
    }


def put_event(key: bytes, value: bytes, revision: int) -> dict[str, Any]:
    kv = {"key": b64(key), "mod_revision": str(revision), "create_revision": "2"}
    if value:
        kv["value"] = b64(value)
    return {"kv": kv}


def delete_event(key: bytes, revision: int) -> dict[str, Any]:
    return {"type": "DELETE", "kv": {"key": b64(key), "mod_revision": str(revision)}}


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def events_line(revision: int, *events: dict[str, Any]) -> bytes:
    return line({"result": {"header": header(revision), "events": list(events)}})


CREATED = line({"result": {"header": header(4), "created": True}})
PUT_5 = events_line(5, put_event(b"/hosts/a/1", b"http://10.0.0.1:80", 5))
DELETE_6 = events_line(6, delete_event(b"/hosts/a/1", 6))
STREAM = CREATED + PUT_5 + DELETE_6

EXPECTED = [
    WatchCreated(4, 0),
    WatchEvents(
        5, (WatchEvent(EventType.PUT, b"/hosts/a/1", b"http://10.0.0.1:80", 5),)
    ),
    WatchEvents(6, (WatchEvent(EventType.DELETE, b"/hosts/a/1", b"", 6),)),
]


class WatchStreamDecoderTests(SynchronousTestCase):
    """
    Tests for L{WatchStreamDecoder}.
    """

    def test_whole(self) -> None:
        """
        A stream in one read decodes into its messages, in order.
        """
        self.assertEqual(WatchStreamDecoder().feed(STREAM), EXPECTED)

    def test_every_split(self) -> None:
        """
        A stream cut into two reads at any byte decodes into the same messages.
        """
        for cut in range(len(STREAM) + 1):
            decoder = WatchStreamDecoder()
            got = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
            self.assertEqual(got, EXPECTED, f"cut at {cut}")
            self.assertEqual(decoder.finish(), [])

    def test_byte_by_byte(self) -> None:
        """
        A stream fed one byte at a time decodes into the same messages.
        """
        decoder = WatchStreamDecoder()
        got = []
        for i in range(len(STREAM)):
            got.extend(decoder.feed(STREAM[i : i + 1]))
        self.assertEqual(got, EXPECTED)

    def test_txaioetcd_loses_split_message(self) -> None:
        """
        txaioetcd's receiver drops an event split across two reads, which ours
        delivers (the regression that made us write our own).
        """
        from txaioetcd._client_tx import _StreamingReceiver

        cut = len(PUT_5) // 2
        theirs: list[Any] = []
        receiver = _StreamingReceiver(theirs.append)
        receiver.dataReceived(PUT_5[:cut])
        receiver.dataReceived(PUT_5[cut:])
        self.assertEqual(theirs, [])

        decoder = WatchStreamDecoder()
        ours = decoder.feed(PUT_5[:cut]) + decoder.feed(PUT_5[cut:])
        self.assertEqual(ours, [EXPECTED[1]])

    def test_delete_is_delete(self) -> None:
        """
        A DELETE decodes as a DELETE of its key with an empty value, not as a
        value of None (which is all txaioetcd's receiver reports).
        """
        from txaioetcd._client_tx import _StreamingReceiver

        theirs: list[Any] = []
        _StreamingReceiver(theirs.append).dataReceived(DELETE_6)
        self.assertEqual([(kv.key, kv.value) for kv in theirs], [(b"/hosts/a/1", None)])

        [message] = WatchStreamDecoder().feed(DELETE_6)
        self.assertEqual(message, EXPECTED[2])

    def test_empty_value(self) -> None:
        """
        A PUT of an empty value (which the gateway omits) has the value C{b""}.
        """
        [message] = WatchStreamDecoder().feed(events_line(7, put_event(b"k", b"", 7)))
        assert isinstance(message, WatchEvents)
        self.assertEqual(message.events[0].value, b"")

    def test_no_trailing_newline(self) -> None:
        """
        A message without its newline waits for more data, or for the end.
        """
        decoder = WatchStreamDecoder()
        self.assertEqual(decoder.feed(PUT_5.rstrip(b"\n")), [])
        self.assertEqual(decoder.feed(b"\n"), [EXPECTED[1]])
        self.assertEqual(decoder.feed(PUT_5.rstrip(b"\n")), [])
        self.assertEqual(decoder.finish(), [EXPECTED[1]])
        self.assertEqual(decoder.finish(), [])

    def test_compacted(self) -> None:
        """
        A cancellation for compaction reports the compaction revision.
        """
        data = line(
            {
                "result": {
                    "header": {"raft_term": "2"},
                    "canceled": True,
                    "compact_revision": "19",
                }
            }
        )
        self.assertEqual(WatchStreamDecoder().feed(data), [WatchCanceled(0, 19, "")])

    def test_canceled(self) -> None:
        """
        A cancellation without compaction reports etcd's reason.
        """
        data = line(
            {"result": {"header": header(9), "canceled": True, "cancel_reason": "gone"}}
        )
        self.assertEqual(
            WatchStreamDecoder().feed(data), [WatchCanceled(9, None, "gone")]
        )

    def test_error(self) -> None:
        """
        An error object in the stream is reported with its code and message.
        """
        data = line(
            {
                "error": {
                    "grpc_code": 14,
                    "http_code": 503,
                    "message": "etcdserver: no leader",
                    "http_status": "Service Unavailable",
                }
            }
        )
        self.assertEqual(
            WatchStreamDecoder().feed(data), [WatchError(14, "etcdserver: no leader")]
        )

    def test_progress(self) -> None:
        """
        A message with only a header is a progress notification.
        """
        data = line({"result": {"header": header(42)}})
        self.assertEqual(WatchStreamDecoder().feed(data), [WatchProgress(42)])

    def test_bad_json(self) -> None:
        """
        Undecodable messages become errors, and the messages after them decode.
        """
        for bad in [
            b"{nope\n",
            b"[1]\n",
            b'{"other": 1}\n',
            line({"result": {"events": [{"kv": {"key": "!!"}}]}}),
            line({"result": {"events": [{"type": "MOVE", "kv": {"key": ""}}]}}),
        ]:
            messages = WatchStreamDecoder().feed(bad + PUT_5)
            self.assertEqual(len(messages), 2, bad)
            assert isinstance(messages[0], WatchError)
            self.assertIsNone(messages[0].code)
            self.assertEqual(messages[1], EXPECTED[1])

    def test_oversized(self) -> None:
        """
        A message growing beyond the limit without a newline is an error.
        """
        decoder = WatchStreamDecoder(maxMessageSize=10)
        self.assertEqual(decoder.feed(b'{"result":'), [])
        [message] = decoder.feed(b" {}")
        assert isinstance(message, WatchError)


class PrefixRangeEndTests(SynchronousTestCase):
    """
    Tests for L{prefixRangeEnd}.
    """

    def test_range_end(self) -> None:
        """
        The range end increments the last byte below 0xff, dropping 0xff bytes
        (txaioetcd's KeySet gets 0xff wrong).
        """
        self.assertEqual(prefixRangeEnd(b"/hosts/"), b"/hosts0")
        self.assertEqual(prefixRangeEnd(b"a\xff"), b"b")
        self.assertRaises(ValueError, prefixRangeEnd, b"")
        self.assertRaises(ValueError, prefixRangeEnd, b"\xff\xff")


class FakeGateway(Resource):
    """
    etcd's gRPC-JSON gateway in memory, serving C{prefixes}.

    @ivar requests: (host, path, body) of each request.
    @ivar answers: method -> (code, JSON) to answer instead of the default.
    @ivar hold: methods left unanswered.
    @ivar watches: the watch requests, open for the test to write to.
    """

    isLeaf = True

    def __init__(self, prefixes: tuple[str, ...] = ("/v3/", "/v3beta/")) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.requests: list[tuple[str, str, Any]] = []
        self.headers: list[dict[bytes, list[bytes]]] = []
        self.answers: dict[str, tuple[int, Any]] = {}
        self.hold: set[str] = set()
        self.watches: list[Request] = []
        self.revision = 4

    def render_POST(self, request: Request) -> bytes | int:
        path = request.path.decode()
        body = json.loads(request.content.read() or b"null")
        host = (request.getHeader("host") or "").split(":")[0]
        self.requests.append((host, path, body))
        self.headers.append(dict(request.requestHeaders.getAllRawHeaders()))
        prefix = next((p for p in self.prefixes if path.startswith(p)), None)
        if prefix is None:
            request.setResponseCode(404)
            return b"404 page not found"
        method = path[len(prefix) :]
        if method in self.hold:
            return NOT_DONE_YET
        if method in self.answers:
            code, obj = self.answers[method]
            request.setResponseCode(code)
            return json.dumps(obj).encode()
        if method == "watch":
            self.watches.append(request)
            request.write(
                line({"result": {"header": header(self.revision), "created": True}})
            )
            return NOT_DONE_YET
        if method in ("kv/put", "kv/deleterange", "kv/txn"):
            self.revision += 1
        answer: dict[str, Any] = {"header": header(self.revision)}
        if method == "maintenance/status":
            answer.update(version="3.5.1", leader="2", raftTerm="2")
        elif method == "kv/deleterange":
            answer["deleted"] = "1"
        elif method == "kv/txn":
            answer["succeeded"] = True
        return json.dumps(answer).encode()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


@implementer(IAgent)
class PartlyDownAgent:
    """
    An agent that refuses connections to hosts in C{down} and loses the
    answers from hosts in C{lost}.
    """

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.down: set[bytes] = set()
        self.lost: set[bytes] = set()
        #: Hosts whose next answer only is lost (a stale pooled connection).
        self.staleOnce: set[bytes] = set()

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        host = URI.fromBytes(uri).host
        if host in self.down:
            return fail(ConnectionRefusedError())
        if host in self.lost:
            return fail(ResponseNeverReceived([Failure(ConnectionLost())]))
        if host in self.staleOnce:
            self.staleOnce.discard(host)
            return fail(ResponseNeverReceived([Failure(ConnectionLost())]))
        return self.agent.request(method, uri, headers, bodyProducer)  # type: ignore[no-any-return]


class ClientTestsMixin:
    """
    An L{EtcdClient} on a L{FakeGateway}, with two endpoints, C{etcd1} and
    C{etcd2}, on a L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        self.gateway = FakeGateway()
        self.reactor = MemoryReactorClock()
        self.traversal = RequestTraversalAgent(self.gateway)
        self.agent = PartlyDownAgent(self.traversal)
        # No data_to_body_producer: the default (FileBodyProducer) would use
        # the global reactor, and nothing here would complete.
        self.client = EtcdClient(
            self.reactor,
            ["http://etcd1:2379", "http://etcd2:2379/"],
            HTTPClient(self.agent),
        )


class EtcdClientTests(ClientTestsMixin, SynchronousTestCase):
    """
    Tests for L{EtcdClient}'s unary calls.
    """

    def test_interface(self) -> None:
        """
        L{EtcdClient} provides L{IRouteStore}.
        """
        verifyObject(IRouteStore, self.client)

    def test_discovers_v3(self) -> None:
        """
        The client finds /v3/, once per endpoint, on a server that has no
        /v3alpha/ (etcd 3.4+).
        """
        self.gateway.prefixes = ("/v3/", "/v3beta/")
        self.successResultOf(self.client.put(b"k", b"v"))
        self.successResultOf(self.client.put(b"k", b"w"))
        self.assertEqual(
            self.gateway.paths(), ["/v3/maintenance/status", "/v3/kv/put", "/v3/kv/put"]
        )
        self.assertEqual(self.client.apiPrefix("http://etcd1:2379"), "/v3/")

    def test_discovers_v3beta_and_v3alpha(self) -> None:
        """
        The client falls back to /v3beta/ (etcd 3.3), then /v3alpha/ (3.2).
        """
        for served, expected in [
            (("/v3beta/", "/v3alpha/"), "/v3beta/"),
            (("/v3alpha/",), "/v3alpha/"),
        ]:
            self.setUp()
            self.gateway.prefixes = served
            self.successResultOf(self.client.status())
            self.assertEqual(self.client.apiPrefix("http://etcd1:2379"), expected)
            self.assertEqual(self.gateway.paths()[-1], expected + "maintenance/status")

    def test_no_gateway(self) -> None:
        """
        A server with no gateway prefix at all fails with L{EtcdError}.
        """
        self.gateway.prefixes = ()
        failure = self.failureResultOf(self.client.status(), EtcdError)
        self.assertEqual(failure.value.httpCode, 404)

    def test_rediscovers_after_upgrade(self) -> None:
        """
        When a member stops serving the prefix found (a 3.3 -> 3.4 upgrade),
        the client discovers the new one and completes the call.
        """
        self.gateway.prefixes = ("/v3alpha/",)
        self.successResultOf(self.client.put(b"k", b"v"))
        self.gateway.prefixes = ("/v3/",)
        self.successResultOf(self.client.put(b"k", b"v"))
        self.assertEqual(self.client.apiPrefix("http://etcd1:2379"), "/v3/")
        self.assertEqual(self.gateway.paths()[-1], "/v3/kv/put")

    def test_injected_reactor_and_client(self) -> None:
        """
        Requests go through the injected HTTP client, never txaioetcd's
        module-level treq (the global reactor), and their timeouts are
        scheduled on the injected reactor and cancelled when answered.
        """
        from txaioetcd import _client_tx

        def forbidden(*a: object, **k: object) -> None:
            raise AssertionError("txaioetcd's global treq used")

        self.patch(_client_tx.treq, "post", forbidden)
        self.assertEqual(self.successResultOf(self.client.put(b"k", b"v")), 5)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

        self.gateway.hold.add("kv/range")
        d = self.client.getPrefix(b"/hosts/")
        self.assertNoResult(d)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_txaioetcd_uses_global_treq(self) -> None:
        """
        txaioetcd's own client posts through module-level treq whatever
        reactor it was given (the regression we wrap).
        """
        import txaioetcd
        from txaioetcd import _client_tx

        posted: list[object] = []

        def post(url: bytes, **kwargs: object) -> Deferred[None]:
            posted.append(url)
            return Deferred()

        self.patch(_client_tx.treq, "post", post)
        txaioetcd.Client(MemoryReactorClock(), url="http://etcd1:2379").status()
        self.assertEqual(posted, [b"http://etcd1:2379/v3alpha/maintenance/status"])

    def test_timeout(self) -> None:
        """
        A request unanswered within the timeout moves on to the next
        endpoint, and fails when no endpoint answers; no timer is left.
        """
        self.gateway.hold.add("kv/range")
        d = self.client.getPrefix(b"/hosts/")
        self.reactor.advance(10)
        self.assertNoResult(d)
        self.reactor.advance(10)
        failure = self.failureResultOf(d, EtcdUnavailable)
        self.assertIn("EtcdTimeout", str(failure.value))
        self.assertEqual(
            [h for h, p, _ in self.gateway.requests if p.endswith("range")],
            ["etcd1", "etcd2"],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_get_prefix_range(self) -> None:
        """
        C{getPrefix} sends the prefix's range end and the revision asked for
        (txaioetcd's C{get} drops the revision), and decodes the entries,
        empty values as C{b""}.
        """
        self.gateway.answers["kv/range"] = (
            200,
            {
                "header": header(9),
                "kvs": [
                    {
                        "key": b64(b"/hosts/a/1"),
                        "value": b64(b"v"),
                        "mod_revision": "7",
                    },
                    {"key": b64(b"/hosts/a/2"), "mod_revision": "8"},
                ],
                "count": "2",
            },
        )
        snapshot = self.successResultOf(self.client.getPrefix(b"/hosts/", revision=9))
        self.assertEqual(
            snapshot,
            Snapshot(9, [Entry(b"/hosts/a/1", b"v", 7), Entry(b"/hosts/a/2", b"", 8)]),
        )
        self.assertEqual(
            self.gateway.requests[-1][2],
            {"key": b64(b"/hosts/"), "range_end": b64(b"/hosts0"), "revision": "9"},
        )

    def test_txaioetcd_get_drops_revision(self) -> None:
        """
        txaioetcd's C{get} leaves out the C{revision} it is given (the
        regression we wrap).
        """
        import txaioetcd

        bodies: list[Any] = []
        client = txaioetcd.Client(MemoryReactorClock(), url="http://etcd1:2379")
        client._post = lambda url, data, timeout: (bodies.append(data), Deferred())[1]
        client.get(b"/hosts/", range_end=b"/hosts0", revision=9, limit=5)
        self.assertEqual(
            bodies, [{"key": b64(b"/hosts/"), "range_end": b64(b"/hosts0")}]
        )

    def test_error_answer(self) -> None:
        """
        An error answer fails with L{EtcdError} carrying etcd's code and
        message, rather than parsing as an empty result.
        """
        message = "etcdserver: mvcc: required revision has been compacted"
        self.gateway.answers["kv/range"] = (
            400,
            {"error": message, "code": 11, "message": message},
        )
        failure = self.failureResultOf(
            self.client.getPrefix(b"/hosts/", revision=2), EtcdError
        )
        self.assertEqual(
            (failure.value.code, failure.value.message, failure.value.httpCode),
            (11, message, 400),
        )

    def test_put_delete_txn(self) -> None:
        """
        put, delete, delete_prefix and txn send txaioetcd's request bodies and
        return the new revision.
        """
        self.assertEqual(self.successResultOf(self.client.put(b"k", b"v")), 5)
        self.assertEqual(
            self.successResultOf(self.client.delete(b"k")), DeleteResult(6, 1)
        )
        self.assertEqual(
            self.successResultOf(self.client.deletePrefix(b"/p/")), DeleteResult(7, 1)
        )
        result = self.successResultOf(
            self.client.txn(
                [ModRevisionIs(b"a", 0), ValueIs(b"b", b"x")],
                [Put(b"a", b"1"), Delete(b"b"), DeletePrefix(b"/c/")],
            )
        )
        self.assertEqual(result, TxnResult(True, 8))
        bodies = [body for _, _, body in self.gateway.requests[1:]]
        self.assertEqual(bodies[0], {"key": b64(b"k"), "value": b64(b"v")})
        self.assertEqual(bodies[1], {"key": b64(b"k")})
        self.assertEqual(bodies[2], {"key": b64(b"/p/"), "range_end": b64(b"/p0")})
        self.assertEqual(
            bodies[3],
            {
                "compare": [
                    {
                        "key": b64(b"a"),
                        "result": "EQUAL",
                        "target": "MOD",
                        "mod_revision": 0,
                    },
                    {
                        "key": b64(b"b"),
                        "result": "EQUAL",
                        "target": "VALUE",
                        "value": b64(b"x"),
                    },
                ],
                "success": [
                    {"request_put": {"key": b64(b"a"), "value": b64(b"1")}},
                    {"request_delete_range": {"key": b64(b"b")}},
                    {
                        "request_delete_range": {
                            "key": b64(b"/c/"),
                            "range_end": b64(b"/c0"),
                        }
                    },
                ],
            },
        )

    def test_txn_failed(self) -> None:
        """
        A transaction whose comparisons fail reports C{succeeded} false.
        """
        self.gateway.answers["kv/txn"] = (200, {"header": header(4)})
        self.assertEqual(
            self.successResultOf(
                self.client.txn([ModRevisionIs(b"a", 0)], [Put(b"a", b"1")])
            ),
            TxnResult(False, 4),
        )

    def test_status(self) -> None:
        """
        C{status} reports the member's version and the store's revision.
        """
        status = self.successResultOf(self.client.status())
        self.assertEqual(
            (status.version, status.revision, status.leader), ("3.5.1", 4, 2)
        )

    def test_rotates_on_refused_connection(self) -> None:
        """
        When an endpoint refuses connections the client uses the next one, and
        stays there.
        """
        self.agent.down.add(b"etcd1")
        self.successResultOf(self.client.put(b"k", b"v"))
        self.successResultOf(self.client.put(b"k", b"v"))
        self.assertEqual({host for host, _, _ in self.gateway.requests}, {"etcd2"})
        self.assertIsNone(self.client.apiPrefix("http://etcd1:2379"))
        self.assertEqual(self.client.apiPrefix("http://etcd2:2379"), "/v3/")
        self.flushLoggedErrors()

    def test_all_down(self) -> None:
        """
        When no endpoint can be reached the call fails with L{EtcdUnavailable}.
        """
        self.agent.down.update({b"etcd1", b"etcd2"})
        failure = self.failureResultOf(self.client.put(b"k", b"v"), EtcdUnavailable)
        self.assertEqual(len(failure.value.args[0]), 2)

    def test_lost_answer(self) -> None:
        """
        A write whose answer was lost is not sent again (etcd may have applied
        it); a read is, to the next endpoint.
        """
        self.successResultOf(self.client.status())
        self.agent.lost.add(b"etcd1")
        self.failureResultOf(self.client.put(b"k", b"v"), EtcdUnavailable)
        self.assertEqual(self.gateway.paths()[-1], "/v3/maintenance/status")
        self.agent.lost = {b"etcd2"}
        self.successResultOf(self.client.getPrefix(b"/hosts/"))
        self.assertEqual(self.gateway.requests[-1][0], "etcd1")

    def test_staleConnectionRetriedOnSameEndpoint(self) -> None:
        """
        A read whose pooled connection was closed before the answer is tried
        once more on the same endpoint, not failed over; a write is not.
        """
        self.successResultOf(self.client.status())
        self.agent.staleOnce.add(b"etcd1")
        self.successResultOf(self.client.getPrefix(b"/hosts/"))
        self.assertEqual(self.gateway.requests[-1][0], "etcd1")
        self.assertEqual(self.client.endpoint, self.client._endpoints[0])
        self.agent.staleOnce.add(b"etcd1")
        self.failureResultOf(self.client.put(b"k", b"v"), EtcdUnavailable)

    def test_cancel(self) -> None:
        """
        Cancelling a call cancels its request, without trying other endpoints.
        """
        self.successResultOf(self.client.status())
        self.gateway.hold.add("kv/range")
        d = self.client.getPrefix(b"/hosts/")
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual({host for host, _, _ in self.gateway.requests}, {"etcd1"})
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class EtcdWatchTests(ClientTestsMixin, SynchronousTestCase):
    """
    Tests for L{EtcdClient.watch}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.batches: list[WatchEvents] = []
        self.progress: list[int] = []

    def start(self, revision: int = 5) -> Any:
        watch = self.client.watch(
            b"/hosts/", revision, self.batches.append, self.progress.append
        )
        self.traversal.flush()
        return watch

    def send(self, data: bytes) -> None:
        self.gateway.watches[-1].write(data)
        self.traversal.flush()

    def events(self) -> list[WatchEvent]:
        return [e for b in self.batches for e in b.events]

    def test_interface(self) -> None:
        """
        The watch provides L{IWatch}.
        """
        verifyObject(IWatch, self.start())

    def test_request(self) -> None:
        """
        The watch asks for the prefix's range from the start revision, with
        progress notifications, and requires a leader.
        """
        self.start(5)
        host, path, body = self.gateway.requests[-1]
        self.assertEqual(path, "/v3/watch")
        self.assertEqual(
            body,
            {
                "create_request": {
                    "key": b64(b"/hosts/"),
                    "range_end": b64(b"/hosts0"),
                    "start_revision": "5",
                    "progress_notify": True,
                }
            },
        )
        self.assertEqual(
            self.gateway.headers[-1][b"Grpc-Metadata-Hasleader"], [b"true"]
        )

    def test_split_events(self) -> None:
        """
        Events arrive in order even when the stream splits their messages.
        """
        watch = self.start()
        data = PUT_5 + DELETE_6
        self.send(data[:7])
        self.send(data[7 : len(PUT_5) + 3])
        self.send(data[len(PUT_5) + 3 :])
        self.assertEqual(
            [b.events[0] for b in self.batches], [e.events[0] for e in EXPECTED[1:]]
        )  # type: ignore[union-attr]
        self.assertEqual(watch.nextRevision, 7)

    def test_duplicates_dropped(self) -> None:
        """
        Events at or below a revision already delivered are not delivered
        again, nor events from before the start revision.
        """
        self.start(5)
        self.send(events_line(4, put_event(b"/hosts/old", b"x", 4)))
        self.send(PUT_5 + PUT_5 + DELETE_6)
        self.assertEqual([e.modRevision for e in self.events()], [5, 6])

    def test_progress(self) -> None:
        """
        A progress notification reaches C{onProgress} and advances
        C{nextRevision}.
        """
        watch = self.start(5)
        self.send(line({"result": {"header": header(40)}}))
        self.assertEqual(self.progress, [40])
        self.assertEqual(watch.nextRevision, 41)

    def test_compacted(self) -> None:
        """
        A cancellation for compaction ends the watch as COMPACTED with the
        compaction revision, and closes the stream etcd leaves open.
        """
        watch = self.start(2)
        lost: list[Failure] = []
        self.gateway.watches[-1].notifyFinish().addErrback(lost.append)
        self.send(
            line({"result": {"header": {}, "canceled": True, "compact_revision": "19"}})
        )
        ended = self.successResultOf(watch.ended)
        self.assertEqual(
            ended, WatchEnded(EndReason.COMPACTED, 2, 19, None, "revision 2 compacted")
        )
        self.assertEqual(len(lost), 1)

    def test_error(self) -> None:
        """
        An error in the stream ends the watch as ERROR, with etcd's error.
        """
        watch = self.start()
        self.send(
            line(
                {
                    "error": {
                        "grpc_code": 14,
                        "http_code": 503,
                        "message": "etcdserver: no leader",
                    }
                }
            )
        )
        ended = self.successResultOf(watch.ended)
        self.assertEqual(ended.reason, EndReason.ERROR)
        self.assertEqual(ended.error, WatchError(14, "etcdserver: no leader"))

    def test_bad_message(self) -> None:
        """
        An undecodable message ends the watch as ERROR; nothing after it is
        delivered.
        """
        watch = self.start()
        self.send(b"{garbage\n" + PUT_5)
        ended = self.successResultOf(watch.ended)
        self.assertEqual(ended.reason, EndReason.ERROR)
        self.assertEqual(self.batches, [])

    def test_callback_exception(self) -> None:
        """
        An exception from the callback is logged, not swallowed: the watch
        ends failing with it, and its connection is closed.
        """

        def explode(batch: WatchEvents) -> None:
            raise ZeroDivisionError("boom")

        watch = self.client.watch(b"/hosts/", 5, explode)
        self.traversal.flush()
        lost: list[Failure] = []
        self.gateway.watches[-1].notifyFinish().addErrback(lost.append)
        self.send(PUT_5 + DELETE_6)
        self.failureResultOf(watch.ended, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(lost), 1)

    def test_stream_closed(self) -> None:
        """
        A stream that etcd ends is reported as CONNECTION_LOST, with the
        revision to resume from.
        """
        watch = self.start(5)
        self.send(PUT_5)
        self.gateway.watches[-1].finish()
        self.traversal.flush()
        ended = self.successResultOf(watch.ended)
        self.assertEqual(
            (ended.reason, ended.nextRevision), (EndReason.CONNECTION_LOST, 6)
        )

    def test_cancel_streaming(self) -> None:
        """
        Cancelling a running watch closes its connection, then ends it as
        CANCELLED; no timer is left.
        """
        watch = self.start()
        lost: list[Failure] = []
        self.gateway.watches[-1].notifyFinish().addErrback(lost.append)
        watch.cancel()
        self.traversal.flush()
        self.assertEqual(self.successResultOf(watch.ended).reason, EndReason.CANCELLED)
        self.assertEqual(len(lost), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_cancel_before_response(self) -> None:
        """
        Cancelling a watch before etcd answers cancels the request.
        """
        self.gateway.hold.add("watch")
        watch = self.start()
        self.assertNoResult(watch.ended)
        watch.cancel()
        self.assertEqual(self.successResultOf(watch.ended).reason, EndReason.CANCELLED)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """
        A watch that etcd refuses with an HTTP error ends as ERROR.
        """
        self.gateway.answers["watch"] = (
            503,
            {"error": "no leader", "code": 14, "message": "no leader"},
        )
        ended = self.successResultOf(self.start().ended)
        self.assertEqual(
            (ended.reason, ended.error), (EndReason.ERROR, WatchError(14, "no leader"))
        )

    def test_unreachable(self) -> None:
        """
        A watch with no reachable endpoint ends as CONNECTION_LOST.
        """
        self.agent.down.update({b"etcd1", b"etcd2"})
        ended = self.successResultOf(self.start(3).ended)
        self.assertEqual(
            (ended.reason, ended.nextRevision), (EndReason.CONNECTION_LOST, 3)
        )


class MemoryRouteStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryRouteStore}.
    """

    def setUp(self) -> None:
        self.store = MemoryRouteStore()
        self.batches: list[WatchEvents] = []

    def test_interface(self) -> None:
        """
        L{MemoryRouteStore} and its watches provide the interfaces.
        """
        verifyObject(IRouteStore, self.store)
        verifyObject(IWatch, self.store.watch(b"/", 0, self.batches.append))

    def test_revisions(self) -> None:
        """
        Each change increments the revision; reads see keys under a prefix.
        """
        self.assertEqual(self.successResultOf(self.store.put(b"/h/a", b"1")), 2)
        self.assertEqual(self.successResultOf(self.store.put(b"/h/b", b"2")), 3)
        self.successResultOf(self.store.put(b"/x", b"3"))
        self.assertEqual(
            self.successResultOf(self.store.getPrefix(b"/h/")),
            Snapshot(4, [Entry(b"/h/a", b"1", 2), Entry(b"/h/b", b"2", 3)]),
        )
        self.assertEqual(
            self.successResultOf(self.store.delete(b"/h/a")), DeleteResult(5, 1)
        )
        self.assertEqual(
            self.successResultOf(self.store.delete(b"/h/a")), DeleteResult(5, 0)
        )
        self.assertEqual(
            self.successResultOf(self.store.deletePrefix(b"/")), DeleteResult(6, 2)
        )
        self.assertEqual(self.store.items(), {})

    def test_txn(self) -> None:
        """
        A transaction applies its success operations at one revision when its
        comparisons hold, else its failure operations.
        """
        ops = [Put(b"/h/a", b"1"), Put(b"/h/b", b"2")]
        self.assertEqual(
            self.successResultOf(self.store.txn([ModRevisionIs(b"/h/a", 0)], ops)),
            TxnResult(True, 2),
        )
        self.assertEqual(
            self.successResultOf(
                self.store.txn([ValueIs(b"/h/a", b"9")], ops, [Delete(b"/h/b")])
            ),
            TxnResult(False, 3),
        )
        self.assertEqual(self.store.items(), {b"/h/a": b"1"})

    def test_watch(self) -> None:
        """
        A watch gets the changes under its prefix synchronously, each batch
        one revision.
        """
        self.store.watch(b"/h/", 0, self.batches.append)
        self.successResultOf(self.store.txn([], [Put(b"/h/a", b"1"), Put(b"/x", b"2")]))
        self.successResultOf(self.store.delete(b"/h/a"))
        self.assertEqual(
            self.batches,
            [
                WatchEvents(2, (WatchEvent(EventType.PUT, b"/h/a", b"1", 2),)),
                WatchEvents(3, (WatchEvent(EventType.DELETE, b"/h/a", b"", 3),)),
            ],
        )

    def test_watch_history_and_clock(self) -> None:
        """
        A watch from a past revision replays history; with a clock, delivery
        waits for the clock.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        store = MemoryRouteStore(clock)
        store.put(b"/h/a", b"1")
        store.put(b"/h/b", b"2")
        watch = store.watch(b"/h/", 3, self.batches.append)
        self.assertEqual(self.batches, [])
        clock.advance(0)
        self.assertEqual([b.revision for b in self.batches], [3])
        self.assertEqual(watch.nextRevision, 4)

    def test_compacted(self) -> None:
        """
        A watch from a compacted revision ends as COMPACTED.
        """
        self.store.put(b"/h/a", b"1")
        self.store.compact(2)
        ended = self.successResultOf(
            self.store.watch(b"/h/", 2, self.batches.append).ended
        )
        self.assertEqual(
            (ended.reason, ended.compactRevision), (EndReason.COMPACTED, 2)
        )

    def test_callback_exception(self) -> None:
        """
        An exception from a watch callback is logged and fails the watch.
        """

        def explode(batch: WatchEvents) -> None:
            raise ZeroDivisionError()

        watch = self.store.watch(b"/", 0, explode)
        self.store.put(b"/a", b"1")
        self.failureResultOf(watch.ended, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.store.watches, [])

    def test_unavailable_and_disconnect(self) -> None:
        """
        An unavailable store fails calls and new watches; C{disconnect} ends
        running watches as CONNECTION_LOST.
        """
        watch = self.store.watch(b"/", 0, self.batches.append)
        self.store.disconnect()
        self.assertEqual(
            self.successResultOf(watch.ended).reason, EndReason.CONNECTION_LOST
        )
        self.store.unavailable = True
        self.failureResultOf(self.store.put(b"/a", b"1"), EtcdUnavailable)
        self.failureResultOf(self.store.getPrefix(b"/"), EtcdUnavailable)
        late = self.store.watch(b"/", 0, self.batches.append)
        self.assertEqual(
            self.successResultOf(late.ended).reason, EndReason.CONNECTION_LOST
        )

    def test_progress_and_cancel(self) -> None:
        """
        C{progress} notifies the store's revision; C{cancel} ends the watch.
        """
        progress: list[int] = []
        watch = self.store.watch(b"/", 0, self.batches.append, progress.append)
        self.store.put(b"/elsewhere", b"x")
        watch.progress()
        self.assertEqual(progress, [2])
        watch.cancel()
        self.assertEqual(self.successResultOf(watch.ended).reason, EndReason.CANCELLED)
