"""
Driving load with wrk: one bounded run at fixed concurrency, and the parse
of its C{--latency} report into a L{WrkResult}.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRK = "wrk"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    """
    What one wrk run measured. Latencies are in milliseconds.
    """

    requests: int
    seconds: float
    requestsPerSecond: float
    p50: float
    p99: float
    socketErrors: int
    non2xx: int


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    """
    Parse the report that C{wrk --latency} prints.
    """
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (total and rate and p50 and p99):
        raise ValueError(f"cannot parse wrk output:\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_milliseconds(total.group(2) + total.group(3)) / 1000,
        requestsPerSecond=float(rate.group(1)),
        p50=_milliseconds(p50.group(1)),
        p99=_milliseconds(p99.group(1)),
        socketErrors=sum(int(n) for n in errors.groups()) if errors else 0,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def run(
    prefix: list[str],
    url: str,
    connections: int,
    seconds: float,
    host: str,
    script: Path | None = None,
) -> WrkResult:
    """
    Run wrk (one thread, C{connections} keep-alive connections) against
    C{url} for C{seconds}, killed if it overruns by 30 seconds.
    """
    argv = prefix + [
        WRK,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-H",
        f"Host: {host}",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)
