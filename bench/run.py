"""
The benchmark harness: measures, in one run on loopback, a fast upstream
directly, nginx as a reverse proxy in front of it, and revproxy in front of
it, interleaved over several runs, and reports medians as a table and JSON.

    python bench/run.py                   # 3 runs of 10 s per load scenario
    python bench/run.py --smoke           # under a minute; what CI runs
    python bench/run.py --scenario etcd   # routes in a real etcd (bench/etcd_bench.py)
    python bench/run.py --proxy-cmd "python bench/standin_proxy.py --port {port} --route {route}"

See bench/README.rst for how to read the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clients  # noqa: E402
import etcd_bench  # noqa: E402
import nginx  # noqa: E402
import wrk  # noqa: E402
from processes import (  # noqa: E402
    Child,
    CpuPlan,
    Supervisor,
    cpuSeconds,
    freePort,
    memoryKiB,
    raiseFileLimit,
    waitListening,
)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
HOST = "bench.local"
TARGETS = ("direct", "nginx", "revproxy")
# `python -m twisted.scripts.twistd` does nothing (the module has no main
# guard), hence run() from -c; cwd is the repository, so the in-tree plugin
# is found.
REVPROXY_CMD = (
    f"{shlex.quote(sys.executable)} -c 'from twisted.scripts.twistd import run; run()' "
    "-n --pidfile= revproxy --port {port} --route {route}"
)
STANDIN_CMD = (
    f"{shlex.quote(sys.executable)} bench/standin_proxy.py --port {{port}} --route {{route}}"
)
SLOW_READER_CAP_KIB = 3 * 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    """
    One kind of traffic: C{load} is wrk at fixed concurrency, C{idle} holds
    idle keep-alive connections, C{slow} is one client that does not read.
    """

    name: str
    kind: str
    path: str
    connections: int = 0
    script: str | None = None


SCENARIOS = (
    Scenario("get-1k", "load", "/1k", 50),
    Scenario("get-1m", "load", "/1m", 10),
    Scenario("post-1m", "load", "/post", 10, "post-1m.lua"),
    Scenario("idle-1k", "idle", "/1k"),
    Scenario("slow-reader", "slow", "/1g"),
)


@dataclass(frozen=True)
class Settings:
    """
    How long and how hard to measure.
    """

    runs: int
    duration: float
    warmup: float
    idleConnections: int
    slowSeconds: float
    proxyCommand: str
    accessLog: bool = True


@dataclass
class Upstream:
    """
    The upstream server both proxies forward to.
    """

    kind: str
    ports: tuple[int, int]
    statusPort: int
    child: Child

    def accepts(self) -> int:
        return nginx.acceptedConnections(self.statusPort)


class Bench:
    """
    One benchmark session: its settings, work directory, CPU plan, the
    children it starts and the upstream they all share; measures one
    scenario on one target at a time.
    """

    def __init__(self, settings: Settings, workdir: Path, cpus: CpuPlan, useNginx: bool) -> None:
        self.settings = settings
        self.workdir = workdir
        self.cpus = cpus
        self.nginx = nginx.nginxPath() if useNginx else None
        fileLimit = raiseFileLimit(max(4096, 2 * settings.idleConnections + 1024))
        self.supervisor = Supervisor(workdir, fileLimit)
        self.upstream = self._startUpstream()

    def _startUpstream(self) -> Upstream:
        ports = (freePort(), freePort())
        status = freePort()
        pin = self.cpus.prefix(self.cpus.load)
        if self.nginx is not None:
            conf = nginx.upstreamConfig(self.workdir, ports, status)
            child = self.supervisor.start(
                "upstream", pin + nginx.argv(self.nginx, self.workdir, conf)
            )
            kind = f"nginx ({self.nginx}, one process)"
        else:
            argv = [sys.executable, str(BENCH / "builtin_upstream.py"), *map(str, (*ports, status))]
            child = self.supervisor.start("upstream", pin + argv)
            kind = "built-in asyncio server (nginx missing): direct figures are its own"
        for port in (*ports, status):
            waitListening(child, port)
        return Upstream(kind, ports, status, child)

    @property
    def route(self) -> str:
        return f"{HOST}=" + ",".join(f"127.0.0.1:{p}" for p in self.upstream.ports)

    @contextmanager
    def target(self, name: str) -> Iterator[tuple[int, Child]]:
        """
        Yield (port, process) of a freshly started target, stopped after; the
        upstream itself for C{direct}.
        """
        if name == "direct":
            yield self.upstream.ports[0], self.upstream.child
            return
        port = freePort()
        pin = self.cpus.prefix(self.cpus.proxy)
        if name == "nginx":
            assert self.nginx is not None
            conf = nginx.proxyConfig(
                self.workdir, port, self.upstream.ports, self.settings.accessLog
            )
            argv = pin + nginx.argv(self.nginx, self.workdir, conf)
        else:
            command = self.settings.proxyCommand.format(port=port, route=self.route)
            if not self.settings.accessLog:
                command += " --no-access-log"
            argv = pin + shlex.split(command)
        child = self.supervisor.start(name, argv, cwd=REPO)
        try:
            waitListening(child, port, ready=lambda: _answers(port))
            yield port, child
        finally:
            self.supervisor.stop(child)

    def measure(self, scenario: Scenario, target: str) -> dict[str, Any]:
        """
        One measurement of one target under one scenario.
        """
        with self.target(target) as (port, child):
            if scenario.kind == "load":
                return self._load(scenario, port, child)
            if scenario.kind == "idle":
                return self._idle(scenario, port, child)
            return self._slow(scenario, port, child)

    def _load(self, scenario: Scenario, port: int, child: Child) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}{scenario.path}"
        script = BENCH / scenario.script if scenario.script else None
        pin = self.cpus.prefix(self.cpus.load)
        if self.settings.warmup > 0:
            wrk.run(pin, url, scenario.connections, self.settings.warmup, HOST, script)
        accepts = self.upstream.accepts()
        cpu = cpuSeconds(child.pid)
        result = wrk.run(pin, url, scenario.connections, self.settings.duration, HOST, script)
        cpu = cpuSeconds(child.pid) - cpu
        opened = self.upstream.accepts() - accepts - 1
        peak, rss = memoryKiB(child.pid)
        return {
            "rps": result.requestsPerSecond,
            "p50_ms": result.p50,
            "p99_ms": result.p99,
            "cpu_us_per_req": cpu * 1e6 / result.requests if result.requests else None,
            "peak_rss_mib": peak / 1024,
            "rss_end_mib": rss / 1024,
            "upstream_conns": opened,
            "errors": result.socketErrors + result.non2xx,
            "requests": result.requests,
        }

    def _idle(self, scenario: Scenario, port: int, child: Child) -> dict[str, Any]:
        before = memoryKiB(child.pid)[1]
        during: list[int] = []
        accepts = self.upstream.accepts()
        result = clients.holdIdleConnections(
            port,
            HOST,
            scenario.path,
            self.settings.idleConnections,
            settle=0.5,
            measure=lambda: during.append(memoryKiB(child.pid)[1]),
        )
        opened = self.upstream.accepts() - accepts - 1
        grown = during[0] - before
        return {
            "connections": result.opened,
            "still_open": result.stillOpen,
            "failed": result.failed,
            "rss_before_mib": before / 1024,
            "rss_idle_mib": during[0] / 1024,
            "kib_per_conn": grown / result.opened if result.opened else None,
            "upstream_conns": opened,
        }

    def _slow(self, scenario: Scenario, port: int, child: Child) -> dict[str, Any]:
        result = clients.slowReader(
            port,
            HOST,
            scenario.path,
            self.settings.slowSeconds,
            rssKiB=lambda: memoryKiB(child.pid)[1],
            capKiB=SLOW_READER_CAP_KIB,
        )
        return {
            "rss_before_mib": result.rssBeforeKiB / 1024,
            "rss_peak_mib": result.rssPeakKiB / 1024,
            "growth_mib": (result.rssPeakKiB - result.rssBeforeKiB) / 1024,
            "kib_read": result.bytesRead / 1024,
            "capped": result.capped,
        }


def _answers(port: int) -> bool:
    """
    Whether a proxy on C{port} answers GET /1k for our host with 200.
    """
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/1k", headers={"Host": HOST})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def etcdScenarios(bench: Bench, smoke: bool) -> list[dict[str, Any]]:
    """
    The C{etcd} scenario (see bench/etcd_bench.py): initial load, memory per
    host, change-to-effect latency and the cost of one event; small in
    C{--smoke}. It needs C{twistd revproxy} and an etcd binary: without
    them it is recorded as skipped, with the reason.
    """
    record: dict[str, Any] = {"run": 1, "scenario": "etcd", "target": "revproxy"}
    if bench.settings.proxyCommand != REVPROXY_CMD:
        record["skipped"] = "needs twistd revproxy from this tree (not --proxy-cmd or STAND-IN)"
        return [record]
    try:
        etcd_bench.findEtcd()
    except Exception as e:
        record["skipped"] = f"no etcd binary ({e})"
        return [record]
    settings = etcd_bench.EtcdSettings.smoke() if smoke else etcd_bench.EtcdSettings.full()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        figures = etcd_bench.EtcdScenario(bench, settings, say).run()
        figures["verdicts"] = etcd_bench.verdicts(figures)
        record["figures"] = figures
    except Exception as e:
        record["error"] = f"{type(e).__name__}: {e}"
        say(f"run 1 etcd revproxy: {record['error']}")
    return [record]


def revproxyPluginListed() -> bool:
    """
    Whether C{twistd revproxy} exists in this tree or environment.
    """
    code = (
        "from twisted.plugin import getPlugins; "
        "from twisted.application.service import IServiceMaker; "
        "print(' '.join(p.tapname for p in getPlugins(IServiceMaker)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    return "revproxy" in done.stdout.split()


# Reporting: (heading, key, format) per column, by scenario kind.
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "load": [
        ("req/s", "rps", "{:.0f}"),
        ("spread", "spread_pct", "{:.0f}%"),
        ("p50 ms", "p50_ms", "{:.2f}"),
        ("p99 ms", "p99_ms", "{:.2f}"),
        ("CPU us/req", "cpu_us_per_req", "{:.1f}"),
        ("peak MiB", "peak_rss_mib", "{:.1f}"),
        ("end MiB", "rss_end_mib", "{:.1f}"),
        ("up conns", "upstream_conns", "{:.0f}"),
        ("errors", "errors", "{:.0f}"),
    ],
    "idle": [
        ("conns", "connections", "{:.0f}"),
        ("open", "still_open", "{:.0f}"),
        ("before MiB", "rss_before_mib", "{:.1f}"),
        ("idle MiB", "rss_idle_mib", "{:.1f}"),
        ("KiB/conn", "kib_per_conn", "{:.1f}"),
        ("up conns", "upstream_conns", "{:.0f}"),
    ],
    "slow": [
        ("before MiB", "rss_before_mib", "{:.1f}"),
        ("peak MiB", "rss_peak_mib", "{:.1f}"),
        ("growth MiB", "growth_mib", "{:.1f}"),
        ("read KiB", "kib_read", "{:.0f}"),
        ("capped", "capped", "{}"),
    ],
}
RATIO_KEYS = {
    "load": ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"),
    "idle": ("kib_per_conn",),
    # Growth is near zero for a proxy with backpressure: no ratio.
    "slow": (),
}


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, bool) for v in present):
        return any(present)
    return statistics.median(present)


def summarise(measurements: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """
    Medians per scenario and target over the runs, with the req/s spread
    ((max - min) / median) and a C{revproxy/nginx} row whose ratios are
    computed within each run, then their median taken.
    """
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in SCENARIOS:
        rows: dict[str, dict[str, Any]] = {}
        ok = [m for m in measurements if m["scenario"] == scenario.name and "error" not in m]
        for target in TARGETS:
            mine = [m["figures"] for m in ok if m["target"] == target]
            if not mine:
                continue
            row = {key: _median([f.get(key) for f in mine]) for key in mine[0]}
            if "rps" in row and row["rps"]:
                rates = [f["rps"] for f in mine]
                row["spread_pct"] = (max(rates) - min(rates)) * 100 / row["rps"]
            row["runs"] = len(mine)
            rows[target] = row
        ratios: dict[str, list[float]] = {}
        for run in {m["run"] for m in ok}:
            byTarget = {m["target"]: m["figures"] for m in ok if m["run"] == run}
            if "revproxy" in byTarget and "nginx" in byTarget:
                for key in RATIO_KEYS[scenario.kind]:
                    ours, theirs = byTarget["revproxy"].get(key), byTarget["nginx"].get(key)
                    if ours is not None and theirs:
                        ratios.setdefault(key, []).append(ours / theirs)
        if ratios:
            rows["revproxy/nginx"] = {key: statistics.median(v) for key, v in ratios.items()}
        summary[scenario.name] = rows
    return summary


def table(summary: dict[str, dict[str, dict[str, Any]]], etcdRecords: list[dict[str, Any]]) -> str:
    """
    The summary as plain-text tables, one per scenario kind, then the etcd
    scenario's figures.
    """
    out: list[str] = []
    for kind, columns in COLUMNS.items():
        headings = ["scenario", "target"] + [h for h, _, _ in columns]
        lines = [headings]
        for scenario in (s for s in SCENARIOS if s.kind == kind):
            for target, row in summary.get(scenario.name, {}).items():
                ratio = target == "revproxy/nginx"
                cells = [scenario.name, target]
                for _, key, fmt in columns:
                    value = row.get(key)
                    if value is None:
                        cells.append("")
                    elif ratio:
                        cells.append(f"{value:.2f}x")
                    else:
                        cells.append(fmt.format(value))
                lines.append(cells)
        if len(lines) == 1:
            continue
        widths = [max(len(line[i]) for line in lines) for i in range(len(headings))]
        for line in lines:
            out.append(
                "  ".join(
                    c.rjust(w) if i > 1 else c.ljust(w)
                    for i, (c, w) in enumerate(zip(line, widths, strict=True))
                )
            )
        out.append("")
    for record in etcdRecords:
        if "figures" in record:
            out.append(etcd_bench.table(record["figures"]))
        elif "skipped" in record:
            out.append(f"etcd scenario: skipped: {record['skipped']}")
        else:
            out.append(f"etcd scenario: FAILED: {record.get('error')}")
    return "\n".join(out)


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one short run of everything; never judges figures"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load measurement")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before each measurement"
    )
    parser.add_argument("--idle", type=int, default=1000, help="idle connections in idle-1k")
    parser.add_argument(
        "--slow-seconds", type=float, default=5.0, help="how long the slow reader reads nothing"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS] + ["etcd"],
        help="only these (repeatable)",
    )
    parser.add_argument(
        "--proxy-cmd",
        help="command of the proxy under test, with {port} and {route} "
        "(default: twistd revproxy if the plugin is listed, else bench/standin_proxy.py)",
    )
    parser.add_argument(
        "--builtin-upstream",
        action="store_true",
        help="use the built-in upstream even if nginx exists",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="turn the access log off in both proxies (default: on, as users run them)",
    )
    parser.add_argument("--json", type=Path, help="write the measurements and medians to this file")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep configs and logs of the children"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.duration, args.warmup, args.idle, args.slow_seconds = 1, 1.0, 0.0, 20, 1.0
    return args


def chooseProxy(given: str | None) -> tuple[str, str]:
    """
    The command of the proxy under test, and a note saying which it is.
    """
    if given:
        return given, "given with --proxy-cmd"
    if revproxyPluginListed():
        return REVPROXY_CMD, "twistd revproxy"
    return STANDIN_CMD, "STAND-IN (twistd revproxy is not listed among plugins)"


def describe(bench: Bench, note: str, smoke: bool) -> None:
    """
    Print what is measured, and how.
    """
    s = bench.settings
    reference = "nginx, keepalive 64, one process" if bench.nginx else "none (nginx missing)"
    print(f"upstream: {bench.upstream.kind}, ports {bench.upstream.ports}")
    print(f"reference proxy: {reference}")
    print(f"revproxy: {note}: {s.proxyCommand}")
    print(f"pinning: {bench.cpus.reason}")
    print(
        f"runs: {s.runs}; load {s.duration:g} s after {s.warmup:g} s warm-up; "
        f"{s.idleConnections} idle connections; slow reader {s.slowSeconds:g} s"
        + ("; smoke: figures are not judged" if smoke else "")
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)


def measureAll(
    bench: Bench,
    scenarios: list[Scenario],
    measurements: list[dict[str, Any]],
    etcd: bool,
    smoke: bool,
) -> None:
    """
    Measure every scenario on every target, for each run, the order of the
    targets rotating from run to run, appending to C{measurements}. A failed
    measurement is recorded and the others go on.
    """
    targets = [t for t in TARGETS if t != "nginx" or bench.nginx is not None]
    for run in range(1, bench.settings.runs + 1):
        shift = (run - 1) % len(targets)
        order = targets[shift:] + targets[:shift]
        for scenario in scenarios:
            for target in order:
                record: dict[str, Any] = {"run": run, "scenario": scenario.name, "target": target}
                try:
                    record["figures"] = bench.measure(scenario, target)
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in record["figures"].items())
                except Exception as e:
                    record["error"] = shown = f"{type(e).__name__}: {e}"
                measurements.append(record)
                print(f"run {run} {scenario.name} {target}: {shown}", file=sys.stderr, flush=True)
    if etcd:
        measurements += etcdScenarios(bench, smoke)


def main(argv: list[str]) -> int:
    args = parseArguments(argv)
    started = time.monotonic()
    if shutil.which(wrk.WRK) is None:
        print("wrk not found: install it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    proxyCommand, note = chooseProxy(args.proxy_cmd)
    settings = Settings(
        args.runs,
        args.duration,
        args.warmup,
        args.idle,
        args.slow_seconds,
        proxyCommand,
        accessLog=not args.no_access_log,
    )
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    cpus = CpuPlan.detect()
    if cpus.load is not None:
        os.sched_setaffinity(0, {cpus.load})
    workdir = Path(tempfile.mkdtemp(prefix="revproxy-bench-"))
    measurements: list[dict[str, Any]] = []
    failed = False
    bench: Bench | None = None
    try:
        bench = Bench(settings, workdir, cpus, useNginx=not args.builtin_upstream)
        describe(bench, note, args.smoke)
        runEtcd = not args.scenario or "etcd" in args.scenario
        measureAll(bench, scenarios, measurements, runEtcd, args.smoke)
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: stopping everything, reporting what was measured", file=sys.stderr)
        failed = True
    except Exception as e:
        print(f"benchmark failed: {type(e).__name__}: {e}", file=sys.stderr)
        failed = True
    finally:
        if bench is not None:
            bench.supervisor.stopAll()
        if args.keep_workdir:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(measurements)
    print()
    etcdRecords = [m for m in measurements if m["scenario"] == "etcd"]
    print(table(summary, etcdRecords))
    print(f"load average after: {os.getloadavg()[0]:.2f}; took {time.monotonic() - started:.0f} s")
    errors = [m for m in measurements if "error" in m]
    for m in errors:
        print(f"FAILED run {m['run']} {m['scenario']} {m['target']}: {m['error']}")
    survivors = bench.supervisor.survivors() if bench else []
    if survivors:
        print(f"NOT STOPPED: pids {[c.pid for c in survivors]}")
    else:
        print(f"stopped all {len(bench.supervisor.started) if bench else 0} processes started")
    if args.json:
        meta = {
            "upstream": bench.upstream.kind if bench else None,
            "proxy_command": proxyCommand,
            "proxy_note": note,
            "pinning": cpus.reason,
            "settings": asdict(settings),
            "smoke": args.smoke,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }
        document = {"meta": meta, "measurements": measurements, "medians": summary}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if failed or errors or survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
