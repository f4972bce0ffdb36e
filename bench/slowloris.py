"""
Slowloris against the proxy: many connections trickle their request head
one byte at a time while a normal client measures its latency.

    python bench/slowloris.py                         # 500 connections, a byte every 5 s, 30 s
    python bench/slowloris.py --header-timeout 10     # passes --header-timeout 10 to the proxy
    python bench/slowloris.py --smoke                 # seconds; what CI runs; never judged

It starts the benchmark's upstream (nginx, or bench/builtin_upstream.py)
and a fresh proxy (C{twistd -n revproxy} from this tree, or C{--proxy-cmd})
as bench/run.py does, pinned the same way.  Then C{--connections} slow
clients each send the first byte of a request head at once and one more
byte every C{--interval} seconds, never finishing the head; meanwhile one
normal client sends C{GET /1k} on a keep-alive connection C{--rate} times
a second.  After C{--duration} seconds everything stops and it prints how
many slow connections the proxy closed (with which status) and when,
counted from each connection's first byte, and the normal client's
latency percentiles.

The target of issue 10: every slow connection closed by the header
deadline, and the normal client's p99 under 50 ms.  Only processes started
here are stopped, by process group; everything is loopback and bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clients  # noqa: E402
import run  # noqa: E402
from processes import CpuPlan  # noqa: E402

HEAD = b"GET /1k HTTP/1.1\r\nHost: " + run.HOST.encode() + b"\r\nX-Slow: "


@dataclass
class SlowResult:
    """
    What happened to one slow connection: when it was closed by the proxy
    (seconds after its first byte), the status it got, if any.
    """

    opened: bool = False
    closedAfter: float | None = None
    status: int | None = None
    reset: bool = False


@dataclass
class NormalResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def _status(data: bytes) -> int | None:
    if data.startswith(b"HTTP/1.") and len(data) >= 12 and data[9:12].isdigit():
        return int(data[9:12])
    return None


async def _slow(port: int, interval: float, until: float, gate: asyncio.Semaphore) -> SlowResult:
    result = SlowResult()
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, asyncio.TimeoutError):
            return result
    result.opened = True
    start = time.monotonic()
    sent = 0
    received = b""
    try:
        while time.monotonic() < until:
            byte = HEAD[sent : sent + 1] or b"s"
            writer.write(byte)
            sent += 1
            nextByte = time.monotonic() + interval
            while time.monotonic() < min(nextByte, until):
                try:
                    data = await asyncio.wait_for(
                        reader.read(4096), min(nextByte, until) - time.monotonic()
                    )
                except asyncio.TimeoutError:
                    break
                if not data:
                    result.closedAfter = time.monotonic() - start
                    result.status = _status(received)
                    return result
                received += data
    except (ConnectionResetError, BrokenPipeError, OSError):
        result.closedAfter = time.monotonic() - start
        result.status = _status(received)
        result.reset = True
        return result
    finally:
        writer.close()
    return result


async def _normal(port: int, rate: float, until: float, result: NormalResult) -> None:
    request = f"GET /1k HTTP/1.1\r\nHost: {run.HOST}\r\n\r\n".encode()
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if connection is None:
                connection = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            reader, writer = connection
            writer.write(request)
            status = await asyncio.wait_for(clients._readResponse(reader), 5)
            if status != 200:
                raise ValueError(status)
            result.latencies.append((time.monotonic() - started) * 1000)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            if connection is not None:
                connection[1].close()
            connection = None
        await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    if connection is not None:
        connection[1].close()


async def attack(
    port: int, connections: int, interval: float, duration: float, rate: float
) -> tuple[list[SlowResult], NormalResult]:
    """
    Run the slow connections and the normal client for C{duration} seconds.
    """
    until = time.monotonic() + duration
    gate = asyncio.Semaphore(100)
    normal = NormalResult()
    normalTask = asyncio.ensure_future(_normal(port, rate, until, normal))
    slow = await asyncio.gather(*(_slow(port, interval, until, gate) for _ in range(connections)))
    await normalTask
    return list(slow), normal


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(
    slow: list[SlowResult], normal: NormalResult, args: argparse.Namespace, took: float
) -> list[str]:
    """
    The lines that say what happened.
    """
    opened = [r for r in slow if r.opened]
    closed = [r for r in opened if r.closedAfter is not None]
    statuses: dict[str, int] = {}
    for r in closed:
        key = str(r.status) if r.status else ("reset" if r.reset else "no status")
        statuses[key] = statuses.get(key, 0) + 1
    timeout = args.header_timeout if args.header_timeout is not None else "proxy default"
    lines = [
        f"slow connections: {len(opened)} opened ({len(slow) - len(opened)} failed to open), "
        f"a byte every {args.interval:g} s for {args.duration:g} s; header timeout: {timeout}",
        f"closed by the proxy: {len(closed)} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items())) or 'none'}); "
        f"still open at the end: {len(opened) - len(closed)}",
    ]
    if closed:
        after = [r.closedAfter for r in closed if r.closedAfter is not None]
        lines.append(
            f"closed after their first byte, s: min {min(after):.2f}, "
            f"p50 {statistics.median(after):.2f}, max {max(after):.2f}"
        )
        steps = []
        mark = args.interval
        while mark <= args.duration + 1e-9:
            steps.append(f"{mark:g} s: {sum(1 for a in after if a <= mark)}")
            mark += args.interval
        lines.append("closed by: " + ", ".join(steps))
    p50 = _percentile(normal.latencies, 50)
    p99 = _percentile(normal.latencies, 99)
    if p50 is not None and p99 is not None:
        lines.append(
            f"normal client: {len(normal.latencies)} requests, {normal.errors} errors, "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(normal.latencies):.2f} ms"
        )
    else:
        lines.append(f"normal client: no request served, {normal.errors} errors")
    if not args.smoke:
        allClosed = bool(opened) and len(closed) == len(opened)
        fast = p99 is not None and p99 < 50 and normal.errors == 0
        lines.append(
            f"target (issue 10): all slow connections closed: {'yes' if allClosed else 'NO'}; "
            f"normal p99 < 50 ms without errors: {'yes' if fast else 'NO'}"
        )
    lines.append(f"took {took:.0f} s")
    return lines


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between bytes")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of attack")
    parser.add_argument("--rate", type=float, default=20.0, help="normal requests per second")
    parser.add_argument(
        "--header-timeout",
        type=float,
        help="pass --header-timeout to the proxy (default: pass nothing, its default applies)",
    )
    parser.add_argument("--proxy-cmd", help="command of the proxy, with {port} and {route}")
    parser.add_argument(
        "--builtin-upstream", action="store_true", help="the built-in upstream even with nginx"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="20 connections for 4 s; figures are not judged"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.connections, args.interval, args.duration = 20, 1.0, 4.0
    return args


def main(argv: list[str]) -> int:
    args = parseArguments(argv)
    started = time.monotonic()
    command, note = run.chooseProxy(args.proxy_cmd)
    if args.header_timeout is not None:
        command += f" --header-timeout {shlex.quote(f'{args.header_timeout:g}')}"
    settings = run.Settings(1, args.duration, 0, args.connections, 0, command, accessLog=True)
    cpus = CpuPlan.detect()
    if cpus.load is not None:
        os.sched_setaffinity(0, {cpus.load})
    workdir = Path(tempfile.mkdtemp(prefix="revproxy-slowloris-"))
    bench: run.Bench | None = None
    failed = False
    try:
        bench = run.Bench(settings, workdir, cpus, useNginx=not args.builtin_upstream)
        print(f"proxy: {note}: {command}")
        print(f"upstream: {bench.upstream.kind}; pinning: {cpus.reason}", flush=True)
        with bench.target("revproxy") as (port, _):
            slow, normal = asyncio.run(
                attack(port, args.connections, args.interval, args.duration, args.rate)
            )
        print("\n".join(report(slow, normal, args, time.monotonic() - started)))
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: stopping everything", file=sys.stderr)
        failed = True
    except Exception as e:
        print(f"slowloris failed: {type(e).__name__}: {e}", file=sys.stderr)
        failed = True
    finally:
        if bench is not None:
            bench.supervisor.stopAll()
        shutil.rmtree(workdir, ignore_errors=True)
    survivors = bench.supervisor.survivors() if bench else []
    if survivors:
        print(f"NOT STOPPED: pids {[c.pid for c in survivors]}")
    return 1 if failed or survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
