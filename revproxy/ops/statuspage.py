# -*- test-case-name: tests.ops.test_statuspage -*-
"""
The status page: C{/} of the admin endpoint, plain server-rendered HTML.

It shows the routes and each upstream's health (C{/routes}'s data), the
applied etcd revision and how far it is behind etcd's, the watch state,
the fleet's nodes (read from etcd when the page is rendered) and the
request counters.  A few lines of vanilla JavaScript fetch the page again
every L{REFRESH_SECONDS} and swap in its C{<main>}; no build step, no CDN,
nothing loaded from elsewhere (the icon is an empty data URL, so the
browser asks for no C{/favicon.ico}).
"""

from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from revproxy import __version__

if TYPE_CHECKING:
    from revproxy.ops.admin import AdminResource

__all__ = ["REFRESH_SECONDS", "StatusPage", "renderStatus"]

#: Seconds between two refreshes of the page in the browser.
REFRESH_SECONDS = 1.0

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}
.up{color:#070}.down,.ejected,.stale,.lagging{color:#b00;font-weight:bold}
.probation{color:#a60}#refresh{color:#888;font-size:12px}
"""

_SCRIPT = """
(function () {
  var every = Number(document.body.dataset.refresh) * 1000;
  function refresh() {
    fetch(location.pathname, {cache: "no-store"})
      .then(function (r) { return r.text(); })
      .then(function (text) {
        var page = new DOMParser().parseFromString(text, "text/html");
        document.querySelector("main").replaceWith(page.querySelector("main"));
        document.getElementById("refresh").textContent = "";
      })
      .catch(function () {
        document.getElementById("refresh").textContent = "(refresh failed; retrying)";
      })
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _table(headers: list[str], rows: list[str], empty: str, id: str) -> str:
    if not rows:
        return f'<p id="{id}">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f'<table id="{id}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _routeRows(routes: dict[str, Any]) -> list[str]:
    rows = []
    for host, entries in sorted(routes.get("hosts", {}).items()):
        for entry in entries:
            state = str(entry.get("state", "unknown"))
            rows.append(
                f'<tr data-host="{_e(host)}" data-upstream="{_e(entry["upstream"])}" '
                f'data-state="{_e(state)}"><td>{_e(host)}</td><td>{_e(entry["upstream"])}</td>'
                f'<td>{_e(entry.get("weight", 1))}</td><td class="{_e(state)}">{_e(state)}</td>'
                f'<td>{_e(entry.get("consecutive_failures", 0))}</td>'
                f'<td>{_e(entry.get("inflight", 0))}</td></tr>'
            )
    return rows


def _nodeRows(nodes: list[Any], current: int | None, now: float) -> list[str]:
    rows = []
    for node in sorted(nodes, key=lambda n: n.id):
        lag = "" if current is None else max(0, current - node.revision)
        admin = f'<a href="{_e(node.admin)}/">{_e(node.admin)}</a>' if node.admin else ""
        watch = "live" if node.live else "down"
        rows.append(
            f'<tr data-node="{_e(node.id)}"><td>{_e(node.id)}</td><td>{_e(node.revision)}</td>'
            f'<td>{_e(lag)}</td><td class="{"up" if node.live else "down"}">{watch}</td>'
            f"<td>{_e(node.routes)}</td><td>{_e(_age(now - node.started))}</td>"
            f"<td>{_e(node.version)}</td><td>{admin}</td></tr>"
        )
    return rows


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _counters(metrics: Any) -> list[str]:
    if metrics is None:
        return []
    totals: dict[str, int] = {}
    for (_, code, _), n in metrics.requests.items():
        totals[code] = totals.get(code, 0) + n
    return [f"<tr><td>{_e(code)}</td><td>{n}</td></tr>" for code, n in sorted(totals.items())]


def renderStatus(
    admin: AdminResource,
    nodes: list[Any] | None,
    etcdRevision: int | None,
    fleetError: str | None = None,
    now: float | None = None,
) -> bytes:
    """
    The page, from the admin resource's state and the fleet's nodes.
    """
    now = time.time() if now is None else now
    routes = admin.routes()
    ready, why = admin.ready()
    etcd = routes.get("etcd")
    parts = [
        f'<p>revproxy {_e(__version__)} &middot; <span id="ready" class="{"up" if ready else "down"}">'
        f"{_e(why)}</span></p>"
    ]
    if etcd is not None:
        applied = int(etcd["revision"])
        newest = max((n.revision for n in nodes or []), default=applied)
        lag = (
            "" if etcdRevision is None
            else f" (etcd at {etcdRevision}; {max(0, newest - applied)} behind the fleet's newest)"
        )
        watch = "live" if etcd["live"] else "down"
        parts.append(
            '<table id="etcd"><tbody>'
            f'<tr><th>applied revision</th><td id="applied">{applied}{_e(lag)}</td></tr>'
            f'<tr><th>watch</th><td id="watch" class="{"up" if etcd["live"] else "down"}">{watch}</td></tr>'
            f'<tr><th>endpoint</th><td>{_e(etcd["endpoint"])} {_e(etcd["prefix"])}</td></tr>'
            f'<tr><th>reconnects / resyncs</th><td>{etcd["reconnects"]} / {etcd["resyncs"]}</td></tr>'
            f'<tr><th>skipped keys</th><td>{len(etcd["skipped_keys"])}</td></tr>'
            "</tbody></table>"
        )
    parts.append("<h2>Routes</h2>")
    parts.append(_table(
        ["host", "upstream", "weight", "health", "failures", "in flight"],
        _routeRows(routes), "no routes" if routes["loaded"] else "no route table loaded yet",
        "routes",
    ))
    if etcd is not None:
        parts.append("<h2>Fleet</h2>")
        if fleetError is not None:
            parts.append(f'<p id="nodes" class="down">cannot read the nodes: {_e(fleetError)}</p>')
        else:
            parts.append(_table(
                ["node", "applied", "behind the newest", "watch", "routes", "age", "version", "admin"],
                _nodeRows(nodes or [], max((n.revision for n in nodes or []), default=None), now),
                "no node registered", "nodes",
            ))
    parts.append("<h2>Requests</h2>")
    parts.append(_table(["status", "requests"], _counters(admin.metrics), "none yet", "counters"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<link rel="icon" href="data:,"><title>revproxy status</title>'
        f"<style>{_STYLE}</style></head>"
        f'<body data-refresh="{REFRESH_SECONDS:g}"><h1>revproxy status <span id="refresh"></span></h1>'
        f"<main>{''.join(parts)}</main><script>{_SCRIPT}</script></body></html>\n"
    ).encode("utf-8")


class StatusPage(Resource):
    """
    C{/}: the status page of L{AdminResource} C{admin}.
    """

    isLeaf = True

    def __init__(self, admin: AdminResource) -> None:
        super().__init__()
        self.admin = admin

    def render_GET(self, request: Request) -> Any:
        if request.postpath and any(request.postpath):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        fleet = self.admin.fleet
        if fleet is None:
            return renderStatus(self.admin, None, None)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d: Deferred[Any] = fleet.store.getPrefix(fleet.registration.prefix.encode("utf-8"))
        timer = self.admin.clock.callLater(2.0, d.cancel)

        def show(snapshot: Any) -> None:
            from revproxy.etcd.nodes import parseNodeRecord

            nodes = [r for r in (parseNodeRecord(e.value) for e in snapshot.entries)
                     if not isinstance(r, str)]
            finish(renderStatus(self.admin, nodes, snapshot.revision))

        def failed(reason: Failure) -> None:
            finish(renderStatus(self.admin, None, None, reason.getErrorMessage() or "timed out"))

        def finish(body: bytes) -> None:
            if timer.active():
                timer.cancel()
            if not gone:
                request.write(body)
                request.finish()

        d.addCallbacks(show, failed)
        return NOT_DONE_YET

