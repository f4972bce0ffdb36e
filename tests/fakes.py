"""
Test doubles shared by the unit tests: an endpoint whose connections the
test completes or fails by hand, and a response receiver that records what it is
told.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer


class AbortableTransport(StringTransport):
    """
    A L{StringTransport} that records aborts.  As with a real transport, its
    protocol learns of the closing only later: the test calls
    L{AbortableTransport.reportLost}.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "10.0.0.1", 80))
        self.aborted = False
        self.protocol: Protocol | None = None

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()

    def reportLost(self) -> None:
        """
        Deliver C{connectionLost} to the protocol.
        """
        assert self.protocol is not None
        self.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Records connection attempts; the test completes them with
    L{FakeEndpoint.succeed} or L{FakeEndpoint.fail}.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[IProtocolFactory, Deferred[Protocol]]] = []
        self.protocols: list[Protocol] = []
        self.cancelled = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        def cancel(d: Deferred[Protocol]) -> None:
            self.cancelled += 1

        d: Deferred[Protocol] = Deferred(cancel)
        self.pending.append((factory, d))
        return d

    def succeed(self) -> tuple[Protocol, AbortableTransport]:
        factory, d = self.pending.pop(0)
        proto = factory.buildProtocol(None)
        transport = AbortableTransport()
        transport.protocol = proto
        proto.makeConnection(transport)
        self.protocols.append(proto)
        d.callback(proto)
        return proto, transport

    def fail(self) -> None:
        factory, d = self.pending.pop(0)
        d.errback(Failure(ConnectionRefusedError("refused")))


class RecordingReceiver:
    """
    A L{revproxy.upstream.connection.ResponseReceiver} that records every call.
    """

    def __init__(self) -> None:
        self.started: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self.body: list[bytes] = []
        self.ended = False
        self.awaited = False
        self.failure: tuple[Failure, bool] | None = None

    def responseStarted(
        self,
        code: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        bodyLength: int,
    ) -> None:
        self.started = (code, reason, headers)
        self.bodyLength = bodyLength

    def bodyReceived(self, data: bytes) -> None:
        self.body.append(data)

    def awaitingBody(self) -> None:
        self.awaited = True

    def responseEnded(self) -> None:
        self.ended = True

    def requestBodyFailed(self, status: int, message: bytes) -> None:
        self.bodyFailure = (status, message)

    def exchangeFailed(self, reason: Failure, responseBytes: bool) -> None:
        self.failure = (reason, responseBytes)

    def switchedProtocols(
        self, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        self.switched = (reason, headers, rest)


class RecordingTunnel:
    """
    An L{revproxy.upstream.connection.UpstreamTunnel} that records every call.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.readClosed = False
        self.lost: Failure | None = None

    def upstreamDataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def upstreamReadClosed(self) -> None:
        self.readClosed = True

    def upstreamLost(self, reason: Failure) -> None:
        self.lost = reason
