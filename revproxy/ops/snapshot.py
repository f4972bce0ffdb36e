# -*- test-case-name: tests.ops.test_snapshot -*-
"""
The last-good snapshot (C{--state-dir DIR}): the route table a node serves
from etcd, with its revision, on disk, so that a node started while etcd is
down serves what it served before rather than nothing.

L{RouteSnapshot} writes C{DIR/routes.snapshot.json} after changes, at most
once per C{writeInterval} (1 s), atomically: a temporary file in the same
directory, C{fsync}, C{rename}, C{fsync} of the directory.  At start, if
etcd has not answered within C{--etcd-timeout}, it loads the snapshot and
serves it, marked stale (L{RouteSnapshot.stale}, which C{/readyz} reports)
until the first successful read of etcd, which replaces it whole.

The file holds the route keys and values as etcd spells them (C{keys}),
parsed at load by the one codec (L{revproxy.routing.codec}), with a
SHA-256 of them.  A file that is not JSON, is of another format or
version, is for another key prefix, fails its checksum or holds a key that
does not parse is ignored with one warning: a snapshot is never partly
trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from revproxy.routing import RouteTable, Upstream
from revproxy.routing.codec import parseStored, routeKey, routeValue
from revproxy.routing.resolver import RouteResolver

__all__ = ["FORMAT", "RouteSnapshot", "readSnapshot", "snapshotDocument"]

log = Logger()

FORMAT = "revproxy-route-snapshot"
VERSION = 1
FILENAME = "routes.snapshot.json"


def _digest(keys: list[list[str]]) -> str:
    return hashlib.sha256(
        json.dumps(keys, separators=(",", ":")).encode("utf-8")
    ).hexdigest()


def snapshotDocument(
    table: RouteTable | Any, revision: int, prefix: str, written: float
) -> dict[str, Any]:
    """
    The snapshot of C{table} at C{revision}, as JSON-ready data.
    """
    keys: list[list[str]] = []
    for host, route in sorted(table.routes.items()):
        for u in route.upstreams:
            keys.append([
                routeKey(prefix, host, u).decode("utf-8"),
                routeValue(u.weight, u.health, u.balance).decode("ascii"),
            ])
    return {
        "format": FORMAT,
        "version": VERSION,
        "prefix": prefix,
        "revision": revision,
        "written": written,
        "keys": keys,
        "sha256": _digest(keys),
    }


def readSnapshot(
    path: Path, prefix: str, balancer: Any
) -> tuple[int, RouteTable] | str | None:
    """
    Load the snapshot at C{path}: its revision and table, L{None} if there
    is no file, or why it is not to be trusted.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    try:
        doc = json.loads(text)
    except ValueError:
        return "is not JSON (corrupt)"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return "is not a revproxy route snapshot"
    if doc.get("version") != VERSION:
        return f"is of snapshot version {doc.get('version')!r}, not {VERSION}"
    if doc.get("prefix") != prefix:
        return f"is of the key prefix {doc.get('prefix')!r}, not {prefix!r}"
    keys = doc.get("keys")
    revision = doc.get("revision")
    if (
        not isinstance(keys, list)
        or not isinstance(revision, int)
        or not all(
            isinstance(k, list) and len(k) == 2 and all(isinstance(x, str) for x in k)
            for k in keys
        )
    ):
        return "is malformed (corrupt)"
    if doc.get("sha256") != _digest(keys):
        return "fails its checksum (corrupt)"
    hosts: dict[str, dict[str, Upstream]] = {}
    for key, value in keys:
        parsed = parseStored(key.encode("utf-8"), value.encode("ascii", "replace"), prefix)
        if isinstance(parsed, str):
            return f"holds a key that does not parse: {parsed}"
        hosts.setdefault(parsed[0], {})[key] = parsed[1]
    changes = {
        host: tuple(upstreams[k] for k in sorted(upstreams))
        for host, upstreams in hosts.items()
    }
    return revision, RouteTable().withChanges(changes, balancer)


