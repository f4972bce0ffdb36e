"""
Integration tests of a fleet (issue 14): three real C{twistd revproxy}
processes on one real etcd, with C{revproxyctl add --wait}, C{nodes} and
C{explain} run as subprocesses; a node paused with SIGSTOP, one killed
with SIGKILL; and a proxy restarted while etcd is down, serving its
last-good snapshot.

Blocking work (revproxyctl, etcd control) runs in the reactor's thread pool;
every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.integration.etcd_fixture import EtcdMember, free_port
from tests.integration.test_ctl import ctl
from tests.integration.upstreams import HTTPClient, ProxyProcess, UpstreamServer, echo, request

FAST = ["--etcd-backoff", "0.1", "--etcd-backoff-max", "0.5", "--etcd-timeout", "1",
        "--node-ttl", "8", "--node-report-interval", "0.05", "--no-access-log"]


async def run(etcd: EtcdMember, *args: str) -> subprocess.CompletedProcess[str]:
    """
    revproxyctl ARGS against C{etcd}, off the reactor thread.
    """
    result: subprocess.CompletedProcess[str] = await deferToThread(ctl, etcd.url, *args)
    return result


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check() if callable(check) else check
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await deferLater(reactor, 0.1, lambda: None)


async def get(port: int, host: bytes, path: bytes = b"/") -> int:
    """
    One request for C{host} on a new connection: its status.
    """
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), HTTPClient())
    try:
        r = await client.send(request(b"GET", path, host), timeout=5)
    finally:
        client.transport.loseConnection()
    return int(r.code)


def admin(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Node:
    """
    One proxy process of the fleet, with its admin port.
    """

    def __init__(self, etcd: EtcdMember, directory: Path, *extra: str) -> None:
        directory.mkdir(exist_ok=True)
        self.adminPort = free_port()
        self.process = ProxyProcess(
            ["--etcd", etcd.url, "--listen", "tcp:0:interface=127.0.0.1",
             "--admin", f"tcp:{self.adminPort}:interface=127.0.0.1", *FAST, *extra],
            directory,
        )
        self.port = 0

    async def start(self) -> Node:
        self.port = await self.process.listeningPort()
        return self

    @property
    def id(self) -> str:
        return f"{socket.gethostname()}:{self.port}:{self.process.pid}"


async def nodes(etcd: EtcdMember) -> list[dict[str, Any]]:
    result = await run(etcd, "nodes", "--json")
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)["nodes"]
    return found


@pytest_twisted.ensureDeferred
async def test_wait_nodes_and_a_paused_node(etcd: EtcdMember, tmp_path: Path) -> None:
    """add --wait returns once all three nodes applied the change (each then serves it), and times out naming a node paused with SIGSTOP; nodes lists three, then two after one is killed and its lease expires."""
    upstream = await UpstreamServer(echo).start()
    fleet = [Node(etcd, tmp_path / f"p{i}") for i in range(3)]
    try:
        for node in fleet:
            await node.start()
        ids = sorted(n.id for n in fleet)

        async def threeLive() -> bool:
            listed = await nodes(etcd)
            return sorted(n["id"] for n in listed) == ids and all(n["watch"] == "live" for n in listed)

        await until(threeLive, 15, "three live nodes")

        added = await run(etcd, "add", "app.example.com", upstream.address, "--wait")
        assert added.returncode == 0, (added.stdout, added.stderr)
        assert "applied by all 3 nodes" in added.stdout, added.stdout
        for node_id in ids:
            assert node_id in added.stdout, added.stdout
        # No retry: each node serves the route the moment --wait returns.
        for node in fleet:
            assert await get(node.port, b"app.example.com") == 200

        listing = await run(etcd, "nodes")
        assert listing.returncode == 0, listing.stderr
        for node_id in ids:
            assert node_id in listing.stdout, listing.stdout

        explained = await run(etcd, "explain", "app.example.com", "/x")
        assert explained.returncode == 0, explained.stderr
        assert "route: app.example.com (the exact host)" in explained.stdout, explained.stdout
        assert explained.stdout.count(f"{upstream.address} up") == 3, explained.stdout

        paused = fleet[1]
        os.kill(paused.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            late = await run(etcd, "add", "late.example.com", upstream.address, "--wait=1.5")
            took = time.monotonic() - started
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)
        assert late.returncode == 1, (late.stdout, late.stderr)
        assert "timed out after 1.5s" in late.stderr, late.stderr
        assert f"{paused.id} (at revision" in late.stderr, late.stderr
        for other in fleet:
            if other is not paused:
                assert f"{other.id} (at" not in late.stderr, late.stderr
        assert took < 10, took
        # Resumed, it catches up.
        caught = await run(etcd, "add", "late.example.com", upstream.address, "--wait=5")
        assert caught.returncode == 0, (caught.stdout, caught.stderr)

        killed = fleet[2]
        os.kill(killed.process.pid, signal.SIGKILL)
        killed.process.process.wait(10)

        async def twoLeft() -> bool:
            return sorted(n["id"] for n in await nodes(etcd)) == sorted([fleet[0].id, fleet[1].id])

        await until(twoLeft, 20, "the killed node's record expiring with its lease")
    finally:
        for node in fleet:
            node.process.kill()
        await upstream.stop()


@pytest_twisted.ensureDeferred
async def test_restart_with_etcd_down_serves_snapshot(etcd: EtcdMember, tmp_path: Path) -> None:
    """A proxy restarted while etcd is down serves the routes of its last-good snapshot, /readyz 200 saying stale (503 with --ready-requires-etcd), until etcd is back."""
    upstream = await UpstreamServer(echo).start()
    state = tmp_path / "state"
    first = await Node(etcd, tmp_path / "first", "--state-dir", str(state)).start()
    procs = [first.process]
    try:
        added = await run(etcd, "add", "snap.example.com", upstream.address, "--wait")
        assert added.returncode == 0, added.stderr

        def snapshotted() -> Any:
            async def check() -> bool:
                path = state / "routes.snapshot.json"
                return path.exists() and "snap.example.com" in path.read_text()
            return check()

        await until(snapshotted, 5, "the snapshot written")
        os.kill(first.process.pid, signal.SIGTERM)
        assert await first.process.exitCode(timeout=10) == 0, first.process.text()
        await deferToThread(etcd.stop)

        again = await Node(etcd, tmp_path / "again", "--state-dir", str(state)).start()
        strict = await Node(etcd, tmp_path / "strict", "--state-dir", str(state),
                            "--ready-requires-etcd").start()
        procs += [again.process, strict.process]

        for node in (again, strict):
            async def serving(node: Node = node) -> bool:
                return await get(node.port, b"snap.example.com") == 200

            await until(serving, 10, "the snapshot's route served")
        code, body = await deferToThread(admin, again.adminPort, "/readyz")
        assert (code, body.startswith("ready, stale:")) == (200, True), (code, body)
        code, body = await deferToThread(admin, strict.adminPort, "/readyz")
        assert code == 503 and "stale" in body, (code, body)

        await deferToThread(etcd.start)

        async def fresh() -> bool:
            code, body = await deferToThread(admin, strict.adminPort, "/readyz")
            return code == 200 and "stale" not in body

        await until(fresh, 15, "the node fresh again once etcd is back")

        async def registered() -> bool:
            return {again.id, strict.id} <= {n["id"] for n in await nodes(etcd)}

        # Started while etcd was down, the nodes register once it answers.
        await until(registered, 10, "the nodes registered once etcd is back")
        assert "serving the last-good snapshot of revision" in again.process.text()
    finally:
        for p in procs:
            p.kill()
        await upstream.stop()
