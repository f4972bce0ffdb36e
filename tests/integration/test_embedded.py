"""
Integration tests of C{--etcd embedded}: a real etcd started, supervised
and stopped by the proxy.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from tests.integration.etcd_fixture import free_port
from tests.integration.upstreams import HTTPClient, ProxyProcess, UpstreamServer, echo, request


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


async def _put(clientPort: int, key: str) -> None:
    body = json.dumps(
        {"key": base64.b64encode(key.encode()).decode(), "value": ""}
    ).encode()
    deadline = time.monotonic() + 20
    while True:
        try:
            response = await treq.post(
                f"http://127.0.0.1:{clientPort}/v3/kv/put", data=body, timeout=2
            )
            await response.content()
            if response.code == 200:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        await deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_embedded_etcd_routes_and_stops(tmp_path: Path) -> None:
    """--etcd embedded runs etcd as a child: routes written to it are served, and SIGTERM stops both."""
    up = await UpstreamServer(echo).start()
    clientPort = free_port()
    dataDir = tmp_path / "etcd-data"
    proc = ProxyProcess(
        [
            "--listen", "tcp:0:interface=127.0.0.1",
            "--etcd", "embedded",
            "--etcd-client-port", str(clientPort),
            "--etcd-data-dir", str(dataDir),
            "--etcd-backoff", "0.1",
            "--etcd-backoff-max", "0.5",
        ],
        tmp_path,
    )
    try:
        port = await proc.listeningPort()
        await _put(clientPort, f"/hosts/blog.example.com/{up.address}")
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
