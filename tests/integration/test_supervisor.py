"""
Integration test of C{contrib/supervisord.conf}: the proxy run by a real
supervisord with that file's C{[program:revproxy]} section, routing
requests, then stopped with C{supervisorctl stop} while a request is in
flight: the request completes and supervisor sees a clean exit.

Also checks C{contrib/revproxy.service}'s stop settings, and the unit with
C{systemd-analyze verify} where that tool exists (no systemd is run).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from tests.integration.upstreams import (
    ROOT,
    TWISTD,
    HTTPClient,
    UpstreamConnection,
    UpstreamRequest,
    UpstreamServer,
    delayed,
    echo,
    loggedListeningPort,
    request,
)

CONTRIB = ROOT / "contrib" / "supervisord.conf"
UNIT = ROOT / "contrib" / "revproxy.service"
HOST = "blog.example.com"
SLOW = 2.0
"""Seconds the upstream takes to answer /slow."""


def programSection(upstream: str) -> str:
    """
    contrib's C{[program:revproxy]} section for this test: twistd is this
    interpreter's, run from the checkout, listening on a free loopback port,
    with one route to C{upstream}, as the current user.  Every other line is
    kept as it is.
    """
    text = CONTRIB.read_text()
    match = re.search(r"^\[program:revproxy\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert match, "contrib/supervisord.conf has no [program:revproxy] section"
    lines = ["[program:revproxy]"]
    for line in match.group(1).splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith(";"):
            lines.append(line)
        elif key == "command":
            lines.append("command=" + shlex.join(_command(shlex.split(value), upstream)))
        elif key == "directory":
            lines.append(f"directory={ROOT}")
        elif key == "user":
            lines.append(f"user={pwd.getpwuid(os.getuid()).pw_name}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _command(argv: list[str], upstream: str) -> list[str]:
    assert Path(argv[0]).name == "twistd", argv
    command = list(TWISTD)
    args = iter(argv[1:])
    for arg in args:
        if arg == "--port":
            next(args)
            command += ["--listen", "tcp:0:interface=127.0.0.1"]
        elif arg == "--route":
            next(args)
            command += ["--route", f"{HOST}={upstream}"]
        else:
            command.append(arg)
    return command


def setting(section: str, key: str) -> str:
    match = re.search(rf"^{key}=(.*)$", section, re.M)
    assert match, (key, section)
    return match.group(1).strip()


def supervisordConf(directory: Path, program: str) -> Path:
    """
    A complete supervisord configuration in C{directory}: control socket,
    log and pid file there, in the foreground, and C{program}.
    """
    conf = directory / "supervisord.conf"
    conf.write_text(
        f"""\
[unix_http_server]
file={directory}/supervisor.sock

[supervisord]
nodaemon=true
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
childlogdir={directory}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{directory}/supervisor.sock

{program}"""
    )
    return conf


class Supervisorctl:
    """
    C{supervisorctl -c CONF ARGS}, run without blocking the reactor.
    """

    def __init__(self, conf: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def result(self, timeout: float = 20) -> tuple[int, str]:
        """
        Its exit code and output; killed after C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        if self.process.poll() is None:
            self.process.kill()
            output = self.process.communicate(timeout=5)[0]
            raise AssertionError(f"supervisorctl did not finish in {timeout} s: {output}")
        return self.process.returncode, self.process.communicate(timeout=5)[0]


async def supervisorctl(conf: Path, *args: str) -> tuple[int, str]:
    return await Supervisorctl(conf, *args).result()


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _isRevproxy(pid: int) -> bool:
    try:
        return b"revproxy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def slowOnSlash(conn: UpstreamConnection, req: UpstreamRequest) -> None:
    """
    Answer /slow after L{SLOW} seconds, anything else at once, as L{echo}.
    """
    (delayed(SLOW, echo) if req.target == b"/slow" else echo)(conn, req)


def test_contrib_stop_waits_longer_than_the_drain():
    """contrib's supervisor program gives the proxy more time to stop than its drain timeout, with SIGTERM."""
    section = programSection("127.0.0.1:1")
    argv = shlex.split(setting(section, "command"))
    drain = float(argv[argv.index("--drain-timeout") + 1])
    assert float(setting(section, "stopwaitsecs")) > drain
    assert setting(section, "stopsignal") == "TERM"
    assert setting(section, "stdout_logfile") == "/dev/stdout"
    assert setting(section, "stdout_logfile_maxbytes") == "0"
    assert setting(section, "redirect_stderr") == "true"


