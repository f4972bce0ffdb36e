# -*- test-case-name: tests.test_tap -*-
"""
The composition root: command-line options and the service tree that
C{twistd revproxy} runs.

This is the only module that touches the global reactor, and only when
L{makeService} is not given one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher
from twisted.python import usage

from revproxy._compat import directDispatch
from revproxy.config import parseEtcdEndpoints, parseKeyPrefix
from revproxy.options import optionCount, optionSeconds, optionSecondsOrZero, optionValue
from revproxy.forward.options import HEALTH_FLAGS, HEALTH_PARAMETERS, checkHealthOptions
from revproxy.ops import workers
from revproxy.ops.accesslog import accessLoggerFor
from revproxy.ops.memory import tuneMalloc
from revproxy.ops.fleet import FLEET_FLAGS, FLEET_PARAMETERS, checkFleetOptions
from revproxy.ops.logwriter import accessLogDestination
from revproxy.routing.balancing import POLICIES, policyNamed
from revproxy.ops.drain import DrainService
from revproxy.ops.logs import LOG_FORMATS, JSONLogging
from revproxy.ops.metrics import ProxyMetrics
from revproxy.ops.routelog import RouteChangeLog
from revproxy.ops.fatal import exitOnError
from revproxy.ops.listener import Listener
from revproxy.ops.signals import HangupService, Reloader, reopenLogFiles
from revproxy._compat import logFilesOf
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
from revproxy.http.options import SERVER_PARAMETERS, checkServerOptions, serverLimits
from revproxy.http.server import ProxySite
from revproxy.http.trustoptions import (
    TRUST_FLAGS,
    TRUST_PARAMETERS,
    checkTrustOptions,
    forwardingPolicy,
)
from revproxy.upstream.health import HealthChecker, HealthSettings
from revproxy.upstream.pool import UpstreamPool
from revproxy.upstream.state import PassiveHealth, UpstreamStates

__all__ = ["Options", "makeService", "Listener"]

DEFAULT_LISTEN = "tcp:8080"




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


def _routesFile(options: usage.Options) -> dict[str, Any]:
    """
    Check C{--routes-file}: the only source of routes, and a file that
    loads; make its path absolute.
    """
    from revproxy.ops.routesfile import readRoutesFile
    from revproxy.routing.documents import DocumentError

    if options["routes"] or options["etcd"] or options["upstream"]:
        raise usage.UsageError(
            "--routes-file: routes come from the file; it cannot be combined "
            "with --route, --upstream or --etcd"
        )
    path = Path(options["routes-file"]).absolute()
    options["routes-file"] = path
    try:
        return dict(readRoutesFile(path))
    except DocumentError as e:
        raise usage.UsageError(f"--routes-file: {e}") from None


class Options(usage.Options):
    """
    C{twistd revproxy} options.
    """

    synopsis = "[options]"
    longdesc = (
        "A reverse proxy and HTTP load balancer. Routes requests by their Host "
        "header, balancing over the upstreams of each host. Routes come from "
        "one of three sources: --route options (or one --upstream for every "
        "host), a --routes-file (the JSON of revproxyctl export, reloaded when "
        "it changes and on SIGHUP), or etcd (--etcd, followed live). SIGTERM "
        "and SIGINT drain and stop; SIGHUP reloads."
    )

    optFlags = [
        ["no-access-log", None, "Do not log one line per request."],
        *HEALTH_FLAGS,
        *TRUST_FLAGS,
        *FLEET_FLAGS,
    ]

    optParameters = [
        ["balance", None, "round-robin", f"Balancing policy: {', '.join(POLICIES)}."],
        ["upstream", None, None, "Single-host mode: send every request to URL."],
        ["routes-file", None, None, "Routes from FILE, the JSON of revproxyctl export; reloaded when it changes and on SIGHUP."],
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
        ["access-log", None, None, "Access log to FILE (appended to, reopened on SIGHUP) or - (standard output); default: standard output if twistd logs there, else twistd's log."],
        ["log-format", None, "text", "Log format: text (human-readable) or json (one JSON object per line)."],
        ["admin", None, None, "Serve /healthz, /readyz, /routes and /metrics on this strports ENDPOINT, e.g. tcp:9901:interface=127.0.0.1."],
        ["ready-grace", None, "30", "Seconds /readyz stays 200 after the etcd watch is lost."],
        ["workers", None, "1", "Worker processes serving the listeners, or 'auto' for one per CPU; above 1, a parent supervises them."],
        *HEALTH_PARAMETERS,
        *SERVER_PARAMETERS,
        *TRUST_PARAMETERS,
        *FLEET_PARAMETERS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["route"] = []
        self["routes"] = {}

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}.  Under twistd (as its subcommand, with a
        C{parent}), a bad one ends the process with one line on standard
        error and exit status 2 rather than twistd's whole usage (which
        C{--help} prints); used directly, it raises L{usage.UsageError}.
        """
        self["argv"] = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write(
                f"revproxy: {e}; see twistd revproxy --help\n"
            )
            sys.stderr.flush()
            raise SystemExit(2) from None

    def opt_version(self) -> None:
        """
        Print revproxy's version and exit.
        """
        from revproxy import __version__

        sys.stdout.write(f"revproxy {__version__}\n")
        sys.stdout.flush()
        raise SystemExit(0)

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
        A static route HOST=UPSTREAM[,UPSTREAM...]; repeatable; HOST may be *.suffix or * (the default).
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
            self[name] = optionSeconds(f"--{name}", self[name])
        self["tunnel-drain-timeout"] = optionSecondsOrZero(  # 0: never
            "--tunnel-drain-timeout", str(self["tunnel-drain-timeout"])
        )
        self["pool-size"] = optionCount("--pool-size", self["pool-size"])
        checkHealthOptions(self)
        checkServerOptions(self)
        checkTrustOptions(self)
        self["access-log"] = accessLogDestination(self)
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
        if self["routes-file"] is not None:
            self["routes"] = _routesFile(self)
        self["prefix"] = optionValue("--prefix", parseKeyPrefix, self["prefix"])
        self["embedded-etcd"] = None
        if self["etcd"] == "embedded":
            self["embedded-etcd"] = _embeddedEtcd(self)
            self["etcd"] = [f"http://127.0.0.1:{self['embedded-etcd'][2]}"]
        elif self["etcd"] is not None:
            self["etcd"] = optionValue("--etcd", parseEtcdEndpoints, self["etcd"])
        if self["etcd"] is not None:
            if self["routes"]:
                raise usage.UsageError(
                    "--etcd: routes come from etcd; --route cannot be combined with it"
                )
        elif not self["routes"] and self["routes-file"] is None:
            raise usage.UsageError(
                "no routes: give --route HOST=UPSTREAM, --upstream URL, "
                "--routes-file FILE or --etcd URL"
            )
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        checkFleetOptions(self)
        workers.checkWorkerOptions(self)


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
        directDispatch(reactor)
        tuneMalloc()
    worker = workers.workerEnvironment()
    if worker is not None:  # a worker of a parent: its sockets, admin, logs
        options = workers.workerOptions(options, worker)
    elif options.get("workers", 1) > 1:
        return workers.parentService(options, reactor)
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
    resolver.changeLog = RouteChangeLog(reactor)
    resolver.setServiceParent(root)
    rules = PassiveHealth(
        maxFails=options.get("max-fails", 3),
        failWindow=options.get("fail-window", 10.0),
        ejectTime=options.get("eject-time", 10.0),
        maxEjectedPercent=options.get("max-ejected-percent", 50.0),
    )
    states = UpstreamStates(
        rules=rules,
        startDown=bool(options.get("health-path") and options.get("health-start-down")),
    )
    resolver.addObserver(states)
    sync = None
    reloaders: list[Reloader] = []
    if options.get("routes-file"):
        from revproxy.ops.routesfile import RoutesFile

        routesFile = RoutesFile(Path(options["routes-file"]), resolver, reactor)
        routesFile.setServiceParent(root)
        reloaders.append(routesFile.reload)
    embedded = None
    fatal = exitOnError(reactor)  # one for the process: the first error ends it
    if options.get("embedded-etcd"):
        from revproxy.etcd.embedded import EmbeddedEtcd

        binary, dataDir, clientPort = options["embedded-etcd"]
        embedded = EmbeddedEtcd(
            reactor, binary, dataDir, clientPort, fatal=fatal
        )
        embedded.setServiceParent(root)
    if options["etcd"]:
        etcdServices = _etcdServices(options, resolver, reactor)
        if embedded is not None:
            # Routes are loaded only from the etcd we started, once it is up.
            from revproxy.etcd.identity import StartWhenOurs, agentFetch

            StartWhenOurs(
                etcdServices, reactor, agentFetch(reactor), embedded.clientUrl,
                embedded.peerUrl, fatal,
            ).setServiceParent(root)
        else:
            etcdServices.setServiceParent(root)
        sync = etcdServices.getServiceNamed("etcd-sync")  # type: ignore[attr-defined]
        reloaders.append(sync.relist)
    pool = UpstreamPool(
        reactor,
        connectTimeout=options["connect-timeout"],
        maxIdle=options["pool-size"],
        idleTimeout=options["pool-idle-timeout"],
        tlsTrustRoot=options.get("upstream-trust"),
    )
    pool.setServiceParent(root)
    checker = None
    if options.get("health-path") or options["etcd"]:
        # Active checks: for every upstream with --health-path, and with
        # etcd for those whose value names a health path.
        checker = HealthChecker(reactor, pool, states, HealthSettings(
            path=options.get("health-path"),
            interval=options.get("health-interval", 5.0),
            timeout=options.get("health-timeout", 2.0),
            rise=options.get("health-rise", 2),
            fall=options.get("health-fall", 3),
        ))
        resolver.addObserver(checker)
        checker.setServiceParent(root)
    accessLog = accessLoggerFor(options, reactor, root, reloaders)
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
        retries=options.get("retries", 2),
        retryBuffer=options.get("retry-buffer", 64 * 1024),
        retryWindow=options.get("retry-window", 0.0),
        failOn5xx=bool(options.get("fail-on-5xx")),
        hashKey=options.get("hash-key-function"),
        tunnels=tunnels,
        forwarding=forwardingPolicy(options),
    )
    site = resource.site = ProxySite(resource, reactor=reactor, limits=serverLimits(options))
    site.timeOut = options["idle-timeout"]
    DrainService(resource, site, reactor, options["drain-timeout"]).setServiceParent(root)
    reloaders.append(reopenLogFiles(lambda: logFilesOf(globalLogPublisher)))
    HangupService(reactor, reloaders).setServiceParent(root)
    for listener in (
        workers.workerListeners(worker, options, site, reactor) if worker is not None
        else [Listener(d, site, reactor) for d in options["listen"]]
    ):
        listener.setServiceParent(root)
    fleet = None
    if options["etcd"]:
        from revproxy.ops.fleet import fleetServices

        fleet = fleetServices(options, root, resolver, sync, reactor)
    if options["admin"]:
        from revproxy.ops.admin import adminListener

        adminListener(
            options, resource, resolver, pool, sync, reactor, checker, fleet
        ).setServiceParent(root)
    return root
