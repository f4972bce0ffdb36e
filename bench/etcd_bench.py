"""
The benchmark's etcd scenario: routes that live in a real etcd on loopback.

It measures the three targets of the etcd issue:

* initial load: N hosts x 3 upstreams put into a fresh etcd, then
  ``twistd -n revproxy --etcd URL`` started; the time from process start to
  its log line "etcd: loaded N hosts", against the same for an empty prefix;
  the proxy's RSS with the table and without it, per host; and the sync's
  own read and build times, timed in a process of our own
  (``EtcdClient`` + ``EtcdRouteSync`` + ``RouteResolver``);
* change-to-effect latency: from the acknowledgement of an etcd put (or
  delete) to the first 200 (or 404) the running proxy answers for that host,
  polled in a tight loop on a keep-alive connection; with the proxy holding
  the N-host table and an empty one;
* the cost of applying one event, in process, without etcd: direct calls of
  ``EtcdRouteSync.events`` (and ``RouteResolver.apply``) on tables of
  100 to 100,000 hosts, to show that it does not grow with the table.

``bench/run.py`` drives it (scenario ``etcd``); the in-process parts run in
child processes of this file::

    python bench/etcd_bench.py micro --sizes 100,1000 --events 500 --repeats 3
    python bench/etcd_bench.py load --etcd http://127.0.0.1:2379 --prefix /hosts/

This module imports only the standard library at the top: revproxy and
Twisted are imported by those subcommands alone.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
PREFIX = "/hosts/"
EMPTY_PREFIX = "/bench-empty/"
#: etcd's default --max-txn-ops.
TXN_OPS = 128
LOADED = re.compile(r"etcd: loaded (\d+) hosts")
#: Longest wait for one change to take effect before the sample is a timeout.
CHANGE_TIMEOUT = 5.0
#: Changes made, and not counted, before each latency measurement.
WARMUP_CHANGES = 5


@dataclass(frozen=True)
class EtcdSettings:
    """
    How big and how long the etcd scenario is.
    """

    hosts: int
    upstreamsPerHost: int
    changes: int
    startRepeats: int
    microSizes: tuple[int, ...]
    microEvents: int
    microRepeats: int

    @classmethod
    def full(cls) -> EtcdSettings:
        return cls(10_000, 3, 1_000, 3, (100, 1_000, 10_000, 100_000), 2_000, 5)

    @classmethod
    def smoke(cls) -> EtcdSettings:
        return cls(200, 3, 20, 1, (100, 1_000), 200, 2)


# -- etcd over its gRPC-JSON gateway, with the standard library -------------


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def _rangeEnd(prefix: str) -> str:
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


class EtcdGateway:
    """
    One keep-alive connection to etcd's gateway (``/v3/``): puts, deletes and
    transactions, each returning when etcd has acknowledged it.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        self._connection.request(
            "POST",
            f"/v3/{method}",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        response = self._connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd {method}: {response.status} {data[:200]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer

    def put(self, key: str, value: str = "") -> None:
        self.call("kv/put", {"key": _b64(key), "value": _b64(value)})

    def delete(self, key: str) -> None:
        self.call("kv/deleterange", {"key": _b64(key)})

    def putMany(self, keys: list[str]) -> None:
        """
        Put every key, with an empty value, in transactions of C{TXN_OPS}.
        """
        for start in range(0, len(keys), TXN_OPS):
            ops = [
                {"request_put": {"key": _b64(k), "value": ""}}
                for k in keys[start : start + TXN_OPS]
            ]
            self.call("kv/txn", {"success": ops})

    def version(self) -> str:
        self._connection.request("GET", "/version")
        response = self._connection.getresponse()
        data = response.read()
        try:
            return f"etcd {json.loads(data)['etcdserver']}"
        except (ValueError, KeyError):
            return "etcd ?"

    def count(self, prefix: str) -> int:
        answer = self.call(
            "kv/range",
            {"key": _b64(prefix), "range_end": _rangeEnd(prefix), "count_only": True},
        )
        return int(answer.get("count", 0))

    def close(self) -> None:
        self._connection.close()


def routeKeys(prefix: str, hosts: int, perHost: int) -> list[str]:
    """
    C{hosts} hosts C{h<i>.bench.example} with C{perHost} distinct upstreams
    each, as route keys; the upstreams need not exist (none is asked).
    """
    keys = []
    for i in range(hosts):
        a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
        for j in range(perHost):
            keys.append(f"{prefix}h{i}.bench.example/10.{a}.{b}.{c}:{8080 + j}")
    return keys


# -- the proxy under test -----------------------------------------------------


def proxyArgv(port: int, etcdUrl: str, prefix: str) -> list[str]:
    return [
        *TWISTD,
        "-n",
        "--pidfile=",
        "revproxy",
        "--port",
        str(port),
        "--etcd",
        etcdUrl,
        "--prefix",
        prefix,
        "--no-access-log",
    ]


def waitLoaded(child: Any, timeout: float = 60.0) -> tuple[float, int]:
    """
    Poll the child's log every millisecond until it says it loaded its
    routes; return (monotonic time seen, hosts).
    """
    deadline = time.monotonic() + timeout
    with open(child.log, "rb") as log:
        seen = b""
        while time.monotonic() < deadline:
            chunk = log.read()
            if chunk:
                seen += chunk
                match = LOADED.search(seen.decode(errors="replace"))
                if match:
                    return time.monotonic(), int(match.group(1))
            elif child.popen.poll() is not None:
                raise RuntimeError(f"{child.name} exited:\n{child.logTail()}")
            else:
                time.sleep(0.001)
    raise RuntimeError(f"{child.name} did not load its routes in {timeout}s:\n{child.logTail()}")


class HostPoller:
    """
    A keep-alive client of the proxy that asks for C{/1k} with a given Host.
    """

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, host: str) -> int:
        try:
            self._connection.request("GET", "/1k", headers={"Host": host})
            response = self._connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self._connection.close()
            return 0

    def until(self, host: str, wanted: int, since: float) -> tuple[float | None, int]:
        """
        Ask until the answer is C{wanted}; return (seconds from C{since},
        requests made), the seconds L{None} after L{CHANGE_TIMEOUT}.
        """
        polls = 0
        deadline = since + CHANGE_TIMEOUT
        while True:
            polls += 1
            got = self.status(host)
            now = time.perf_counter()
            if got == wanted:
                return now - since, polls
            if now > deadline:
                return None, polls

    def close(self) -> None:
        self._connection.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencyFigures(samples: list[float | None], polls: list[int]) -> dict[str, Any]:
    done = [s * 1000 for s in samples if s is not None]
    return {
        "samples": len(done),
        "timeouts": len(samples) - len(done),
        "p50_ms": statistics.median(done) if done else None,
        "p99_ms": _percentile(done, 0.99) if done else None,
        "max_ms": max(done) if done else None,
        "mean_polls": statistics.mean(polls) if polls else None,
    }


def changeLatency(
    gateway: EtcdGateway, port: int, prefix: str, upstream: str, count: int, tag: str
) -> dict[str, Any]:
    """
    For each of C{count} fresh hosts: put its route, poll until the proxy
    answers 200; delete it, poll until 404. Each sample starts when etcd
    has acknowledged the write.
    """
    poller = HostPoller(port)
    added: list[float | None] = []
    deleted: list[float | None] = []
    addPolls: list[int] = []
    deletePolls: list[int] = []
    try:
        for i in range(-WARMUP_CHANGES, count):
            host = f"chg-{tag}-{i + WARMUP_CHANGES}.bench.example"
            key = f"{prefix}{host}/{upstream}"
            gateway.put(key)
            seconds, polls = poller.until(host, 200, time.perf_counter())
            if i >= 0:
                added.append(seconds)
                addPolls.append(polls)
            gateway.delete(key)
            seconds, polls = poller.until(host, 404, time.perf_counter())
            if i >= 0:
                deleted.append(seconds)
                deletePolls.append(polls)
    finally:
        poller.close()
    return {"add": latencyFigures(added, addPolls), "delete": latencyFigures(deleted, deletePolls)}


# -- the scenario -------------------------------------------------------------


def findEtcd() -> str:
    """
    The etcd binary the integration tests use (see
    tests/integration/etcd_fixture.py).
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.integration.etcd_fixture import find_etcd

    return find_etcd()


@dataclass
class EtcdProcess:
    """
    The etcd member the scenario runs, and its temporary directory.
    """

    url: str
    child: Any
    directory: Path


def startEtcd(bench: Any, binary: str) -> EtcdProcess:
    from tests.integration.etcd_fixture import EtcdMember

    directory = Path(tempfile.mkdtemp(prefix="revproxy-bench-etcd-"))
    try:
        member = EtcdMember(binary, directory, name="bench")
        argv = bench.cpus.prefix(bench.cpus.load) + member.command()
        child = bench.supervisor.start("etcd", argv)
        deadline = time.monotonic() + 20
        while not member.health():
            if child.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy:\n{member.log_tail()}")
            time.sleep(0.05)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return EtcdProcess(member.url, child, directory)


class EtcdScenario:
    """
    One run of the etcd scenario inside a L{run.Bench} session (its
    supervisor, CPU plan, upstream and work directory).
    """

    def __init__(self, bench: Any, settings: EtcdSettings, say: Callable[[str], None]) -> None:
        self.bench = bench
        self.settings = settings
        self.say = say
        self._started = 0

    def _inProcess(self, *arguments: str) -> dict[str, Any]:
        """
        Run a subcommand of this file pinned where the proxy runs; return its
        JSON answer.
        """
        argv = self.bench.cpus.prefix(self.bench.cpus.proxy) + [
            sys.executable,
            str(Path(__file__).resolve()),
            *arguments,
        ]
        self._started += 1
        child = self.bench.supervisor.start(f"etcd-inprocess-{self._started}", argv, cwd=REPO)
        try:
            child.popen.wait(timeout=600)
        finally:
            self.bench.supervisor.stop(child)
        if child.popen.returncode != 0:
            raise RuntimeError(f"{' '.join(arguments[:1])} failed:\n{child.logTail()}")
        answer: dict[str, Any] = json.loads(child.log.read_text().splitlines()[-1])
        return answer

    @contextmanager
    def proxy(self, etcdUrl: str, prefix: str, hosts: int) -> Iterator[dict[str, Any]]:
        """
        Start a revproxy on C{prefix}; yield its start figures (and port and
        child) once it has loaded C{hosts} hosts and listens.
        """
        from processes import freePort, memoryKiB, waitListening

        port = freePort()
        self._started += 1
        argv = self.bench.cpus.prefix(self.bench.cpus.proxy) + proxyArgv(port, etcdUrl, prefix)
        began = time.monotonic()
        child = self.bench.supervisor.start(f"etcd-proxy-{self._started}", argv, cwd=REPO)
        try:
            seen, loaded = waitLoaded(child)
            if loaded != hosts:
                raise RuntimeError(f"proxy loaded {loaded} hosts, {hosts} expected")
            waitListening(child, port)
            peak, rss = memoryKiB(child.pid)
            yield {
                "start_to_loaded_s": seen - began,
                "rss_kib": rss,
                "peak_kib": peak,
                "port": port,
                "child": child,
            }
        finally:
            self.bench.supervisor.stop(child)

    def run(self) -> dict[str, Any]:
        binary = findEtcd()
        etcd = startEtcd(self.bench, binary)
        try:
            return self._measure(etcd, binary)
        finally:
            self.bench.supervisor.stop(etcd.child)
            shutil.rmtree(etcd.directory, ignore_errors=True)
            self.say(f"etcd: stopped, data directory {etcd.directory} removed")

    def _measure(self, etcd: EtcdProcess, binary: str) -> dict[str, Any]:
        s = self.settings
        result: dict[str, Any] = {"settings": asdict(s), "etcd_binary": binary}
        gateway = EtcdGateway(etcd.url)
        try:
            result["etcd_version"] = gateway.version()
            keys = routeKeys(PREFIX, s.hosts, s.upstreamsPerHost)
            began = time.monotonic()
            gateway.putMany(keys)
            if gateway.count(PREFIX) != len(keys):
                raise RuntimeError("etcd does not hold every key put")
            result["put_keys"] = len(keys)
            result["put_seconds"] = time.monotonic() - began
            self.say(f"etcd: put {len(keys)} keys in {result['put_seconds']:.2f} s (not measured)")

            starts: dict[str, list[dict[str, Any]]] = {"empty": [], "table": []}
            for repeat in range(s.startRepeats):
                for name, prefix, hosts in (("empty", EMPTY_PREFIX, 0), ("table", PREFIX, s.hosts)):
                    with self.proxy(etcd.url, prefix, hosts) as started:
                        starts[name].append(
                            {k: started[k] for k in ("start_to_loaded_s", "rss_kib", "peak_kib")}
                        )
                    self.say(f"etcd: start {repeat + 1} {name}: {starts[name][-1]}")
            result["start"] = {name: _medians(runs) for name, runs in starts.items()}
            table, empty = result["start"]["table"], result["start"]["empty"]
            result["start"]["kib_per_host"] = (table["rss_kib"] - empty["rss_kib"]) / s.hosts
            result["start"]["peak_kib_per_host"] = (table["peak_kib"] - empty["peak_kib"]) / s.hosts

            reads = [
                self._inProcess(
                    "load", "--etcd", etcd.url, "--prefix", PREFIX, "--expect", str(s.hosts)
                )
                for _ in range(s.startRepeats)
            ]
            result["sync_load"] = _medians(reads)
            self.say(f"etcd: in-process load: {result['sync_load']}")

            upstream = f"127.0.0.1:{self.bench.upstream.ports[0]}"
            result["changes"] = {}
            for name, prefix, hosts in (("empty", EMPTY_PREFIX, 0), ("table", PREFIX, s.hosts)):
                with self.proxy(etcd.url, prefix, hosts) as started:
                    figures = changeLatency(
                        gateway, started["port"], prefix, upstream, s.changes, name
                    )
                result["changes"][name] = figures
                self.say(f"etcd: changes with {hosts} hosts: {figures}")
        finally:
            gateway.close()
        result["micro"] = self._inProcess(
            "micro",
            "--sizes",
            ",".join(map(str, s.microSizes)),
            "--events",
            str(s.microEvents),
            "--repeats",
            str(s.microRepeats),
        )["sizes"]
        self.say(f"etcd: micro: {result['micro']}")
        return result


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    """
    The issue's targets, judged only at full size (10,000 hosts x 3, 1,000
    changes): load under 2 s, change-to-effect p99 under 100 ms.
    """
    s = result["settings"]
    if s["hosts"] < 10_000 or s["changes"] < 1_000:
        return {}
    judged = {"load_under_2s": result["start"]["table"]["start_to_loaded_s"] < 2.0}
    for table, kinds in result["changes"].items():
        for kind, figures in kinds.items():
            p99 = figures["p99_ms"]
            judged[f"{kind}_{table}_p99_under_100ms"] = (
                p99 is not None and p99 < 100 and figures["timeouts"] == 0
            )
    return judged


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "" if value is None else fmt.format(value)


def table(result: dict[str, Any]) -> str:
    """
    The etcd figures as text, for the harness's report.
    """
    s = result["settings"]
    start, sync = result["start"], result["sync_load"]
    out = [
        (
            f"etcd scenario: {s['hosts']} hosts x {s['upstreamsPerHost']} upstreams, "
            f"{s['changes']} changes; {result['etcd_version']}; medians of "
            f"{s['startRepeats']} starts"
        ),
        (
            f"  load: process start -> 'etcd: loaded' {start['table']['start_to_loaded_s']:.2f} s "
            f"({start['empty']['start_to_loaded_s']:.2f} s with no hosts); in process: "
            f"read {sync['read_s'] * 1000:.0f} ms + build {sync['build_s'] * 1000:.0f} ms "
            f"= {sync['total_s'] * 1000:.0f} ms"
        ),
        (
            f"  memory: RSS {start['table']['rss_kib'] / 1024:.1f} MiB with the table, "
            f"{start['empty']['rss_kib'] / 1024:.1f} MiB without: "
            f"{start['kib_per_host']:.2f} KiB/host (peak {start['peak_kib_per_host']:.2f}); "
            f"in process {sync['kib_per_host']:.2f} KiB/host"
        ),
    ]
    rows = [["change -> effect", "table", "p50 ms", "p99 ms", "max ms", "timeouts", "polls"]]
    for kind in ("add", "delete"):
        for name, hosts in (("empty", 0), ("table", s["hosts"])):
            f = result["changes"][name][kind]
            rows.append(
                [
                    f"  {kind}",
                    f"{hosts} hosts",
                    _f(f["p50_ms"], "{:.2f}"),
                    _f(f["p99_ms"], "{:.2f}"),
                    _f(f["max_ms"], "{:.2f}"),
                    str(f["timeouts"]),
                    _f(f["mean_polls"]),
                ]
            )
    rows.append(["one event, us", "hosts", "add", "delete", "update", "apply", "add p99"])
    for size in result["micro"]:
        rows.append(
            [
                "  in process",
                str(size["hosts"]),
                _f(size["add_us"]),
                _f(size["delete_us"]),
                _f(size["update_us"]),
                _f(size["apply_us"]),
                _f(size["add_p99_us"]),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.append(
            "  ".join(
                c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    judged = result.get("verdicts")
    if judged:
        out.append(
            "  targets: "
            + ", ".join(f"{name} {'met' if ok else 'NOT MET'}" for name, ok in judged.items())
        )
    else:
        out.append("  targets: not judged at this size")
    return "\n".join(out)


# -- in-process measurements (child processes of the harness) ----------------


def _rssKiB() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def inProcessLoad(etcdUrl: str, prefix: str, expect: int) -> dict[str, Any]:
    """
    Load the routes under C{prefix} as the proxy does, with C{EtcdClient},
    C{EtcdRouteSync} and C{RouteResolver} on the global reactor; time the
    read (request, JSON and entries) and the build (mirror and table).
    """
    from treq.client import HTTPClient
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool

    from revproxy.etcd.client import EtcdClient
    from revproxy.routing.resolver import RouteResolver
    from revproxy.routing import RouteTable
    from revproxy.etcd.sync import EtcdRouteSync

    marks: dict[str, float] = {}

    class TimedStore:
        def __init__(self, store: Any) -> None:
            self._store = store

        def getPrefix(self, prefix: bytes) -> Any:
            marks["asked"] = time.perf_counter()
            d = self._store.getPrefix(prefix)

            def read(snapshot: Any) -> Any:
                marks["read"] = time.perf_counter()
                return snapshot

            return d.addCallback(read)

    class TimedResolver(RouteResolver):
        def replace(self, table: RouteTable) -> None:
            super().replace(table)
            marks["built"] = time.perf_counter()

    before = _rssKiB()
    pool = HTTPConnectionPool(reactor, persistent=True)
    client = EtcdClient(reactor, [etcdUrl], HTTPClient(Agent(reactor, pool=pool)), timeout=60)
    resolver = TimedResolver(None)
    store = TimedStore(client)
    sync = EtcdRouteSync(store, resolver, prefix, reactor)

    def go() -> None:
        # Not started as a service: one read handed to the sync, no watch.
        store.getPrefix(prefix.encode("utf-8")).addCallback(sync.snapshot, True)
        wait()

    def wait() -> None:
        if "built" in marks or time.perf_counter() - marks["asked"] > 60:
            pool.closeCachedConnections().addBoth(lambda _: reactor.stop())
        else:
            reactor.callLater(0.005, wait)

    reactor.callWhenRunning(go)
    reactor.run()
    if "built" not in marks:
        raise SystemExit("the routes did not load")
    hosts = len(resolver.table) if resolver.table is not None else 0
    if hosts != expect:
        raise SystemExit(f"loaded {hosts} hosts, {expect} expected")
    after = _rssKiB()
    return {
        "read_s": marks["read"] - marks["asked"],
        "build_s": marks["built"] - marks["read"],
        "total_s": marks["built"] - marks["asked"],
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_host": (after - before) / hosts if hosts else 0.0,
    }


def microBenchmark(sizes: list[int], events: int, repeats: int) -> dict[str, Any]:
    """
    Microseconds per event applied by C{EtcdRouteSync.events} (and per
    C{RouteResolver.apply} of one host) on tables of each size: the mean
    over C{events} events, median over C{repeats} repeats.
    """
    from twisted.internet.task import Clock

    from revproxy.etcd import types as etcd
    from revproxy.routing.resolver import RouteResolver
    from revproxy.routing import parseUpstream
    from revproxy.etcd.sync import EtcdRouteSync

    put, delete = etcd.EventType.PUT, etcd.EventType.DELETE
    perf = time.perf_counter_ns
    results = []
    for size in sizes:
        resolver = RouteResolver(None)
        sync = EtcdRouteSync(None, resolver, PREFIX, Clock())
        entries = [etcd.Entry(k.encode(), b"", 1) for k in routeKeys(PREFIX, size, 3)]
        sync.snapshot(etcd.Snapshot(1, entries), True)
        del entries
        assert resolver.table is not None and len(resolver.table) == size
        revision = 1
        extra = parseUpstream("127.0.0.1:9")
        means: dict[str, list[float]] = {"add": [], "delete": [], "update": [], "apply": []}
        addSamples: list[int] = []

        def event(kind: Any, key: bytes, sync: EtcdRouteSync = sync) -> int:
            nonlocal revision
            revision += 1
            batch = etcd.WatchEvents(revision, (etcd.WatchEvent(kind, key, b"", revision),))
            began = perf()
            sync.events(batch)
            return perf() - began

        for repeat in range(repeats):
            spent = {"add": 0, "delete": 0, "update": 0, "apply": 0}
            for j in range(events):
                key = f"{PREFIX}new-{repeat}-{j}.bench.example/127.0.0.1:9".encode()
                took = event(put, key)
                addSamples.append(took)
                spent["add"] += took
                spent["delete"] += event(delete, key)
                old = f"{PREFIX}h{(j * 7919) % size}.bench.example/127.0.0.1:9".encode()
                spent["update"] += event(put, old)
                event(delete, old)
                host = f"apply-{j}.bench.example"
                began = perf()
                resolver.apply({host: (extra,)})
                spent["apply"] += perf() - began
                resolver.apply({host: None})
            for kind, total in spent.items():
                means[kind].append(total / events / 1000)
        assert len(resolver.table) == size
        results.append(
            {
                "hosts": size,
                **{f"{kind}_us": statistics.median(v) for kind, v in means.items()},
                "add_p99_us": _percentile([float(s) for s in addSamples], 0.99) / 1000,
                "events": events,
                "repeats": repeats,
            }
        )
    return {"sizes": results}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="time one load of the routes, in process")
    load.add_argument("--etcd", required=True)
    load.add_argument("--prefix", default=PREFIX)
    load.add_argument("--expect", type=int, required=True)
    micro = commands.add_parser("micro", help="time applying single events, no etcd")
    micro.add_argument("--sizes", default="100,1000,10000,100000")
    micro.add_argument("--events", type=int, default=2000)
    micro.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.command == "load":
        answer = inProcessLoad(args.etcd, args.prefix, args.expect)
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        answer = microBenchmark(sizes, args.events, args.repeats)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
