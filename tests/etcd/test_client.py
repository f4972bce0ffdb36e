"""
Tests for L{revproxy.etcd.client}: the gateway client on an in-memory HTTP
server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from revproxy.etcd.types import (
    Delete,
    DeletePrefix,
    DeleteResult,
    Entry,
    EtcdError,
    EtcdUnavailable,
    IRouteStore,
    ModRevisionIs,
    Put,
    Snapshot,
    TxnResult,
    ValueIs,
)
from tests.etcd.gateway import (
    ClientTestsMixin,
    b64,
    header,
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
        self.assertIn("no answer within 10.0s", str(failure.value))
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


class NotEtcdTests(SynchronousTestCase):
    def test_htmlServerIsNotEtcd(self) -> None:
        """An HTTP server that is not etcd is reported as exactly that, in one line, without its body."""
        from treq.client import HTTPClient
        from treq.testing import RequestTraversalAgent
        from twisted.web.resource import Resource
        from twisted.web.server import Request

        from revproxy.etcd.client import EtcdClient
        from revproxy.etcd.types import EtcdError

        class Page(Resource):
            isLeaf = True

            def render_POST(self, request: Request) -> bytes:
                return b"<html>\n<body>\n<h1>Hello</h1>\n</body>\n</html>\n"

        client = EtcdClient(
            MemoryReactorClock(),
            ["http://web:80"],
            HTTPClient(RequestTraversalAgent(Page())),
        )
        failure = self.failureResultOf(client.getPrefix(b"/hosts/"), EtcdError)
        self.assertEqual(
            str(failure.value),
            "http://web:80 is not etcd (it answered HTTP 200 to an etcd status request)",
        )

    def test_unaryAnswerWithoutBody(self) -> None:
        """A non-JSON multi-line answer is described in one line, without its body."""
        from revproxy.etcd.decoder import parseUnaryAnswer
        from revproxy.etcd.types import EtcdError

        e = self.assertRaises(EtcdError, parseUnaryAnswer, 502, b"<html>\n<b>bad</b>\n</html>")
        self.assertEqual(str(e), "not an etcd answer (HTTP 502, 25 bytes that are not JSON)")

    def test_describeProblem(self) -> None:
        """Connection problems read as their reasons, never a repr of a Failure."""
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseNeverReceived

        from revproxy.etcd.http import describeProblem
        from revproxy.etcd.types import EtcdUnavailable

        text = describeProblem(ResponseNeverReceived([Failure(ConnectionLost("gone"))]))
        self.assertNotIn("<", text)
        self.assertIn("gone", text)
        self.assertEqual(str(EtcdUnavailable(["a: x", "b: y"])), "a: x; b: y")
