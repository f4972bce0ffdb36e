"""
C{--workers N}: throughput, balance and restart behaviour, on loopback.

    python bench/workers.py                      # 1, 2, 4 workers; both socket modes; ~3 min
    python bench/workers.py --seconds 5 --workers 1,2 --modes shared
    python bench/workers.py --pin-load           # wrk and nginx on the last CPU, proxy unpinned

For each socket mode (C{shared}: one socket bound by the parent and passed
to the workers, the default; C{reuseport}: one C{SO_REUSEPORT} socket per
worker) and each worker count it starts C{twistd -n revproxy --workers N}
in front of the nginx upstream of C{bench/run.py} and reports:

- C{get-1k}: wrk, 50 keep-alive connections, GET of 1 KiB: req/s, and the
  requests each worker answered (the parent's C{/metrics},
  C{revproxy_worker_requests_total});
- C{close-1k}: the same with C{Connection: close} (a new connection per
  request, so every request is a new accept): req/s and requests per
  worker;
- C{restart}: with C{--workers} above 1, C{close-1k} again while the parent
  gets C{SIGHUP} (every worker replaced, one at a time) and then one worker
  gets C{SIGKILL}: wrk's socket errors and non-2xx answers.

Unless C{--pin-load}, nothing is pinned: proxy, wrk and nginx share every
CPU (the figure the 2-core CI machine can give).  The access log is off
unless C{--access-log} (in the parent it would be one relayed line per
request).  Every load is bounded in time; every process started is
stopped, by process group.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nginx  # noqa: E402
import wrk  # noqa: E402
from processes import (  # noqa: E402
    CpuPlan,
    Supervisor,
    cpuSeconds,
    freePort,
    raiseFileLimit,
    waitListening,
)

REPO = Path(__file__).resolve().parent.parent
HOST = "bench.local"
TWISTD = (
    f"{shlex.quote(sys.executable)} -c 'from twisted.scripts.twistd import run; run()' "
    "-n --pidfile= revproxy"
)


def adminText(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path)
    body = connection.getresponse().read().decode()
    connection.close()
    return body


def perWorker(adminPort: int) -> dict[str, int]:
    """
    Requests answered by each worker, from the admin endpoint.
    """
    text = adminText(adminPort, "/metrics")
    counts = {
        m.group(1): int(float(m.group(2)))
        for m in re.finditer(r'^revproxy_worker_requests_total\{worker="(\d+)"\} (\S+)', text, re.M)
    }
    if not counts:  # one process: no workers
        total = sum(
            float(m.group(1))
            for m in re.finditer(r"^revproxy_requests_total\{.*\} (\S+)", text, re.M)
        )
        counts = {"1": int(total)}
    return counts


def workerPids(adminPort: int) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"worker (\d+): pid (\d+)", adminText(adminPort, "/healthz"))
    }


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/1k", headers={"Host": HOST})
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def spread(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return " ".join(f"w{k}={v} ({100 * v / total:.0f}%)" for k, v in sorted(counts.items()))


def measure(args: argparse.Namespace, sup: Supervisor, upstreamPorts: tuple[int, int],
            workers: int, mode: str, loadPin: list[str], restarts: bool = True) -> dict[str, Any]:
    port, admin = freePort(), freePort()
    route = f"{HOST}=" + ",".join(f"127.0.0.1:{p}" for p in upstreamPorts)
    command = (
        f"{TWISTD} --listen tcp:{port}:interface=127.0.0.1 --route {route} "
        f"--admin tcp:{admin}:interface=127.0.0.1 --workers {workers}"
    )
    if not args.access_log:
        command += " --no-access-log"
    env = {**os.environ, "REVPROXY_WORKER_SOCKETS": mode}
    old = os.environ.copy()
    os.environ.update(env)
    try:
        child = sup.start(f"revproxy-{mode}-{workers}", shlex.split(command), cwd=REPO)
    finally:
        os.environ.clear()
        os.environ.update(old)
    out: dict[str, Any] = {"workers": workers, "mode": mode}
    try:
        waitListening(child, port, ready=lambda: answers(port))
        if workers > 1:
            deadline = time.monotonic() + 20
            while len(workerPids(admin)) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # every worker has its upstream pool warm soon after
        url = f"http://127.0.0.1:{port}/1k"
        wrk.run(loadPin, url, 50, 1, HOST)  # warm-up
        pids = [child.pid, *workerPids(admin).values()] if workers > 1 else [child.pid]
        cpu = [cpuSeconds(p) for p in pids]
        before = perWorker(admin)
        r = wrk.run(loadPin, url, 50, args.seconds, HOST)
        after = perWorker(admin)
        used = [cpuSeconds(p) - c for p, c in zip(pids, cpu)]
        out["get-1k"] = (r.requestsPerSecond, {k: after[k] - before.get(k, 0) for k in after})
        out["cpu"] = (1e6 * sum(used) / max(1, r.requests), used[0] if workers > 1 else 0.0)
        before = after
        r = wrkClose(loadPin, url, args.seconds)
        after = perWorker(admin)
        out["close-1k"] = (r.requestsPerSecond, {k: after[k] - before.get(k, 0) for k in after},
                           r.socketErrors, r.non2xx)
        if workers > 1 and restarts:
            out["restart"] = restart(loadPin, url, child.pid, admin, args.seconds)
    finally:
        sup.stop(child, grace=15)
    return out


def wrkClose(loadPin: list[str], url: str, seconds: float) -> Any:
    argv = loadPin + [wrk.WRK, "-t1", "-c50", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "--latency",
                      "-H", f"Host: {HOST}", "-H", "Connection: close", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    return wrk.parse(done.stdout)


def restart(loadPin: list[str], url: str, parentPid: int, admin: int, seconds: float) -> dict[str, Any]:
    """
    Connection-per-request load while the parent gets SIGHUP (every worker
    replaced), then again while one worker gets SIGKILL: wrk's socket
    errors and non-2xx answers for each.
    """
    seconds = max(seconds, 6)
    out: dict[str, Any] = {}
    for event in ("sighup", "kill"):
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(wrkClose(loadPin, url, seconds)))
        thread.start()
        time.sleep(1)
        if event == "sighup":
            os.kill(parentPid, signal.SIGHUP)
        else:
            os.kill(workerPids(admin)["1"], signal.SIGKILL)
        thread.join()
        r = result[0]
        out[event] = (r.requests, r.socketErrors, r.non2xx)
        deadline = time.monotonic() + 20  # the replacement or the restart is over
        while time.monotonic() < deadline and "not answering" in adminText(admin, "/healthz"):
            time.sleep(0.2)
        time.sleep(1)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=1,
                        help="measure each worker count this many times, interleaved; medians")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--modes", default="shared,reuseport")
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--pin-load", action="store_true",
                        help="pin wrk and nginx on the last CPU; the proxy is not pinned")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    modes = args.modes.split(",")
    cpus = sorted(os.sched_getaffinity(0))
    loadPin = CpuPlan(None, cpus[-1], "").prefix(cpus[-1]) if args.pin_load else []
    workdir = Path(tempfile.mkdtemp(prefix="revproxy-bench-workers-"))
    sup = Supervisor(workdir, raiseFileLimit(8192))
    nginxPath = nginx.nginxPath()
    if nginxPath is None:
        print("nginx is needed for the upstream (apt-get install nginx-light)")
        return 1
    upstreamPorts = (freePort(), freePort())
    status = freePort()
    conf = nginx.upstreamConfig(workdir, upstreamPorts, status)
    upstream = sup.start("upstream", loadPin + nginx.argv(nginxPath, workdir, conf))
    for p in (*upstreamPorts, status):
        waitListening(upstream, p)
    print(f"{len(cpus)} CPUs; load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"{'wrk and nginx pinned on CPU %d, proxy unpinned' % cpus[-1] if loadPin else 'nothing pinned'}; "
          f"access log {'on' if args.access_log else 'off'}; {args.seconds:.0f} s per figure")
    results = []
    try:
        for run, mode, n in [(run, m, n) for m in modes for run in range(args.runs) for n in counts]:
            r = measure(args, sup, upstreamPorts, n, mode, loadPin, restarts=run == 0)
            r["run"] = run
            results.append(r)
            rps, byWorker = r["get-1k"]
            us, parent = r["cpu"]
            print(f"{mode:9} workers={n} run {run + 1}: load {os.getloadavg()[0]:.2f}; "
                  f"CPU {us:.0f} us/request (parent {parent:.2f} s)")
            crps, cby, cerr, cnon = r["close-1k"]
            print(f"{mode:9} workers={n}: get-1k {rps:8.0f} req/s  [{spread(byWorker)}]")
            print(f"{'':9}           close-1k {crps:7.0f} req/s  [{spread(cby)}] errors={cerr} non2xx={cnon}")
            if "restart" in r:
                for event, what in (("sighup", "SIGHUP (replace all)"), ("kill", "kill -9 of worker 1")):
                    total, err, non = r["restart"][event]
                    print(f"{'':9}           {what} under close-1k: {total} requests, "
                          f"socket errors={err}, non2xx={non}")
            sys.stdout.flush()
        def median(mode: str, n: int) -> float:
            return statistics.median(
                r["get-1k"][0] for r in results if r["mode"] == mode and r["workers"] == n
            )

        for mode in modes:
            base = median(mode, counts[0])
            print(f"{mode}: get-1k medians over {args.runs} runs: " + ", ".join(
                f"{n} workers {median(mode, n):.0f} req/s ({median(mode, n) / base:.2f}x)"
                for n in counts
            ))
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        sup.stopAll()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
