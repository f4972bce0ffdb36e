"""
Integration tests of upstream health, retries and balancing: the proxy of
L{revproxy.tap.makeService} on loopback in front of real test upstreams
that are killed and restarted, under real client load.
"""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from revproxy.routing import Upstream, parseUpstream
from revproxy.tap import Options, makeService
from revproxy.upstream.state import UpstreamState
from tests.integration.load import Load
from tests.integration import test_proxy
from tests.integration.test_proxy import (
    LISTEN,
    client,
    get,
    proxy,
    upstream,
    wait,
)
from tests.integration.upstreams import UpstreamConnection, UpstreamRequest, delayed, echo

HOST = b"app.example.com"

cleanup = test_proxy.cleanup


def states(service) -> object:
    return service.getServiceNamed("drain")._resource.states


def stateOf(service, up) -> UpstreamState:
    state = states(service).get(parseUpstream(up.address))
    assert state is not None
    return state


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_killed_upstream_ejected_then_back(cleanup):
    """A killed upstream stops getting requests after --max-fails failures, no client sees an error, and it gets traffic again after its restart."""
    ups = [await upstream(cleanup) for _ in range(3)]
    route = f"app.example.com={','.join(u.address for u in ups)}"
    port, service = await proxy(cleanup, "--route", route, "--eject-time", "1")
    c = await client(cleanup, port)
    dead = ups[1]
    await dead.stop()
    for _ in range(30):
        r = await c.get(b"/", HOST)
        assert r.code == 200, r
    state = stateOf(service, dead)
    retries = service.getServiceNamed("drain")._resource.retryCounts
    # The dead upstream was tried only max-fails times, then ejected.
    assert retries.get("connect") == 3, retries
    assert state.ejections == 1 and state.ejectedUntil > reactor.seconds()
    await dead.start(dead.port)
    before = len(dead.requests)
    await sleep(1.1)
    for _ in range(12):
        r = await c.get(b"/", HOST)
        assert r.code == 200, r
    assert len(dead.requests) - before >= 3
    assert state.ejectedUntil == 0.0


@pytest_twisted.ensureDeferred
async def test_active_check_takes_upstream_out(cleanup):
    """An upstream whose health path fails is taken out within fall x interval, gets no requests, and comes back when it passes."""
    failing = {"on": False}

    def handler(conn: UpstreamConnection, req: UpstreamRequest) -> None:
        if req.target == b"/healthz":
            conn.respond(503 if failing["on"] else 200, b"x")
        else:
            echo(conn, req)

    a = await upstream(cleanup, handler)
    b = await upstream(cleanup)
    port, service = await proxy(
        cleanup,
        "--route", f"app.example.com={a.address},{b.address}",
        "--health-path", "/healthz", "--health-interval", "0.2",
        "--health-fall", "2", "--health-rise", "2",
    )
    state = stateOf(service, a)
    await wait(lambda: state.lastCheck > 0, 2, "a first check")
    failing["on"] = True
    started = time.monotonic()
    await wait(lambda: state.down, 3, "the upstream to be marked down")
    took = time.monotonic() - started
    # fall x interval, with the interval's 10% jitter and one check in flight.
    assert took <= 2 * 0.2 * 1.1 + 0.2 + 0.15, took
    before = len([r for r in a.requests if r.target != b"/healthz"])
    c = await client(cleanup, port)
    for _ in range(10):
        assert (await c.get(b"/", HOST)).code == 200
    assert len([r for r in a.requests if r.target != b"/healthz"]) == before
    failing["on"] = False
    await wait(lambda: not state.down, 3, "the upstream to be up again")


@pytest_twisted.ensureDeferred
async def test_rolling_restart_under_load_has_no_errors(cleanup):
    """A rolling restart of three upstreams under 50 clients (GET and POST) costs no client-visible error."""
    ups = [await upstream(cleanup) for _ in range(3)]
    route = f"app.example.com={','.join(u.address for u in ups)}"
    port, service = await proxy(cleanup, "--route", route, "--eject-time", "1")
    load = Load(port, HOST, clients=50)
    done = load.start()
    cleanup.add(load.stop)
    await sleep(0.5)
    for up in ups:
        await up.stop()
        await sleep(0.5)
        await up.start(up.port)
        await sleep(1.5)
    load.stop()
    await done
    print(f"rolling restart: {load.requests} requests, {load.failed} errors, "
          f"codes {dict(load.codes)}, errors {dict(load.errors)}")
    assert load.requests > 500
    assert load.failed == 0, (load.codes, load.errors)
    for up in ups:
        assert len(up.requests) > 0


@pytest_twisted.ensureDeferred
async def test_single_upstream_restart_with_retry_window(cleanup):
    """With --retry-window 5, restarting a host's only upstream costs latency, not errors."""
    up = await upstream(cleanup)
    port, service = await proxy(
        cleanup, "--route", f"app.example.com={up.address}", "--retry-window", "5"
    )
    load = Load(port, HOST, clients=20)
    done = load.start()
    cleanup.add(load.stop)
    await sleep(0.3)
    await up.stop()
    await sleep(1.0)
    await up.start(up.port)
    await sleep(0.5)
    load.stop()
    await done
    print(f"retry window: {load.requests} requests, {load.failed} errors")
    assert load.failed == 0, (load.codes, load.errors)
    retries = service.getServiceNamed("drain")._resource.retryCounts
    assert retries.get("window", 0) > 0


