"""
Integration tests of what an operator lives with, on real processes: SIGHUP
under load, the routes file, one-line option errors, the route-change log
line, and an embedded etcd that is ours or nothing (a clean start logs no
warning, SIGKILL of the proxy leaves no etcd, a second instance on a taken
port exits 1 and never serves).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.integration.etcd_fixture import free_port
from tests.integration.test_cli import twistd
from tests.integration.test_embedded import _etcdPids
from tests.integration.upstreams import (
    ROOT,
    TWISTD,
    HTTPClient,
    ProxyProcess,
    UpstreamServer,
    echo,
    raw,
    request,
)

HOST = b"blog.example.com"
WARNING = re.compile(r"#(warn|error|critical)\]|Traceback")


def _revproxyctl(clientPort: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "revproxy.ctl", "--etcd", f"http://127.0.0.1:{clientPort}", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )


async def _until(check, timeout: float, what: str, log=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout}s:\n{log()}")
        await deferLater(reactor, 0.05, lambda: None)


async def _get(port: int) -> tuple[int, str]:
    """One request for HOST on a new connection: its status and the upstream that answered."""
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), HTTPClient())
    try:
        r = await client.send(request(b"GET", b"/", HOST), timeout=5)
    finally:
        client.transport.loseConnection()
    return r.code, (r.header(b"x-upstream") or [b""])[0].decode()


def test_bad_option_is_one_line_and_exit_2():
    """A bad option value prints one line to stderr, nothing else of the usage, and exits 2."""
    result = twistd("--port", "abc")
    assert result.returncode == 2, result
    assert result.stderr == (
        "revproxy: --port: 'abc' is not a TCP port number; see twistd revproxy --help\n"
    ), result.stderr
    assert "Usage" not in result.stdout + result.stderr


def test_version():
    """twistd revproxy --version and revproxyctl --version print revproxy's version."""
    from revproxy import __version__

    result = twistd("--version")
    assert (result.returncode, result.stdout) == (0, f"revproxy {__version__}\n"), result
    ctl = subprocess.run(
        [sys.executable, "-m", "revproxy.ctl", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert (ctl.returncode, ctl.stdout) == (0, f"revproxyctl {__version__}\n"), ctl


@pytest_twisted.ensureDeferred
async def test_sighup_under_load_loses_no_request_and_reloads_routes_file(tmp_path: Path) -> None:
    """Under load, SIGHUPs never stop the proxy nor fail a request; the routes file is reloaded and the change logged once."""
    a = await UpstreamServer(echo).start()
    b = await UpstreamServer(echo).start()
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({HOST.decode(): [a.address]}))
    proc = ProxyProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--no-access-log", "--routes-file", str(routes)],
        tmp_path,
    )
    clients: list[HTTPClient] = []
    try:
        port = await proc.listeningPort()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        counts = {"ok": 0, "failed": 0}
        failures: list[str] = []
        running = [True]

        async def load() -> None:
            client = await connectProtocol(endpoint, HTTPClient())
            clients.append(client)
            while running[0]:
                try:
                    r = await client.send(request(b"GET", b"/x", HOST), timeout=5)
                except Exception as e:
                    counts["failed"] += 1
                    failures.append(repr(e))
                    return
                if r.code == 200:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    failures.append(str(r.code))

        workers = [deferToThreadLess(load()) for _ in range(8)]
        await deferLater(reactor, 0.5, lambda: None)
        routes.write_text(json.dumps({HOST.decode(): [b.address]}))
        for _ in range(5):
            os.kill(proc.pid, signal.SIGHUP)
            await deferLater(reactor, 0.1, lambda: None)
        await deferLater(reactor, 0.5, lambda: None)
        running[0] = False
        await gatherResults(workers)
        text = proc.text()
        assert proc.process.poll() is None, text
        assert counts["failed"] == 0, (failures, text)
        assert counts["ok"] > 100, counts
        print(f"SIGHUP under load: {counts['ok']} requests, {counts['failed']} failed")
        assert text.count("SIGHUP: routes file") == 5, text
        assert f"routes file {routes} reloaded: 1 hosts changed" in text, text
        change = f"route blog.example.com: +{b.address} -{a.address} (routes file {routes})"
        assert text.count(change) == 1, text
        assert b.requests, "no request reached the new upstream"
        # A bad file keeps the last good routes, with one line naming the error and its line.
        routes.write_text('{\n  "blog.example.com": [\n')
        os.kill(proc.pid, signal.SIGHUP)
        await _until(lambda: "keeping the last good routes" in proc.text(), 5, "the bad file line", proc.text)
        line = [x for x in proc.text().splitlines() if "keeping the last good routes" in x]
        assert len(line) == 1 and "line 3" in line[0], line
        assert (await _get(port))[0] == 200
        assert not WARNING.search(text), text
        os.kill(proc.pid, signal.SIGTERM)
        assert await proc.exitCode(timeout=10) == 0, proc.text()
    finally:
        for c in clients:
            if not c.isClosed:
                c.transport.abortConnection()
        proc.kill()
        await a.stop()
        await b.stop()


