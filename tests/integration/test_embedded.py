"""
Integration tests of C{--etcd embedded}: a real etcd started, supervised
and stopped by the proxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.integration.etcd_fixture import free_port
from tests.integration.upstreams import (
    ROOT,
    HTTPClient,
    ProxyProcess,
    UpstreamServer,
    echo,
    request,
)


def _etcdPids(dataDir: Path) -> list[int]:
    """
    The pids of etcd processes using C{dataDir}.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(dataDir).encode() in part for part in cmdline) and any(
            part.endswith(b"etcd") for part in cmdline[:1]
        ):
            pids.append(int(entry))
    return pids


def _revproxyctl(clientPort: int, *args: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{revproxyctl} against the embedded etcd, as an operator would.
    """
    return subprocess.run(
        [sys.executable, "-m", "revproxy.ctl", "--etcd", f"http://127.0.0.1:{clientPort}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


async def _get(port: int, path: str) -> tuple[int, bytes]:
    response = await treq.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_quick_start(tmp_path: Path) -> None:
    """The README's quick start works: an embedded etcd, a route added with revproxyctl, a routed request, the node's state on the admin endpoint, and SIGTERM stops both processes."""
    up = await UpstreamServer(echo).start()
    clientPort = free_port()
    adminPort = free_port()
    dataDir = tmp_path / "etcd-data"
    proc = ProxyProcess(
        [
            "--listen", "tcp:0:interface=127.0.0.1",
            "--etcd", "embedded",
            "--etcd-client-port", str(clientPort),
            "--etcd-data-dir", str(dataDir),
            "--etcd-backoff", "0.1",
            "--etcd-backoff-max", "0.5",
            "--admin", f"tcp:{adminPort}:interface=127.0.0.1",
        ],
        tmp_path,
    )
    try:
        port = await proc.listeningPort()
        # The README's quick start: routes are managed with revproxyctl only.
        deadline = time.monotonic() + 20
        while True:
            added = await deferToThread(
                _revproxyctl, clientPort, "add", "blog.example.com", up.address
            )
            if added.returncode == 0 or time.monotonic() > deadline:
                break
            await deferLater(reactor, 0.2, lambda: None)
        assert added.returncode == 0, added.stderr
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        deadline = time.monotonic() + 10
        code = None
        while time.monotonic() < deadline:
            client = await connectProtocol(endpoint, HTTPClient())
            r = await client.send(request(b"GET", b"/x", b"blog.example.com"), timeout=5)
            client.transport.loseConnection()
            code = r.code
            if code == 200:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert code == 200, proc.text()
        assert _etcdPids(dataDir), "no etcd child found"

        # The node's state on the admin endpoint.
        assert await _get(adminPort, "/healthz") == (200, b"ok\n")
        assert (await _get(adminPort, "/readyz"))[0] == 200
        routes = json.loads((await _get(adminPort, "/routes"))[1])
        assert routes["hosts"]["blog.example.com"][0]["upstream"] == up.address
        assert routes["etcd"]["live"] is True
        metrics = (await _get(adminPort, "/metrics"))[1].decode()
        assert (
            f'revproxy_requests_total{{code="2xx",host="blog.example.com",upstream="{up.address}"}}'
            in metrics
        ), metrics

        listed = await deferToThread(_revproxyctl, clientPort, "ls", "--json")
        assert json.loads(listed.stdout) == {"blog.example.com": [up.address]}
        os.kill(proc.pid, signal.SIGTERM)
        assert await proc.exitCode(timeout=15) == 0, proc.text()
        deadline = time.monotonic() + 5
        while _etcdPids(dataDir) and time.monotonic() < deadline:
            await deferLater(reactor, 0.1, lambda: None)
        assert not _etcdPids(dataDir), "etcd outlived the proxy"
        assert "Traceback" not in proc.text(), proc.text()
    finally:
        proc.kill()
        for pid in _etcdPids(dataDir):
            os.kill(pid, signal.SIGKILL)
        await up.stop()
