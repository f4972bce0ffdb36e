# -*- test-case-name: tests.test_tap -*-
"""
The composition root: command-line options and the service tree that
C{twistd revproxy} runs.

This is the only module that touches the global reactor, and only when
L{makeService} is not given one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.server import Site

from revproxy.config import (
    ConfigError,
    parseCount,
    parseEtcdEndpoints,
    parseKeyPrefix,
    parseSeconds,
)
from revproxy.ops.accesslog import AccessLogger
from revproxy.routing.balancing import POLICIES, policyNamed
from revproxy.ops.drain import DrainService
from revproxy.ops.logs import LOG_FORMATS, JSONLogging
from revproxy.ops.metrics import ProxyMetrics
from revproxy.forward.resource import RoutingProxyResource
from revproxy.forward.tunnel import TunnelRegistry
from revproxy.routing.resolver import RouteResolver
from revproxy.routing import (
    RouteError,
    RouteTable,
    Upstream,
    parseRoute,
    parseUpstream,
)
from revproxy.http.server import ProxySite
from revproxy.upstream.pool import UpstreamPool
from revproxy.upstream.state import UpstreamStates

__all__ = ["Options", "makeService", "Listener"]

DEFAULT_LISTEN = "tcp:8080"


_T = TypeVar("_T")


def _option(option: str, parse: Callable[[str], _T], text: str) -> _T:
    """
    Parse the value of C{option} with one of L{revproxy.config}'s parsers.

    @raise usage.UsageError: naming C{option}.
    """
    try:
        return parse(text)
    except ConfigError as e:
        raise usage.UsageError(f"{option}: {e}") from None


def _seconds(option: str, text: str) -> float:
    return _option(option, parseSeconds, text)


def _count(option: str, text: str) -> int:
    return _option(option, parseCount, text)


class _NoReactor:
    """
    Stands in for a reactor while listen descriptions are checked: parsing
    an endpoint does not use it.
    """


def _checkEndpoint(option: str, description: str) -> str:
    """
    Check that C{description} parses as a server endpoint.

    @raise usage.UsageError: naming C{option}.
    """
    try:
        serverFromString(_NoReactor(), description)
    except Exception as e:  # any parse error of any endpoint plugin
        raise usage.UsageError(f"{option}: bad endpoint {description!r}: {e}")
    return description


def _trustRoot(path: str) -> Any:
    """
    Load the CA certificates of C{--upstream-ca}.

    @raise usage.UsageError: if the file cannot be read or holds no
        certificate.
    """
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise usage.UsageError(f"--upstream-ca: cannot read {path!r}: {e.strerror}")
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + b for b in pem.split(marker)[1:]]
    try:
        certificates = [Certificate.loadPEM(b) for b in blocks]
    except Exception:
        certificates = []
    if not certificates:
        raise usage.UsageError(f"--upstream-ca: {path!r} holds no PEM certificate")
    return trustRootFromCertificates(certificates)


def _embeddedEtcd(options: usage.Options) -> tuple[str, Path, int]:
    """
    Check the options of C{--etcd embedded}: the binary, the data directory
    and the client port.
    """
    from revproxy.etcd.embedded import EtcdBinaryNotFound, findEtcdBinary

    port = options["etcd-client-port"]
    if not str(port).isdigit() or not 0 < int(port) <= 65535:
        raise usage.UsageError(f"--etcd-client-port: {port!r} is not a TCP port number")
    try:
        binary = findEtcdBinary()
    except EtcdBinaryNotFound as e:
        raise usage.UsageError(f"--etcd embedded: {e}")
    dataDir = Path(options["etcd-data-dir"]).absolute()
    if dataDir.exists() and not dataDir.is_dir():
        raise usage.UsageError(f"--etcd-data-dir: {str(dataDir)!r} is not a directory")
    return binary, dataDir, int(port)


class Options(usage.Options):
    """
    C{twistd revproxy} options.
    """

    synopsis = "[options]"
    longdesc = (
        "A reverse proxy and HTTP load balancer. Routes requests by their Host "
        "header to upstreams given with --route (or to one --upstream), "
        "balancing over the upstreams of each host."
    )

    optFlags = [
        ["no-access-log", None, "Do not log one line per request."],
    ]

    optParameters = [
        ["balance", None, "round-robin", f"Balancing policy: {', '.join(POLICIES)}."],
        ["upstream", None, None, "Single-host mode: send every request to URL."],
        ["etcd", None, None, "etcd endpoints to load routes from: URL[,URL...], or 'embedded' to run a single-member etcd as a child process."],
        ["etcd-data-dir", None, "revproxy-etcd", "With --etcd embedded: the etcd data directory."],
        ["etcd-client-port", None, "2379", "With --etcd embedded: the etcd client port on 127.0.0.1."],
        ["prefix", None, "/hosts/", "etcd key prefix of the routes."],
        ["etcd-timeout", None, "5", "Seconds an etcd request may take before the next endpoint is tried."],
        ["etcd-backoff", None, "0.5", "First delay, in seconds, before reconnecting to etcd; doubles up to --etcd-backoff-max."],
        ["etcd-backoff-max", None, "30", "Longest delay, in seconds, between etcd reconnection attempts."],
        ["etcd-probe-interval", None, "5", "Seconds between liveness probes of the etcd endpoint in use."],
        ["connect-timeout", None, "5", "Seconds to connect to an upstream."],
        ["timeout", None, "60", "Seconds to wait for an upstream's response headers."],
        ["drain-timeout", None, "10", "Seconds to let requests finish on shutdown."],
        ["idle-timeout", None, "60", "Seconds a client connection may idle between requests."],
        ["pool-size", None, "64", "Idle connections kept per upstream."],
        ["pool-idle-timeout", None, "60", "Seconds an idle upstream connection is kept."],
        ["tunnel-idle-timeout", None, "3600", "Seconds a tunnel (after a 101, e.g. a WebSocket) may carry no byte either way before it is closed."],
        ["tunnel-drain-timeout", None, "0", "Seconds a tunnel to an upstream removed from its host's route lives on; 0 for as long as it lasts."],
        ["upstream-ca", None, None, "PEM file of the CA certificates that https upstreams are verified against (default: the system's)."],
        ["log-format", None, "text", "Log format: text (human-readable) or json (one JSON object per line)."],
        ["admin", None, None, "Serve /healthz, /readyz, /routes and /metrics on this strports ENDPOINT, e.g. tcp:9901:interface=127.0.0.1."],
        ["ready-grace", None, "30", "Seconds /readyz stays 200 after the etcd watch is lost."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["route"] = []
        self["routes"] = {}

    def opt_port(self, port: str) -> None:
        """
        Listen on TCP port N (shorthand for --listen tcp:N).
        """
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise usage.UsageError(f"--port: {port!r} is not a TCP port number")
        self["listen"].append(f"tcp:{int(port)}")

    opt_p = opt_port

    def opt_listen(self, description: str) -> None:
        """
        Listen on a strports ENDPOINT (tcp:..., ssl:..., unix:...); repeatable.
        """
        self["listen"].append(_checkEndpoint("--listen", description))

    def opt_route(self, route: str) -> None:
        """
        A static route HOST=UPSTREAM[,UPSTREAM...]; repeatable.  HOST may be
        *.suffix or * (the default route).
        """
        try:
            host, upstreams = parseRoute(route)
        except RouteError as e:
            raise usage.UsageError(f"--route: {e}")
        if host in self["routes"]:
            raise usage.UsageError(f"--route: host {host!r} is given twice")
        self["routes"][host] = upstreams
        self["route"].append(route)

    def postOptions(self) -> None:
        if self["balance"] not in POLICIES:
            raise usage.UsageError(
                f"--balance: unknown policy {self['balance']!r} "
                f"(choose from {', '.join(POLICIES)})"
            )
        if self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(
                f"--log-format: unknown format {self['log-format']!r} "
                f"(choose from {', '.join(LOG_FORMATS)})"
            )
        for name in ("connect-timeout", "timeout", "drain-timeout", "idle-timeout",
                     "pool-idle-timeout", "etcd-timeout", "etcd-backoff",
                     "etcd-backoff-max", "etcd-probe-interval", "ready-grace",
                     "tunnel-idle-timeout"):
            self[name] = _seconds(f"--{name}", self[name])
        never = self["tunnel-drain-timeout"] in ("0", 0, 0.0)  # 0: never
        self["tunnel-drain-timeout"] = (
            0.0 if never else _seconds("--tunnel-drain-timeout", self["tunnel-drain-timeout"])
        )
        self["pool-size"] = _count("--pool-size", self["pool-size"])
        if self["admin"] is not None:
            _checkEndpoint("--admin", self["admin"])
        self["upstream-trust"] = (
            None if self["upstream-ca"] is None else _trustRoot(self["upstream-ca"])
        )
        if self["upstream"] is not None:
            try:
                upstream: Upstream = parseUpstream(self["upstream"])
            except RouteError as e:
                raise usage.UsageError(f"--upstream: {e}")
            if self["routes"] or self["etcd"]:
                raise usage.UsageError(
                    "--upstream sends every request to one server: "
                    "it cannot be combined with --route or --etcd"
                )
            self["routes"] = {"*": (upstream,)}
        self["prefix"] = _option("--prefix", parseKeyPrefix, self["prefix"])
        self["embedded-etcd"] = None
        if self["etcd"] == "embedded":
            self["embedded-etcd"] = _embeddedEtcd(self)
            self["etcd"] = [f"http://127.0.0.1:{self['embedded-etcd'][2]}"]
        elif self["etcd"] is not None:
            self["etcd"] = _option("--etcd", parseEtcdEndpoints, self["etcd"])
        if self["etcd"] is not None:
            if self["routes"]:
                raise usage.UsageError(
                    "--etcd: routes come from etcd; --route cannot be combined with it"
                )
        elif not self["routes"]:
            raise usage.UsageError(
                "no routes: give --route HOST=UPSTREAM, --upstream URL or --etcd URL"
            )
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]


class Listener(Service):
    """
    A listening port that, when it cannot be bound, stops start-up with a
    one-line message and exit status 1 instead of a traceback.

    It binds in C{privilegedStartService} (before twistd drops privileges),
    as C{strports.service} does, and reports a failed bind at once rather
    than logging it after start-up has gone on.
    """

    def __init__(self, description: str, factory: Any, reactor: Any) -> None:
        self.description = description
        self.setName(f"listen {description}")
        self._endpoint = serverFromString(reactor, description)
        self._factory = factory
        self._listening: Deferred[Any] | None = None
        self._port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self._listening is not None:
            return
        failed: list[Failure] = []

        def listening(port: Any) -> Any:
            self._port = port
            return port

        self._listening = self._endpoint.listen(self._factory)
        self._listening.addCallback(listening)
        self._listening.addErrback(lambda f: failed.append(f))
        if failed:
            raise SystemExit(
                f"revproxy: cannot listen on {self.description}: "
                f"{failed[0].getErrorMessage()}"
            )

    def whenListening(self) -> Deferred[Any]:
        """
        A Deferred that fires with the listening port once it is bound.
        """
        d: Deferred[Any] = Deferred()
        if self._port is not None:
            d.callback(self._port)
        elif self._listening is not None:

            def listening(port: Any) -> Any:
                d.callback(port)
                return port

            self._listening.addCallback(listening)
        return d

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self._listening = self._listening, None
        port, self._port = self._port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        if listening is not None:
            listening.cancel()
        return None


def _etcdServices(options: Options | dict[str, Any], resolver: RouteResolver,
                  reactor: Any) -> IService:
    """
    The etcd client and the route sync that feeds C{resolver}.
    """
    from revproxy.etcd.http import etcdRouteService

    return etcdRouteService(
        reactor,
        options["etcd"],
        resolver,
        options["prefix"],
        timeout=options["etcd-timeout"],
        backoffInitial=options["etcd-backoff"],
        backoffMax=options["etcd-backoff-max"],
        probeInterval=options["etcd-probe-interval"],
    )


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> IService:
    """
    Build the proxy's service tree: the route resolver, the upstream pool,
    the drain and one listener per C{--listen}.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    root = MultiService()
    if options.get("log-format") == "json":  # first, so all the tree logs is JSON
        JSONLogging().setServiceParent(root)
    policy = policyNamed(options["balance"])
    if options["etcd"]:
        # No table until etcd answers: every request gets a 503 until then.
        resolver = RouteResolver(None, policy)
    else:
        resolver = RouteResolver(
            RouteTable.fromMapping(options["routes"], policy), policy
        )
    resolver.setServiceParent(root)
    states = UpstreamStates()
    resolver.addObserver(states)
    sync = None
    if options.get("embedded-etcd"):
        from revproxy.etcd.embedded import EmbeddedEtcd

        binary, dataDir, clientPort = options["embedded-etcd"]
        EmbeddedEtcd(reactor, binary, dataDir, clientPort).setServiceParent(root)
    if options["etcd"]:
        etcdServices = _etcdServices(options, resolver, reactor)
        etcdServices.setServiceParent(root)
        sync = etcdServices.getServiceNamed("etcd-sync")  # type: ignore[attr-defined]
    pool = UpstreamPool(
        reactor,
        connectTimeout=options["connect-timeout"],
        maxIdle=options["pool-size"],
        idleTimeout=options["pool-idle-timeout"],
        tlsTrustRoot=options.get("upstream-trust"),
    )
    pool.setServiceParent(root)
    accessLog = None if options["no-access-log"] else AccessLogger(reactor)
    tunnels = TunnelRegistry(
        reactor,
        idleTimeout=options.get("tunnel-idle-timeout", 3600.0),
        drainTimeout=options.get("tunnel-drain-timeout", 0.0),
        log=accessLog.tunnelEnded if accessLog is not None else None,
    )
    resolver.addObserver(tunnels)
    resource = RoutingProxyResource(
        resolver,
        pool,
        reactor,
        responseTimeout=options["timeout"],
        accessLog=accessLog,
        metrics=ProxyMetrics() if options["admin"] else None,
        states=states,
        tunnels=tunnels,
    )
    site = ProxySite(resource, reactor=reactor)
    site.timeOut = options["idle-timeout"]
    DrainService(resource, site, reactor, options["drain-timeout"]).setServiceParent(root)
    for description in options["listen"]:
        Listener(description, site, reactor).setServiceParent(root)
    if options["admin"]:
        _adminListener(options, resource, resolver, pool, sync, reactor).setServiceParent(root)
    return root


def _adminListener(
    options: Options | dict[str, Any],
    resource: RoutingProxyResource,
    resolver: RouteResolver,
    pool: UpstreamPool,
    sync: Any,
    reactor: Any,
) -> IService:
    """
    The admin endpoint's listener.
    """
    from revproxy.ops.admin import AdminResource, ProxyCollector

    assert resource.metrics is not None
    admin = AdminResource(
        resolver,
        ProxyCollector(resource.metrics, resource, pool, sync),
        pool,
        reactor,
        sync,
        graceSeconds=options["ready-grace"],
    )
    site = _AdminSite(admin, reactor=reactor)
    listener = Listener(options["admin"], site, reactor)
    listener.setName(f"admin {options['admin']}")
    return listener


class _AdminSite(Site):
    """
    The admin endpoint's site: quiet, since health checks poll it often.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: object) -> None:
        pass
