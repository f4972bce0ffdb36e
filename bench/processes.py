"""
Child processes of the benchmark: starting them pinned and in their own
process group, waiting until they listen, reading their CPU time and memory
from /proc, and stopping every one of them, whatever happens.

Only processes started here are ever signalled, by their own process group.
"""

from __future__ import annotations

import atexit
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class CpuPlan:
    """
    Which CPUs the process under test and the load generators run on.

    C{proxy} and C{load} are None when pinning is not possible (no taskset,
    or fewer than two CPUs); C{reason} then says why.
    """

    proxy: int | None
    load: int | None
    reason: str

    @classmethod
    def detect(cls) -> CpuPlan:
        """
        Pin the proxy under test on CPU 0 and everything else on CPU 1.
        """
        if shutil.which("taskset") is None:
            return cls(None, None, "taskset missing: processes are not pinned")
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None, "only one CPU: processes are not pinned")
        return cls(
            cpus[0],
            cpus[1],
            f"taskset: proxy under test on CPU {cpus[0]}, "
            f"wrk, clients and upstream on CPU {cpus[1]}",
        )

    def prefix(self, cpu: int | None) -> list[str]:
        """
        The command prefix that pins a child on C{cpu}.
        """
        return [] if cpu is None else ["taskset", "-c", str(cpu)]


@dataclass
class Child:
    """
    One started process, leader of its own process group.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def logTail(self, lines: int = 15) -> str:
        """
        The last lines the process wrote to its stdout and stderr.
        """
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def raiseFileLimit(wanted: int) -> int:
    """
    Raise this process's soft RLIMIT_NOFILE towards C{wanted}; return it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Supervisor:
    """
    Starts children and guarantees that each is stopped: on L{stopAll}, on
    interpreter exit, and on SIGTERM / SIGINT (which unwind through the
    caller's C{finally}).
    """

    workdir: Path
    fileLimit: int
    children: list[Child] = field(default_factory=list)
    started: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.stopAll)
        signal.signal(signal.SIGTERM, _raiseSystemExit)

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None) -> Child:
        """
        Start C{argv} in a new session (so its pid is its process group),
        with its output in a log file under the work directory.
        """
        log = self.workdir / f"{name}.log"
        limit = self.fileLimit

        def setLimits() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=setLimits,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        self.started.append(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        """
        SIGTERM the child's process group, SIGKILL what is left of it after
        C{grace} seconds, then reap the child.

        The group is signalled only while its leader is not reaped (at worst
        a zombie), so its id cannot have been reused by someone else's
        process.
        """
        if child in self.children:
            self.children.remove(child)
        if child.popen.returncode is not None:
            return
        _signalGroup(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _exited(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        _signalGroup(child.pid, signal.SIGKILL)
        child.popen.wait()

    def stopAll(self) -> None:
        """
        Stop every child still running, newest first.
        """
        for child in reversed(list(self.children)):
            self.stop(child)

    def survivors(self) -> list[Child]:
        """
        The children ever started whose process has not exited.
        """
        return [child for child in self.started if child.popen.poll() is None]


def _signalGroup(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(pid: int) -> bool:
    """
    Whether child C{pid} has exited, without reaping it.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _raiseSystemExit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitListening(
    child: Child, port: int, timeout: float = 20.0, ready: Callable[[], bool] | None = None
) -> None:
    """
    Wait until C{port} on 127.0.0.1 accepts connections (and C{ready}, if
    given, returns True); raise L{RuntimeError} with the child's log if it
    exits or the time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited with {child.popen.returncode}:\n{child.logTail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        if ready is None or ready():
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"{child.name} not ready on port {port} after {timeout}s:\n{child.logTail()}"
    )


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of C{pid} so far, from /proc/<pid>/stat.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces: fields start after its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def memoryKiB(pid: int) -> tuple[int, int]:
    """
    (VmHWM, VmRSS) of C{pid} in KiB: the peak resident set and the current one.
    """
    values = {"VmHWM": 0, "VmRSS": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0])
    return values["VmHWM"], values["VmRSS"]
