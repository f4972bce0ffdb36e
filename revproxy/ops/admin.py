# -*- test-case-name: tests.ops.test_admin -*-
"""
The admin endpoint: health, readiness, the route table and metrics, on a
listener of its own (C{--admin}).

- C{/healthz}: 200 while the process runs.
- C{/readyz}: 200 once a route table is loaded and, with etcd, while the
  watch is live or etcd was last heard from within the grace period; 503
  otherwise, so that a load balancer in front stops sending traffic to a
  node that has lost etcd for long.
- C{/routes}: the table as JSON, with each upstream's runtime state (up,
  down, ejected, failures, in flight, last check) and the state of the
  etcd sync; C{/routes/<host>} explains the route of one request host
  (L{revproxy.ops.upstreams}).
- C{/metrics}: Prometheus text format.
- C{/}: the status page (L{revproxy.ops.statuspage}).

With C{--state-dir}, a node serving its last-good snapshot before etcd is
read is I{stale}: C{/readyz} says so with a 200, or a 503 with
C{--ready-requires-etcd}.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from revproxy.forward.reporting import RequestMetrics
from revproxy.ops.listener import Listener
from revproxy.ops.metrics import BUCKETS, ProxyMetrics
from revproxy.routing.address import Upstream
from revproxy.ops.clientmetrics import clientMetrics
from revproxy.ops.statuspage import StatusPage
from revproxy.ops.upstreams import explainRoute, healthMetrics, upstreamState
from revproxy.routing.resolver import NoRouteTable, RouteResolver
from revproxy.upstream.state import UpstreamStates

if TYPE_CHECKING:
    from revproxy.forward.resource import RoutingProxyResource
    from revproxy.upstream.pool import UpstreamPool

__all__ = ["AdminResource", "AdminSite", "ProxyCollector", "adminListener"]


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, admin: AdminResource) -> None:
        super().__init__()
        self.admin = admin

    def _plain(self, request: Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return text.encode("utf-8") + b"\n"


class _Health(_Leaf):
    def render_GET(self, request: Request) -> bytes:
        return self._plain(request, 200, "ok")


class _Ready(_Leaf):
    def render_GET(self, request: Request) -> bytes:
        ready, why = self.admin.ready()
        return self._plain(request, 200 if ready else 503, why)


class _Routes(_Leaf):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        path = [p for p in request.postpath or [] if p]
        if not path:
            data: Any = self.admin.routes()
        else:
            host = b"/".join(path).decode("utf-8", "replace")
            try:
                data = self.admin.explain(host)
            except NoRouteTable:
                request.setResponseCode(503)
                data = {"error": "no route table loaded yet"}
            else:
                if data is None:
                    request.setResponseCode(404)
                    data = {"error": f"no route for host {host}"}
        return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


class _Metrics(_Leaf):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.admin.registry)


class AdminResource(Resource):
    """
    The root of the admin site.

    @param graceSeconds: how long after losing etcd the node stays ready.
    """

    def __init__(
        self,
        resolver: RouteResolver,
        collector: ProxyCollector,
        pool: Any,
        clock: IReactorTime,
        sync: Any = None,
        graceSeconds: float = 30.0,
        states: UpstreamStates | None = None,
        fleet: Any = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        super().__init__()
        self._states = states
        self.fleet = fleet
        self.metrics = metrics
        self._resolver = resolver
        self._pool = pool
        self._clock = self.clock = clock
        self._sync = sync
        self.graceSeconds = graceSeconds
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        for name, leaf in [
            (b"healthz", _Health),
            (b"readyz", _Ready),
            (b"routes", _Routes),
            (b"metrics", _Metrics),
        ]:
            self.putChild(name, leaf(self))
        self.putChild(b"", StatusPage(self))

    def ready(self) -> tuple[bool, str]:
        """
        Whether this node should get traffic, and why.
        """
        if self._resolver.table is None:
            return False, "no route table loaded yet"
        fleet = self.fleet
        if fleet is not None and fleet.stale:
            why = fleet.snapshot.describe()
            if fleet.requireEtcd:
                return False, f"not ready: {why} (--ready-requires-etcd)"
            return True, f"ready, {why}"
        sync = self._sync
        if sync is None or sync.live:
            return True, "ready"
        since = self._sinceContact()
        if since is not None and since <= self.graceSeconds:
            return True, f"ready: etcd watch down, last contact {since:.1f}s ago"
        return False, "etcd unreachable for longer than the grace period"

    def _sinceContact(self) -> float | None:
        sync = self._sync
        if sync is None or sync.lastContact is None:
            return None
        return float(self._clock.seconds() - sync.lastContact)

    def explain(self, host: str) -> dict[str, Any] | None:
        """
        The explanation of the route of request host C{host}, or L{None}.

        @raise NoRouteTable: if no table is loaded yet.
        """
        states = self._states if self._states is not None else UpstreamStates()
        return explainRoute(self._resolver, states, host, self._clock.seconds())

    def routes(self) -> dict[str, Any]:
        """
        The route table and the sync's state, as JSON-ready data.
        """
        busy = {k: b for k, (i, b) in self._pool.connectionCounts().items()}
        table = self._resolver.table
        sync = self._sync
        hosts: dict[str, list[dict[str, Any]]] = {}
        if table is not None:
            for host, route in table.routes.items():
                entries = hosts[host] = [
                    {
                        "upstream": str(u),
                        "weight": u.weight,
                        "inflight": busy.get(u.key, 0),
                    }
                    for u in route.upstreams
                ]
                if self._states is not None:
                    now = self._clock.seconds()
                    for entry, u in zip(entries, route.upstreams):
                        entry.update(upstreamState(self._states.get(u), now))
                if sync is not None:
                    for entry, key in zip(entries, sync.keysOf(host)):
                        entry["key"] = key
        out: dict[str, Any] = {
            "loaded": table is not None,
            "hosts": hosts,
            "source": "static" if sync is None else "etcd",
        }
        if sync is not None:
            since = self._sinceContact()
            out["etcd"] = {
                "endpoint": sync.endpoint,
                "prefix": sync.prefix,
                "revision": sync.revision,
                "live": sync.live,
                "seconds_since_contact": None if since is None else round(since, 3),
                "reconnects": sync.reconnects,
                "resyncs": sync.resyncs,
                "skipped_keys": sorted(sync.skipped),
            }
        return out


class ProxyCollector(Collector):
    """
    A Prometheus collector over a proxy's state.

    @param metrics: the request counters: the resource's metrics, which
        must be a L{ProxyMetrics}.
    @param resource: the proxy resource (its C{inflight}).
    @param pool: the upstream pool (idle and busy connections).
    @param sync: the etcd route sync, or L{None} without etcd.
    """

    def __init__(
        self,
        metrics: RequestMetrics | None,
        resource: Any,
        pool: Any,
        sync: Any = None,
        checker: Any = None,
    ) -> None:
        if not isinstance(metrics, ProxyMetrics):
            raise TypeError(f"ProxyCollector reads a ProxyMetrics, not {metrics!r}")
        self._metrics = metrics
        self._resource = resource
        self._pool = pool
        self._sync = sync
        self._checker = checker

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "revproxy_requests",
            "Requests answered, by route host, status class and upstream.",
            labels=["host", "code", "upstream"],
        )
        for (host, code, upstream), n in sorted(m.requests.items()):
            requests.add_metric([host, code, upstream], n)
        yield requests

        durations = HistogramMetricFamily(
            "revproxy_upstream_response_seconds",
            "Time from a request's arrival to the end of its upstream's response.",
            labels=["upstream"],
        )
        for upstream, counts in sorted(m.durations.items()):
            cumulative = []
            total = 0
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts):
                total += n
                cumulative.append((bound, total))
            durations.add_metric([upstream], cumulative, m.durationSums[upstream])
        yield durations

        yield GaugeMetricFamily(
            "revproxy_inflight_requests",
            "Requests being forwarded now.",
            value=self._resource.inflight,
        )

        connections = GaugeMetricFamily(
            "revproxy_upstream_connections",
            "Upstream connections in the pool, by state.",
            labels=["upstream", "state"],
        )
        for key, (idle, busy) in sorted(self._pool.connectionCounts().items()):
            name = Upstream(*key).name
            connections.add_metric([name, "idle"], idle)
            connections.add_metric([name, "busy"], busy)
        yield connections
        yield CounterMetricFamily(
            "revproxy_upstream_connections_opened",
            "Upstream connections opened.",
            value=self._pool.opened,
        )
        states = getattr(self._resource, "states", None)
        if states is not None:
            yield from healthMetrics(
                states,
                getattr(self._resource, "retryCounts", {}),
                None if self._checker is None else self._checker.results,
                self._resource.reactor.seconds(),
            )

        yield from _tunnelMetrics(self._resource.tunnels)
        yield from clientMetrics(getattr(self._resource, "site", None))

        sync = self._sync
        if sync is None:
            return
        yield GaugeMetricFamily(
            "revproxy_etcd_revision", "The last etcd revision applied.", value=sync.revision
        )
        yield CounterMetricFamily(
            "revproxy_etcd_reconnects",
            "Times the etcd watch was started again after it ended.",
            value=sync.reconnects,
        )
        yield CounterMetricFamily(
            "revproxy_etcd_resyncs",
            "Times the routes were re-read because etcd compacted the history.",
            value=sync.resyncs,
        )
        yield GaugeMetricFamily(
            "revproxy_etcd_skipped_keys",
            "Route keys skipped because they do not parse.",
            value=len(sync.skipped),
        )
        yield GaugeMetricFamily(
            "revproxy_etcd_watch_live",
            "1 while the etcd watch is running.",
            value=1 if sync.live else 0,
        )


class AdminSite(Site):
    """
    The admin endpoint's site: quiet, since health checks poll it often.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: object) -> None:
        pass
