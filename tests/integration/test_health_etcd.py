"""
Integration tests of health settings in etcd: a real etcd, the proxy
following it, real loopback upstreams, and C{revproxyctl ls --admin}
against the proxy's admin endpoint.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from revproxy.routing import parseUpstream
from revproxy.routing.balancing import leastRequests
from tests.integration import test_proxy
from tests.integration.etcd_fixture import EtcdMember
from tests.integration.test_ctl import ctl, ok
from tests.integration.test_etcd_sync import etcdProxy, key, writer
from tests.integration.test_proxy import client, upstream, wait
from tests.integration.upstreams import UpstreamConnection, UpstreamRequest, echo

cleanup = test_proxy.cleanup

HOST = "app.example.com"


def _adminPort(service: Any, description: str) -> int:
    ports: list[Any] = []
    service.getServiceNamed(f"admin {description}").whenListening().addCallback(
        ports.append
    )
    return int(ports[0].getHost().port)


@pytest_twisted.ensureDeferred
async def test_health_and_balance_from_etcd(etcd: EtcdMember, cleanup: Any) -> None:
    """A host's balance and an upstream's health override come from etcd values; checks start and stop with the keys; revproxyctl ls --admin shows the node's view."""
    ready = {"ok": True}

    def handler(conn: UpstreamConnection, req: UpstreamRequest) -> None:
        if req.target == b"/ready":
            conn.respond(200 if ready["ok"] else 503, b"x")
        else:
            echo(conn, req)

    a = await upstream(cleanup, handler)
    b = await upstream(cleanup)
    w = await writer(cleanup, [etcd.url])
    await w.client.put(key(HOST, a.address),
                       b'{"balance": "least-requests", "health": {"path": "/ready", "interval": 0.2, "fall": 1}}')
    await w.client.put(key(HOST, b.address), b"")
    admin = "tcp:0:interface=127.0.0.1"
    port, service = await etcdProxy(cleanup, [etcd.url], "--admin", admin)
    resolver = service.getServiceNamed("route-resolver")
    await wait(lambda: resolver.table is not None and len(resolver.table) == 1, 10,
               "the routes to load")
    route = resolver.table.routes[HOST]
    assert route.policy is leastRequests
    checker = service.getServiceNamed("health-checks")
    ua, ub = parseUpstream(a.address), parseUpstream(b.address)
    assert checker.check(ua) is not None and checker.check(ub) is None
    state = service.getServiceNamed("drain")._resource.states.get(ua)
    await wait(lambda: state.lastCheck > 0, 3, "a first check")
    ready["ok"] = False
    await wait(lambda: state.down, 3, "the upstream to be marked down")
    c = await client(cleanup, port)
    for _ in range(6):
        assert (await c.get(b"/", HOST.encode())).code == 200
    assert not [r for r in a.requests if r.target != b"/ready"]

    adminPort = _adminPort(service, admin)
    table = ok(await deferToThread(
        ctl, etcd.url, "ls", HOST, "--admin", f"http://127.0.0.1:{adminPort}"
    )).splitlines()
    assert table[0].split() == ["HOST", "UPSTREAM", "WEIGHT", "STATE", "FAILURES",
                                "INFLIGHT", "CHECK"]
    rows = {line.split()[1]: line.split() for line in table[1:]}
    assert rows[a.address][3] == "down" and rows[a.address][6] == "fail"
    assert rows[b.address][3] == "up"

    await w.client.delete(key(HOST, a.address))
    await wait(lambda: checker.check(ua) is None, 3, "the check to stop")
    assert reactor.running
