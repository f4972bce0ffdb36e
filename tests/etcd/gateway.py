"""
Helpers of the etcd adapter's tests: the gateway's wire format, an in-memory
gateway (L{FakeGateway}), an agent that fails chosen hosts and an
L{EtcdClient} wired to them.
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
from twisted.web.client import URI, ResponseNeverReceived
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from revproxy.etcd.client import EtcdClient
from revproxy.etcd.types import (
    EventType,
    WatchCreated,
    WatchEvent,
    WatchEvents,
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