def test_systemd_unit(tmp_path):
    """contrib's systemd unit runs twistd in the foreground, stops it with SIGTERM, waits longer than the drain, and verifies."""
    text = UNIT.read_text()
    argv = setting(text, "ExecStart").split()
    assert argv[1:4] == ["-n", "--pidfile=", "revproxy"], argv
    drain = float(argv[argv.index("--drain-timeout") + 1])
    assert float(setting(text, "TimeoutStopSec")) > drain
    assert setting(text, "KillSignal") == "SIGTERM"
    assert setting(text, "Type") == "simple"
    assert setting(text, "Restart") == "on-failure"
    assert setting(text, "ExecReload") == "/bin/kill -HUP $MAINPID"
    analyze = shutil.which("systemd-analyze")
    twistd = Path(sys.executable).parent / "twistd"
    if analyze is None or not twistd.exists():
        return
    # verify checks that the ExecStart binary exists: use this venv's twistd.
    unit = tmp_path / "revproxy.service"
    unit.write_text(text.replace(argv[0], str(twistd)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "revproxy.service" not in result.stdout + result.stderr, result


@pytest_twisted.ensureDeferred
async def test_supervisorctl_stop_drains_inflight_request(tmp_path):
    """Under supervisord, requests are routed; supervisorctl stop lets an in-flight request finish with 200 and supervisor sees exit status 0."""
    # A unix socket path must fit in 108 bytes.
    directory = tmp_path
    if len(str(tmp_path / "supervisor.sock")) > 100:
        directory = Path(tempfile.mkdtemp(prefix="rp-sv-"))
    up = await UpstreamServer(slowOnSlash).start()
    conf = supervisordConf(directory, programSection(up.address))
    output = directory / "supervisord.out"
    log = directory / "supervisord.log"
    with open(output, "ab") as out:
        supervisord = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def logs() -> str:
        texts = [p.read_text(errors="replace") if p.exists() else "" for p in (output, log)]
        return "\n--- supervisord.log ---\n".join(texts)

    revproxyPid = None
    client = None
    try:
        # Up: supervisor says RUNNING once the proxy has lived for startsecs.
        deadline = time.monotonic() + 20
        status = ""
        while time.monotonic() < deadline:
            code, status = await supervisorctl(conf, "status", "revproxy")
            if "RUNNING" in status:
                break
            assert supervisord.poll() is None, logs()
            await deferLater(reactor, 0.2, lambda: None)
        assert "RUNNING" in status, f"{status}\n{logs()}"
        revproxyPid = int(re.search(r"pid (\d+)", status).group(1))
        port = await loggedListeningPort(
            lambda: output.read_text(errors="replace"), lambda: False
        )

        # Requests are routed.
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, HTTPClient())
        r = await client.send(request(b"GET", b"/fast", HOST.encode()))
        assert r.code == 200, r
        assert r.json()["target"] == "/fast"
        assert r.json()["port"] == up.port

        # Stop during an in-flight request.
        response = client.send(request(b"GET", b"/slow", HOST.encode()), timeout=15)
        deadline = time.monotonic() + 5
        while len(up.requests) < 2 and time.monotonic() < deadline:
            await deferLater(reactor, 0.02, lambda: None)
        assert up.requests[-1].target == b"/slow", "the request did not reach the upstream"
        stopping = time.monotonic()
        stop = Supervisorctl(conf, "stop", "revproxy")
        try:
            r = await response
        except Exception as e:
            raise AssertionError(f"the in-flight request failed ({e}):\n{logs()}") from e
        assert r.code == 200, r
        assert r.json()["target"] == "/slow"
        code, said = await stop.result()
        assert code == 0, f"{said}\n{logs()}"
        assert "revproxy: stopped" in said, said
        assert time.monotonic() - stopping < float(setting(conf.read_text(), "stopwaitsecs"))

        # Supervisor saw a clean exit, not a kill or a signal.
        code, status = await supervisorctl(conf, "status", "revproxy")
        assert "STOPPED" in status, status
        deadline = time.monotonic() + 5
        while "stopped: revproxy (exit status 0)" not in log.read_text() and (
            time.monotonic() < deadline
        ):
            await deferLater(reactor, 0.05, lambda: None)
        assert "stopped: revproxy (exit status 0)" in log.read_text(), logs()
        assert "Server Shut Down." in logs(), logs()
        assert "Traceback" not in logs(), logs()
    finally:
        if client is not None and not client.isClosed:
            client.transport.abortConnection()
            await client.closed
        if supervisord.poll() is None:
            # supervisord stops its programs on SIGTERM, within stopwaitsecs.
            _kill(supervisord.pid, signal.SIGTERM)
            try:
                supervisord.wait(20)
            except subprocess.TimeoutExpired:
                _kill(supervisord.pid, signal.SIGKILL)
                supervisord.wait(5)
                if revproxyPid is not None and _isRevproxy(revproxyPid):
                    _kill(revproxyPid, signal.SIGKILL)
        if directory != tmp_path:
            shutil.rmtree(directory, ignore_errors=True)
        await up.stop()
