# -*- test-case-name: tests.ops.test_routesfile -*-
"""
The routes file, C{--routes-file FILE}: routes from a route document on
disk (the JSON of C{revproxyctl export}), a source that needs no etcd.

The file is checked every second and reloaded when it changes (its
modification time, size or inode), and on C{SIGHUP}.  A reload is applied
to the resolver as a per-host diff, so hosts whose upstreams did not change
keep their runtime state.  A file that does not parse (or cannot be read)
keeps the last good table and is logged in one line naming the error and
its line; the same bad file is not reported again until it changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from revproxy.routing import Upstream
from revproxy.routing.documents import DocumentError, Routes, parseRouteDocument
from revproxy.routing.resolver import RouteResolver

__all__ = ["RoutesFile", "readRoutesFile"]

log = Logger()

_Signature = tuple[int, int, int]


def readRoutesFile(path: Path) -> Routes:
    """
    Read and parse the routes file at C{path}.

    @raise DocumentError: if it cannot be read or does not parse; the
        message names the file (and the line, where known).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DocumentError(f"{path}: cannot read: {reason}") from None
    try:
        return parseRouteDocument(text, str(path))
    except DocumentError as e:
        if e.line is not None and "line" not in str(e):
            raise DocumentError(f"{e} (line {e.line})", e.host, e.line) from None
        raise


def _signature(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class RoutesFile(Service):
    """
    Keeps the resolver's table equal to the routes in a file.

    @ivar path: the file.
    @ivar reloads: how many reloads changed the table.
    @ivar error: the last reload's error, or L{None} if it loaded.
    """

    name = "routes-file"

    def __init__(
        self,
        path: Path,
        resolver: RouteResolver,
        clock: IReactorTime,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self._resolver = resolver
        self._clock = clock
        self.interval = interval
        self._signature = _signature(path)
        self._loop: LoopingCall | None = None
        self.reloads = 0
        self.error: str | None = None

    def startService(self) -> None:
        super().startService()
        loop = self._loop = LoopingCall(self._check)
        loop.clock = self._clock
        loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _check(self) -> None:
        try:
            signature = _signature(self.path)
            if signature != self._signature:
                self._signature = signature
                self.reload()
        except Exception:
            log.failure("routes file {path}: checking for changes failed", path=str(self.path))

    def reload(self) -> str:
        """
        Read the file again and apply what changed; return what was done,
        in words, for the C{SIGHUP} line.
        """
        self._signature = _signature(self.path)
        try:
            routes = readRoutesFile(self.path)
        except DocumentError as e:
            if str(e) != self.error:
                log.warn(
                    "routes file: {error}; keeping the last good routes",
                    error=str(e),
                    path=str(self.path),
                )
            self.error = str(e)
            return f"routes file {self.path} not reloaded ({e})"
        if self.error is not None:
            log.info("routes file {path}: loads again", path=str(self.path))
        self.error = None
        changes = self._changes(routes)
        if changes:
            self.reloads += 1
            self._resolver.apply(changes, cause=f"routes file {self.path}")
        return f"routes file {self.path} reloaded: {len(changes)} hosts changed"

    def _changes(self, routes: Routes) -> dict[str, tuple[Upstream, ...] | None]:
        """
        The per-host diff from the resolver's table to C{routes}.
        """
        table = self._resolver.table
        current = table.routes if table is not None else {}
        changes: dict[str, tuple[Upstream, ...] | None] = {
            host: None for host in current if host not in routes
        }
        for host, upstreams in routes.items():
            route = current.get(host)
            if route is None or not route.sameUpstreams(upstreams):
                changes[host] = upstreams
        return changes
