# -*- test-case-name: tests.etcd.test_http -*-
"""
The HTTP plumbing under the etcd gateway client, and the one function that
builds the route sync a program needs from a list of etcd endpoints.

L{etcdRouteService} is what the proxy's composition root and a library
user call: a L{MultiService} with the sync (C{"etcd-sync"}) and the closer
of the client's keep-alive connections (C{"etcd-connections"}).  The client
and the sync are imported when it is called, not when this module is:
txaioetcd, under the client, is slow to import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from revproxy._compat import quietHTTPConnectionPool

if TYPE_CHECKING:
    from revproxy.routing.resolver import RouteResolver

__all__ = ["BytesProducer", "Timeout", "describeProblem", "wasCancelled", "etcdRouteService"]


@implementer(IBodyProducer)
class BytesProducer:
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


def describeProblem(problem: BaseException) -> str:
    """
    Why a request to an endpoint failed, as one readable reason (never a
    repr of a Failure): for a connection error, the errors it wraps.
    """
    reasons = getattr(problem, "reasons", None)
    if isinstance(reasons, list) and reasons:
        texts = [r.getErrorMessage() if isinstance(r, Failure) else str(r) for r in reasons]
        texts = [t.rstrip(".") for t in texts if t.strip()]
        return "; ".join(dict.fromkeys(texts)) or type(problem).__name__
    text = str(problem)
    return text if text else type(problem).__name__


def wasCancelled(exc: BaseException) -> bool:
    """
    Whether C{exc} is, or wraps, a L{CancelledError}: the caller gave up.
    """
    if isinstance(exc, CancelledError):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(CancelledError) for r in reasons)


class Timeout:
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


class _ConnectionPoolCloser(Service):
    """
    Closes the etcd client's idle connections on shutdown.
    """

    name = "etcd-connections"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def stopService(self) -> Any:
        super().stopService()
        return self._pool.closeCachedConnections()


def etcdRouteService(
    reactor: Any,
    endpoints: Sequence[str],
    resolver: RouteResolver,
    prefix: str = "/hosts/",
    timeout: float = 5.0,
    backoffInitial: float = 0.5,
    backoffMax: float = 30.0,
    probeInterval: float = 5.0,
) -> MultiService:
    """
    The services that keep C{resolver}'s routes equal to the route keys
    under C{prefix} in etcd: an L{EtcdClient} on its own keep-alive pool
    over C{endpoints} (C{http://host:port} URLs), the sync that follows the
    keys, and the closer of the pool.  Start it to load and follow; stop it
    to stop watching and close every connection.

    @param timeout: seconds an etcd request may take before the next
        endpoint is tried.
    @param backoffInitial: the first delay before watching again after the
        watch ended; it doubles up to C{backoffMax}, with jitter.
    @param probeInterval: seconds between liveness probes.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    from revproxy.etcd.client import EtcdClient
    from revproxy.etcd.sync import EtcdRouteSync

    pool = quietHTTPConnectionPool(reactor)
    agent = Agent(reactor, connectTimeout=timeout, pool=pool)
    store = EtcdClient(reactor, endpoints, HTTPClient(agent), timeout=timeout)
    services = MultiService()
    services.setName("etcd")
    _ConnectionPoolCloser(pool).setServiceParent(services)
    EtcdRouteSync(
        store,
        resolver,
        prefix,
        reactor,
        backoffInitial=backoffInitial,
        backoffMax=backoffMax,
        probeInterval=probeInterval,
    ).setServiceParent(services)
    return services