def deferToThreadLess(coroutine):  # type: ignore[no-untyped-def]
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coroutine)


@pytest_twisted.ensureDeferred
async def test_embedded_clean_start_route_line_and_second_instance(tmp_path: Path) -> None:
    """An embedded start logs no warning; a route change logs one line; a second instance on the taken port exits 1 with one line and never serves."""
    a = await UpstreamServer(echo).start()
    b = await UpstreamServer(echo).start()
    clientPort = free_port()
    dataDir = tmp_path / "etcd"
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--etcd", "embedded",
            "--etcd-client-port", str(clientPort), "--etcd-data-dir", str(dataDir)]
    proc = ProxyProcess(args, tmp_path)
    second = None
    try:
        await proc.listeningPort()
        await _until(lambda: "etcd: loaded 0 hosts" in proc.text(), 20, "the first load", proc.text)
        assert f"data in {dataDir}" in proc.text()
        added = await deferToThread(_revproxyctl, clientPort, "add", HOST.decode(), a.address)
        assert added.returncode == 0, added.stderr
        doc = tmp_path / "doc.json"
        doc.write_text(json.dumps({HOST.decode(): [b.address]}))
        imported = await deferToThread(_revproxyctl, clientPort, "import", str(doc))
        assert imported.returncode == 0, imported.stderr
        change = re.compile(
            rf"route blog\.example\.com: \+{re.escape(b.address)} -{re.escape(a.address)} \(revision \d+\)"
        )
        await _until(lambda: change.search(proc.text()), 5, "the route line", proc.text)
        assert len(change.findall(proc.text())) == 1
        assert f"route blog.example.com: +{a.address} (revision" in proc.text()

        # Started elsewhere, as from another directory: its own data directory.
        (tmp_path / "second").mkdir()
        secondArgs = args[:-1] + [str(tmp_path / "second" / "etcd")]
        # SIGHUP re-reads the routes from etcd and applies the difference.
        os.kill(proc.pid, signal.SIGHUP)
        await _until(lambda: "hosts changed" in proc.text() and "SIGHUP: re-listing etcd routes under /hosts/" in proc.text(),
                     5, "the re-list", proc.text)
        assert re.search(r"etcd: re-listed /hosts/ at revision \d+: 0 hosts changed", proc.text()), proc.text()
        second = ProxyProcess(secondArgs, tmp_path / "second")
        assert await second.exitCode(timeout=15) == 1, second.text()
        errors = [x for x in second.text().splitlines() if "revproxy:" in x]
        assert len(errors) == 1, second.text()
        assert f"client port 127.0.0.1:{clientPort} is taken" in errors[0]
        assert "starting on" not in second.text()
        assert "Traceback" not in second.text()

        text = proc.text()
        assert not WARNING.search(text), text
        os.kill(proc.pid, signal.SIGTERM)
        assert await proc.exitCode(timeout=15) == 0, proc.text()
        assert not WARNING.search(proc.text()), proc.text()
    finally:
        proc.kill()
        if second is not None:
            second.kill()
        for pid in _etcdPids(dataDir) + _etcdPids(tmp_path / "second"):
            os.kill(pid, signal.SIGKILL)
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_sigkill_of_proxy_leaves_no_etcd(tmp_path: Path) -> None:
    """A killed etcd is restarted with a line; SIGKILL of the proxy kills its etcd too: no etcd process remains."""
    dataDir = tmp_path / "etcd"
    proc = ProxyProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--etcd", "embedded",
         "--etcd-client-port", str(free_port()), "--etcd-data-dir", str(dataDir)],
        tmp_path,
    )
    try:
        await _until(lambda: "etcd: loaded 0 hosts" in proc.text(), 20, "the first load", proc.text)
        [first] = _etcdPids(dataDir)
        # A killed etcd is restarted, with a line saying so.
        os.kill(first, signal.SIGKILL)
        await _until(lambda: "embedded etcd killed by signal 9; restarting it" in proc.text(),
                     5, "the restart line", proc.text)
        await _until(lambda: _etcdPids(dataDir) not in ([], [first]), 10, "the restart", proc.text)
        proc.kill()  # SIGKILL
        killed = time.monotonic()
        await _until(lambda: not _etcdPids(dataDir), 5, "etcd's death", proc.text)
        assert time.monotonic() - killed < 2
    finally:
        proc.kill()
        for pid in _etcdPids(dataDir):
            os.kill(pid, signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_sighup_reopens_logfile(tmp_path: Path) -> None:
    """After the log file is moved away, SIGHUP reopens --logfile and logs there that it did."""
    up = await UpstreamServer(echo).start()
    logFile = tmp_path / "revproxy.log"
    proc = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", f"--logfile={logFile}", "revproxy",
         "--listen", "tcp:0:interface=127.0.0.1", "--route", f"blog.example.com={up.address}"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await _until(lambda: logFile.exists() and "starting on" in logFile.read_text(), 15, "start")
        logFile.rename(tmp_path / "revproxy.log.1")
        proc.send_signal(signal.SIGHUP)
        await _until(
            lambda: logFile.exists() and f"reopened log file {logFile}" in logFile.read_text(),
            5, "the reopened log",
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await up.stop()


PAGE = b"<html>\n<body>\n<h1>Not etcd</h1>\n</body>\n</html>\n"
HTML = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(PAGE)
) + PAGE


@pytest_twisted.ensureDeferred
async def test_endpoint_that_is_not_etcd(tmp_path: Path) -> None:
    """An --etcd endpoint that is an HTML server is reported as not etcd, in one line, without its body, by the proxy and revproxyctl."""
    web = await UpstreamServer(raw(HTML)).start()
    url = f"http://{web.address}"
    proc = ProxyProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--etcd", url, "--etcd-backoff", "0.2"], tmp_path
    )
    try:
        await _until(lambda: proc.text().count("is not etcd") >= 2, 10, "the not-etcd line", proc.text)
        assert "<html" not in proc.text() and "serves its gateway" not in proc.text(), proc.text()
        line = [x for x in proc.text().splitlines() if "is not etcd" in x][0]
        assert f"{url} is not etcd (it answered HTTP 200 to an etcd status request)" in line
        ctl = await deferToThread(
            subprocess.run,
            [sys.executable, "-m", "revproxy.ctl", "--etcd", url, "ls"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
        assert ctl.returncode == 1
        assert ctl.stderr == (
            f"revproxyctl: {url} is not etcd (it answered HTTP 200 to an etcd status request)\n"
        ), ctl.stderr
    finally:
        proc.kill()
        await web.stop()


@pytest_twisted.ensureDeferred
async def test_embedded_crash_loop_backs_off_then_exits_1(tmp_path: Path) -> None:
    """An etcd that keeps failing is logged with its reason, restarted after 1, 2, 4, 8 s, and the fifth failure ends the proxy with exit 1 and one line."""
    dataDir = tmp_path / "etcd"
    dataDir.mkdir()
    (dataDir / "member-data").write_text("not a directory")
    proc = ProxyProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--etcd", "embedded",
         "--etcd-client-port", str(free_port()), "--etcd-data-dir", str(dataDir)],
        tmp_path,
    )
    try:
        assert await proc.exitCode(timeout=40) == 1, proc.text()
        text = proc.text()
        delays = re.findall(r"embedded etcd exit status 1: .*not a directory; restarting it in (\S+)s", text)
        assert delays == ["1.0", "2.0", "4.0", "8.0"], text
        final = [x for x in text.splitlines() if "giving up" in x]
        assert len(final) == 1 and "failed 5 times in a row" in final[0], text
        assert "Traceback" not in text
    finally:
        proc.kill()
        for pid in _etcdPids(dataDir):
            os.kill(pid, signal.SIGKILL)
