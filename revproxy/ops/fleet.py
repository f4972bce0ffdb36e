# -*- test-case-name: tests.ops.test_fleet -*-
"""
A node's place in its fleet, wired for C{twistd revproxy --etcd}: the
options (C{--node-id}, C{--node-ttl}, C{--nodes-prefix},
C{--node-report-interval}, C{--state-dir}, C{--ready-requires-etcd}),
their checks, and L{fleetServices}, which adds the node registration
(L{revproxy.etcd.nodes}) and the last-good snapshot
(L{revproxy.ops.snapshot}) to the service tree and returns the L{Fleet}
that the admin endpoint reads (staleness for C{/readyz}, the fleet's nodes
for the status page).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.python import usage

from revproxy.config import parseKeyPrefix, parsePositiveCount
from revproxy.etcd.nodes import (
    DEFAULT_NODES_PREFIX,
    NodeRecord,
    NodeRegistration,
)
from revproxy.options import optionSeconds, optionValue
from revproxy.ops.snapshot import RouteSnapshot
from revproxy.routing.resolver import RouteResolver

__all__ = [
    "FLEET_FLAGS",
    "FLEET_PARAMETERS",
    "Fleet",
    "checkFleetOptions",
    "fleetServices",
    "urlOfListener",
]

FLEET_FLAGS = [
    ["ready-requires-etcd", None, "With --state-dir: /readyz answers 503, not 200, while serving the snapshot before etcd is read."],
]

FLEET_PARAMETERS = [
    ["node-id", None, None, "This node's id in etcd (default: hostname:port:pid)."],
    ["node-ttl", None, "10", "Seconds of the lease of this node's record in etcd: a dead node disappears after it."],
    ["nodes-prefix", None, DEFAULT_NODES_PREFIX, "etcd key prefix of the node records."],
    ["node-report-interval", None, "0.2", "Most frequent rewrite, in seconds, of this node's applied revision in etcd."],
    ["state-dir", None, None, "Keep the last-good route snapshot in DIR; serve it if etcd cannot be reached at start."],
]


def _nodeId(text: str) -> str:
    if not text or "/" in text or any(c.isspace() or not c.isprintable() for c in text):
        raise usage.UsageError(
            f"--node-id: {text!r} must be printable, with no space and no /"
        )
    return text


def checkFleetOptions(options: usage.Options) -> None:
    """
    Check and convert the fleet options (after C{--etcd} is parsed).

    @raise usage.UsageError: naming the option.
    """
    options["node-ttl"] = optionValue("--node-ttl", parsePositiveCount, options["node-ttl"])
    options["node-report-interval"] = optionSeconds(
        "--node-report-interval", options["node-report-interval"]
    )
    options["nodes-prefix"] = optionValue(
        "--nodes-prefix", parseKeyPrefix, options["nodes-prefix"]
    )
    if options["node-id"] is not None:
        options["node-id"] = _nodeId(options["node-id"])
    if options["state-dir"] is not None:
        if not options["etcd"]:
            raise usage.UsageError("--state-dir: the snapshot is of etcd's routes; give --etcd")
        path = Path(options["state-dir"]).absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise usage.UsageError(f"--state-dir: cannot create {str(path)!r}: {e.strerror}")
        if not path.is_dir() or not os.access(path, os.W_OK):
            raise usage.UsageError(f"--state-dir: {str(path)!r} is not a writable directory")
        options["state-dir"] = path
    elif options["ready-requires-etcd"]:
        raise usage.UsageError("--ready-requires-etcd: only with --state-dir")


def urlOfListener(description: str, port: Any) -> str | None:
    """
    The URL of a listening port made from strports C{description}: http
    for tcp, https for ssl; L{None} for other kinds.
    """
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "ssl", "tcp6"):
        return None
    host = port.getHost()
    address = host.host
    if address in ("0.0.0.0", "::", ""):
        address = socket.getfqdn()
    elif ":" in address:
        address = f"[{address}]"
    scheme = "https" if kind == "ssl" else "http"
    return f"{scheme}://{address}:{host.port}"


class Fleet:
    """
    What the admin endpoint needs of the fleet wiring.

    @ivar registration: this node's L{NodeRegistration}.
    @ivar snapshot: the L{RouteSnapshot}, or L{None} without C{--state-dir}.
    @ivar requireEtcd: C{--ready-requires-etcd}.
    """

    def __init__(self, registration: NodeRegistration, snapshot: RouteSnapshot | None,
                 store: Any, requireEtcd: bool) -> None:
        self.registration = registration
        self.snapshot = snapshot
        self.store = store
        self.requireEtcd = requireEtcd

    @property
    def stale(self) -> bool:
        """
        Whether the routes served are the snapshot's, etcd not read yet.
        """
        return self.snapshot is not None and self.snapshot.stale


def fleetServices(
    options: Any, root: MultiService, resolver: RouteResolver, sync: Any, reactor: Any
) -> Fleet:
    """
    Add the node registration (and, with C{--state-dir}, the snapshot) to
    C{root}.  The node registers once etcd has been read; the node id and
    admin URL are known once the first proxy listener and the admin
    listener are bound.
    """
    from revproxy import __version__
    from revproxy.etcd.leases import EtcdLeases

    store = sync.store
    started = time.time()
    names: dict[str, Any] = {"id": options.get("node-id"), "admin": None}

    listed: Deferred[None] = Deferred()

    def firstList(full: bool) -> None:
        if full and not listed.called:
            listed.callback(None)

    sync.appliedObservers.append(firstList)

    def ready() -> Deferred[Any]:
        # Once etcd has been read (so the record's revision means something,
        # and an embedded etcd is up), and on a later turn than start-up:
        # every listener of the tree has started by then.
        return listed.addCallback(lambda _: deferLater(reactor, 0, bound))

    def bound() -> Deferred[Any]:
        listeners = [root.getServiceNamed(f"listen {options['listen'][0]}")]
        if options.get("admin"):
            listeners.append(root.getServiceNamed(f"admin {options['admin']}"))
        ports = gatherResults([s.whenListening() for s in listeners])

        def name(ports: list[Any]) -> None:
            if names["id"] is None:
                port = ports[0].getHost()
                names["id"] = f"{socket.gethostname()}:{getattr(port, 'port', 0)}:{os.getpid()}"
            if options.get("admin"):
                names["admin"] = urlOfListener(options["admin"], ports[1])

        return ports.addCallback(name)

    def describe() -> NodeRecord:
        table = resolver.table
        return NodeRecord(
            id=str(names["id"]),
            version=__version__,
            started=started,
            admin=names["admin"],
            revision=sync.revision,
            live=sync.live,
            routes=0 if table is None else len(table),
        )

    registration = NodeRegistration(
        EtcdLeases(store) if hasattr(store, "call") else store,
        options.get("nodes-prefix", DEFAULT_NODES_PREFIX),
        describe,
        reactor,
        ttl=options.get("node-ttl", 10),
        reportInterval=options.get("node-report-interval", 0.2),
        ready=ready,
        written=sync.ownWrite,
    )
    sync.appliedObservers.append(lambda listed: registration.changed())
    registration.setServiceParent(root)
    snapshot = None
    if options.get("state-dir") is not None:
        snapshot = RouteSnapshot(
            resolver, sync, Path(options["state-dir"]), reactor, options["etcd-timeout"]
        )
        snapshot.setServiceParent(root)
    return Fleet(registration, snapshot, store, bool(options.get("ready-requires-etcd")))
