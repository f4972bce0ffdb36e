"""
Figures of upstream health, retries and balancing (issue 11), on loopback:

* rolling restart: three upstreams behind ``twistd -n revproxy`` (a real
  process), 50 clients sending GET and POST (512-byte bodies) back to back
  on keep-alive connections; each upstream in turn is stopped (its
  connections aborted), kept down, and started again on the same port.
* retry window: one upstream behind ``twistd -n revproxy --retry-window 5``,
  20 clients; the upstream is down for a while, then back.
* least-requests: a fast upstream and one that answers after 50 ms, behind
  ``twistd -n revproxy --balance least-requests``, 50 clients.
* weighted: upstreams of weights 1, 2 and 3 (weights need etcd or the
  library: this proxy runs in the script's process, built by
  ``revproxy.tap.makeService``), 50 clients.

Run from a checkout with the test extra installed::

    python bench/health.py [--seconds 2]

It prints one line per scenario.  The load and the upstreams run in this
process on one reactor, so the figures are counts and error rates, not
throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402

from revproxy.routing import Upstream  # noqa: E402
from revproxy.tap import Options, makeService  # noqa: E402
from tests.integration.load import Load  # noqa: E402
from tests.integration.upstreams import ProxyProcess, UpstreamServer, delayed  # noqa: E402

HOST = b"app.example.com"
LISTEN = "tcp:0:interface=127.0.0.1"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def twistd(tmp: Path, *args: str) -> tuple[ProxyProcess, int]:
    out = tmp / f"proxy-{time.monotonic_ns()}"
    out.mkdir()
    proc = ProxyProcess(["--listen", LISTEN, "--no-access-log", *args], out)
    return proc, await proc.listeningPort()


async def rollingRestart(tmp: Path, down: float) -> str:
    ups = [await UpstreamServer().start() for _ in range(3)]
    route = "app.example.com=" + ",".join(u.address for u in ups)
    proc, port = await twistd(tmp, "--route", route, "--eject-time", "1")
    try:
        load = Load(port, HOST, clients=50)
        done = load.start()
        started = time.monotonic()
        await sleep(1)
        for up in ups:
            await up.stop()
            await sleep(down)
            await up.start(up.port)
            await sleep(1.5)
        load.stop()
        await done
        took = time.monotonic() - started
        return (
            f"rolling restart (3 upstreams, each down {down:.1f} s, 50 clients GET+POST): "
            f"{load.requests} requests in {took:.1f} s, {load.failed} errors "
            f"{dict(load.codes)} {dict(load.errors) or ''}; per upstream "
            f"{[len(u.requests) for u in ups]}"
        )
    finally:
        proc.kill()
        for up in ups:
            await up.stop()


async def retryWindow(tmp: Path, down: float) -> str:
    up = await UpstreamServer().start()
    proc, port = await twistd(
        tmp, "--route", f"app.example.com={up.address}", "--retry-window", "5"
    )
    try:
        load = Load(port, HOST, clients=20)
        done = load.start()
        await sleep(1)
        await up.stop()
        await sleep(down)
        await up.start(up.port)
        await sleep(1)
        load.stop()
        await done
        return (
            f"retry window 5 s (one upstream down {down:.1f} s, 20 clients GET+POST): "
            f"{load.requests} requests, {load.failed} errors {dict(load.codes)}"
        )
    finally:
        proc.kill()
        await up.stop()


async def leastRequests(tmp: Path, seconds: float) -> str:
    fast = await UpstreamServer().start()
    slow = await UpstreamServer(delayed(0.05)).start()
    proc, port = await twistd(
        tmp, "--balance", "least-requests",
        "--route", f"app.example.com={fast.address},{slow.address}",
    )
    try:
        load = Load(port, HOST, clients=50, post=False)
        done = load.start()
        await sleep(seconds)
        load.stop()
        await done
        return (
            f"least-requests (fast, 50 ms slow; 50 clients, {seconds:.0f} s): "
            f"fast {len(fast.requests)}, slow {len(slow.requests)}, "
            f"{load.failed} errors"
        )
    finally:
        proc.kill()
        await fast.stop()
        await slow.stop()


async def weighted(seconds: float) -> str:
    ups = [await UpstreamServer().start() for _ in range(3)]
    options = Options()
    options.parseOptions([
        "--listen", LISTEN, "--no-access-log", "--balance", "weighted",
        "--route", "app.example.com=127.0.0.1:1",
    ])
    options["routes"] = {"app.example.com": tuple(
        Upstream("http", "127.0.0.1", u.port, weight=w) for u, w in zip(ups, (1, 2, 3))
    )}
    service = makeService(options, reactor)
    service.startService()
    ports: list = []
    service.getServiceNamed(f"listen {LISTEN}").whenListening().addCallback(ports.append)
    try:
        load = Load(ports[0].getHost().port, HOST, clients=50, post=False)
        done = load.start()
        await sleep(seconds)
        load.stop()
        await done
        counts = [len(u.requests) for u in ups]
        total = sum(counts)
        shares = ", ".join(f"{n / total:.3f}" for n in counts)
        return (
            f"weighted 1:2:3 (50 clients, {seconds:.0f} s): {counts} of {total} "
            f"(shares {shares}; ideal 0.167, 0.333, 0.500), {load.failed} errors"
        )
    finally:
        await service.stopService()
        for up in ups:
            await up.stop()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for step in (
            lambda: rollingRestart(Path(tmp), args.down),
            lambda: retryWindow(Path(tmp), args.down),
            lambda: leastRequests(Path(tmp), args.seconds),
            lambda: weighted(args.seconds),
        ):
            print(await step(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of load for the distributions (default 5)")
    parser.add_argument("--down", type=float, default=1.0,
                        help="seconds each restarted upstream stays down (default 1)")
    react(lambda _r: ensureDeferred(main(parser.parse_args())))