def _tunnelMetrics(tunnels: Any) -> Iterator[Metric]:
    """
    The tunnel metrics of a L{revproxy.forward.tunnel.TunnelRegistry}.
    """
    opened = GaugeMetricFamily(
        "revproxy_tunnels_open",
        "Tunnels open now (after a 101), by route host.",
        labels=["host"],
    )
    draining = GaugeMetricFamily(
        "revproxy_tunnels_draining",
        "Open tunnels whose upstream left the host's route, by route host.",
        labels=["host"],
    )
    for host, (n, d) in sorted(tunnels.counts().items()):
        opened.add_metric([host], n)
        draining.add_metric([host], d)
    yield opened
    yield draining
    relayed = CounterMetricFamily(
        "revproxy_tunnel_bytes",
        "Bytes relayed by tunnels: upstream is from clients to upstreams, "
        "downstream from upstreams to clients.",
        labels=["direction"],
    )
    relayed.add_metric(["upstream"], tunnels.bytesUpstream)
    relayed.add_metric(["downstream"], tunnels.bytesDownstream)
    yield relayed


def adminListener(
    options: Mapping[str, Any],
    resource: RoutingProxyResource,
    resolver: RouteResolver,
    pool: UpstreamPool,
    sync: Any,
    reactor: Any,
    checker: Any = None,
    fleet: Any = None,
) -> IService:
    """
    The admin endpoint's listener.
    """
    assert resource.metrics is not None
    admin = AdminResource(
        resolver,
        ProxyCollector(resource.metrics, resource, pool, sync, checker),
        pool,
        reactor,
        sync,
        graceSeconds=options["ready-grace"],
        states=resource.states,
        fleet=fleet,
        metrics=resource.metrics if isinstance(resource.metrics, ProxyMetrics) else None,
    )
    site = AdminSite(admin, reactor=reactor)
    listener = Listener(options["admin"], site, reactor)
    listener.setName(f"admin {options['admin']}")
    return listener
