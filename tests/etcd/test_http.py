"""
Tests for L{revproxy.etcd.http}: the etcd client's HTTP plumbing and the
route sync service a program builds from etcd endpoints.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, FirstError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.http import BytesProducer, Timeout, etcdRouteService, wasCancelled
from revproxy.routing.resolver import RouteResolver


class BytesProducerTests(SynchronousTestCase):
    """
    L{BytesProducer} writes its body at once.
    """

    def test_writesAtOnce(self) -> None:
        """
        The whole body is written when production starts, and the length is
        known in advance.
        """
        producer = BytesProducer(b'{"key":"a"}')
        transport = StringTransport()
        self.assertEqual(producer.length, 11)
        self.successResultOf(producer.startProducing(transport))
        self.assertEqual(transport.value(), b'{"key":"a"}')


class TimeoutTests(SynchronousTestCase):
    """
    L{Timeout} cancels a Deferred that takes too long.
    """

    def test_expires(self) -> None:
        """
        After its seconds the Deferred is cancelled and the timeout says it
        fired.
        """
        clock = Clock()
        d: Deferred[None] = Deferred()
        timeout = Timeout(clock, 5, d)
        clock.advance(4.9)
        self.assertNoResult(d)
        self.assertFalse(timeout.fired)
        clock.advance(0.1)
        self.failureResultOf(d, CancelledError)
        self.assertTrue(timeout.fired)

    def test_stopped(self) -> None:
        """
        A stopped timeout leaves no delayed call and never fires.
        """
        clock = Clock()
        d: Deferred[None] = Deferred()
        timeout = Timeout(clock, 5, d)
        timeout.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(timeout.fired)


class WasCancelledTests(SynchronousTestCase):
    """
    L{wasCancelled} recognizes a cancellation, also wrapped.
    """

    def test_cancellation(self) -> None:
        """
        A L{CancelledError}, or an error wrapping one, is a cancellation;
        another error is not.
        """
        self.assertTrue(wasCancelled(CancelledError()))
        wrapped = FirstError(Failure(CancelledError()), 0)
        wrapped.reasons = [Failure(CancelledError())]  # type: ignore[attr-defined]
        self.assertTrue(wasCancelled(wrapped))
        self.assertFalse(wasCancelled(ValueError()))


class EtcdRouteServiceTests(SynchronousTestCase):
    """
    L{etcdRouteService} builds the sync and the closer of its connections.
    """

    def test_services(self) -> None:
        """
        The service holds the sync of the given prefix, feeding the given
        resolver, and the closer of the client's connections, which does
        not log for each connection.
        """
        resolver = RouteResolver()
        service = etcdRouteService(
            MemoryReactorClock(), ["http://127.0.0.1:2379"], resolver, "/routes/"
        )
        self.assertEqual(service.name, "etcd")
        sync = service.getServiceNamed("etcd-sync")
        self.assertEqual(sync.prefix, "/routes/")
        self.assertIs(sync._resolver, resolver)
        closer = service.getServiceNamed("etcd-connections")
        self.assertFalse(closer._pool._factory.noisy)