@pytest_twisted.ensureDeferred
async def test_all_down_is_503_unknown_is_404(cleanup):
    """When every upstream of a known host is down the answer is 503 with Retry-After (not 502); an unknown host stays 404."""
    ups = [await upstream(cleanup) for _ in range(2)]
    port, service = await proxy(
        cleanup, "--route", f"app.example.com={ups[0].address},{ups[1].address}",
        "--health-path", "/", "--health-interval", "0.1", "--health-fall", "1",
    )
    for up in ups:
        await up.stop()
    await wait(lambda: all(stateOf(service, u).down for u in ups), 3, "both down")
    r = await get(cleanup, port, b"/", HOST)
    assert r.code == 503, r
    assert r.header(b"retry-after") == [b"1"]
    assert r.body == b"no usable upstream for this host\n"
    assert (await get(cleanup, port, b"/", b"other.example.com")).code == 404


@pytest_twisted.ensureDeferred
async def test_all_failing_passively_becomes_503(cleanup):
    """Without active checks, once every upstream has failed --max-fails times in a row the answer is 503, not 502."""
    ups = [await upstream(cleanup) for _ in range(2)]
    port, _ = await proxy(
        cleanup, "--route", f"app.example.com={ups[0].address},{ups[1].address}"
    )
    for up in ups:
        await up.stop()
    codes = [(await get(cleanup, port, b"/", HOST)).code for _ in range(4)]
    assert codes[-1] == 503, codes
    assert set(codes) <= {502, 503}


async def _weightedProxy(cleanup, policy: str, upstreams: list[Upstream]):
    options = Options()
    options.parseOptions([
        "--listen", LISTEN, "--no-access-log", "--balance", policy,
        "--route", "app.example.com=127.0.0.1:1",
    ])
    options["routes"] = {"app.example.com": tuple(upstreams)}
    service = makeService(options, reactor)
    service.startService()
    cleanup.add(service.stopService)
    ports = []
    service.getServiceNamed(f"listen {LISTEN}").whenListening().addCallback(ports.append)
    return ports[0].getHost().port


@pytest_twisted.ensureDeferred
async def test_weighted_distribution(cleanup):
    """Under load, weighted balancing gives upstreams weighted 1, 2 and 3 their shares of the requests."""
    ups = [await upstream(cleanup) for _ in range(3)]
    port = await _weightedProxy(cleanup, "weighted", [
        Upstream("http", "127.0.0.1", u.port, weight=w) for u, w in zip(ups, (1, 2, 3))
    ])
    load = Load(port, HOST, clients=50, post=False)
    done = load.start()
    cleanup.add(load.stop)
    await sleep(2)
    load.stop()
    await done
    counts = [len(u.requests) for u in ups]
    total = sum(counts)
    print(f"weighted 1:2:3: {counts} of {total}")
    assert load.failed == 0
    for n, w in zip(counts, (1, 2, 3)):
        assert abs(n / total - w / 6) < 0.02, counts


@pytest_twisted.ensureDeferred
async def test_least_requests_distribution(cleanup):
    """Under load, least-requests sends most requests to the fast upstream and fewest to the slow one."""
    fast = await upstream(cleanup)
    slow = await upstream(cleanup, delayed(0.05))
    port = await _weightedProxy(cleanup, "least-requests", [
        parseUpstream(fast.address), parseUpstream(slow.address),
    ])
    load = Load(port, HOST, clients=50, post=False)
    done = load.start()
    cleanup.add(load.stop)
    await sleep(2)
    load.stop()
    await done
    counts = [len(fast.requests), len(slow.requests)]
    print(f"least-requests fast/slow (50 ms): {counts}")
    assert load.failed == 0
    assert counts[0] > 3 * counts[1], counts


@pytest_twisted.ensureDeferred
async def test_health_checks_verify_tls_like_traffic(cleanup, tmp_path):
    """Active checks of an https upstream verify its certificate as traffic does: they pass with --upstream-ca, and fail (marking it down) without."""
    from tests.integration.test_tls import selfSigned, tlsUpstream

    ca, pem = selfSigned(tmp_path)
    upPort = await tlsUpstream(cleanup, pem)
    route = f"a.test=https://localhost:{upPort}"
    args = ["--route", route, "--health-path", "/", "--health-interval", "0.1",
            "--health-fall", "1"]
    _, trusted = await proxy(cleanup, *args, "--upstream-ca", str(ca))
    _, untrusted = await proxy(cleanup, *args)
    upstreamName = f"https://localhost:{upPort}"
    good = states(trusted).get(parseUpstream(upstreamName))
    bad = states(untrusted).get(parseUpstream(upstreamName))
    await wait(lambda: good.lastCheck > 0 and bad.lastCheck > 0, 5, "checks")
    assert good.lastCheckPassed and not good.down
    assert not bad.lastCheckPassed and bad.down