class RouteSnapshot(Service):
    """
    Writes the served routes to C{directory} and serves them from there
    when etcd cannot be reached at start (see the module).

    @param sync: the L{revproxy.etcd.sync.EtcdRouteSync}.
    @ivar stale: whether the routes served are the snapshot's, etcd not
        having been read yet.
    @ivar staleRevision: the snapshot's revision while stale.
    @ivar writes: how many snapshots were written.
    """

    name = "route-snapshot"

    def __init__(
        self,
        resolver: RouteResolver,
        sync: Any,
        directory: Path,
        clock: IReactorTime,
        etcdTimeout: float,
        writeInterval: float = 1.0,
    ) -> None:
        self._resolver = resolver
        self._sync = sync
        self.path = directory / FILENAME
        self._clock = clock
        self.etcdTimeout = etcdTimeout
        self.writeInterval = writeInterval
        self.stale = False
        self.staleRevision = 0
        self.writes = 0
        self._fallback: IDelayedCall | None = None
        self._writeCall: IDelayedCall | None = None
        self._lastWrite = -1e9
        self._writeWarned = False
        sync.appliedObservers.append(self._applied)

    def startService(self) -> None:
        super().startService()
        if self._resolver.table is None:
            self._fallback = self._clock.callLater(self.etcdTimeout, self._serveSnapshot)

    def stopService(self) -> None:
        super().stopService()
        if self._fallback is not None and self._fallback.active():
            self._fallback.cancel()
        self._fallback = None
        if self._writeCall is not None and self._writeCall.active():
            self._writeCall.cancel()
            self._write()  # what was pending: the latest routes
        self._writeCall = None

    def describe(self) -> str:
        """
        Why the node is stale, for C{/readyz}.
        """
        return (
            f"stale: serving the last-good snapshot of revision "
            f"{self.staleRevision} from {self.path}; etcd not read yet"
        )

    # -- loading

    def _serveSnapshot(self) -> None:
        self._fallback = None
        if self._resolver.table is not None:
            return
        loaded = readSnapshot(self.path, self._sync.prefix, self._resolver.balancer)
        if loaded is None:
            log.warn("etcd not read within {timeout}s and no snapshot at {path}: "
                     "serving 503 until routes load", timeout=self.etcdTimeout,
                     path=str(self.path))
            return
        if isinstance(loaded, str):
            log.warn("ignoring the route snapshot {path}: it {why}",
                     path=str(self.path), why=loaded)
            return
        revision, table = loaded
        self.stale = True
        self.staleRevision = revision
        self._sync.replaceNext = True
        self._resolver.replace(table)
        log.warn(
            "etcd not read within {timeout}s: serving the last-good snapshot of "
            "revision {revision} ({hosts} hosts) from {path}, stale until etcd answers",
            timeout=self.etcdTimeout, revision=revision, hosts=len(table),
            path=str(self.path),
        )

    # -- writing

    def _applied(self, listed: bool) -> None:
        if listed and self.stale:
            self.stale = False
            log.info("etcd read: the snapshot's routes are replaced by etcd's "
                     "at revision {revision}", revision=self._sync.revision)
        if self.stale or self._resolver.table is None or not self.running:
            return
        if listed and self._fallback is not None and self._fallback.active():
            self._fallback.cancel()
            self._fallback = None
        if self._writeCall is not None and self._writeCall.active():
            return
        delay = max(0.0, self._lastWrite + self.writeInterval - self._clock.seconds())
        self._writeCall = self._clock.callLater(delay, self._write)

    def _write(self) -> None:
        self._writeCall = None
        table = self._resolver.table
        if table is None or self.stale:
            return
        self._lastWrite = self._clock.seconds()
        doc = snapshotDocument(table, self._sync.revision, self._sync.prefix,
                               self._clock.seconds())
        data = json.dumps(doc, indent=1).encode("utf-8") + b"\n"
        tmp = self.path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            if not self._writeWarned:
                self._writeWarned = True
                log.warn("cannot write the route snapshot {path}: {error}",
                         path=str(self.path), error=e.strerror or str(e))
            return
        self._writeWarned = False
        self.writes += 1
