"""
Integration tests of the C{twistd revproxy} command: argument errors, a
port that cannot be bound, draining on SIGTERM and the plugin's discovery.
Each runs the real twistd in a subprocess, from this checkout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.plugin import getPlugins

from tests.integration.upstreams import (
    ROOT,
    TWISTD,
    HTTPClient,
    ProxyProcess,
    UpstreamServer,
    delayed,
    echo,
    endSession,
    request,
)

ROUTE = "blog.example.com=127.0.0.1:4000"


def twistd(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd -n --pidfile= revproxy ARGS} to its end (bounded).
    """
    return subprocess.run(
        TWISTD + ["-n", "--pidfile=", "revproxy", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def lastLine(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize(
    "args, named",
    [
        (["--port", "notaport", "--route", ROUTE], ["--port", "notaport"]),
        (["--port", "70000", "--route", ROUTE], ["--port", "70000"]),
        (["--route", "nonsense"], ["--route", "nonsense"]),
        (["--route", "blog.example.com=127.0.0.1"], ["--route", "port"]),
        (["--upstream", "ftp://x"], ["--upstream", "ftp"]),
        (["--balance", "sideways", "--route", ROUTE], ["--balance", "sideways"]),
        (["--timeout", "-1", "--route", ROUTE], ["--timeout"]),
        ([], ["--route"]),
    ],
)
def test_bad_arguments_exit_nonzero_naming_the_option(args, named):
    """A bad argument makes twistd exit non-zero with a one-line error naming the option, no traceback."""
    result = twistd("--listen", "tcp:0:interface=127.0.0.1", *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    error = lastLine(output)
    for word in named:
        assert word in error, (word, error)


def test_bound_port_fails_startup_cleanly():
    """A port already in use makes start-up fail with a non-zero exit and a clear message, no traceback."""
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = twistd("--listen", f"tcp:{port}:interface=127.0.0.1", "--route", ROUTE)
    finally:
        taken.close()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert str(port) in output, output
    assert "already in use" in output.lower(), output
    assert "Traceback" not in output, output


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_inflight_request(tmp_path):
    """SIGTERM lets an in-flight request finish with 200, refuses new connections and exits 0."""
    up = await UpstreamServer(delayed(2, echo)).start()
    proc = ProxyProcess(
        [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--drain-timeout",
            "8",
            "--route",
            f"blog.example.com={up.address}",
        ],
        tmp_path,
    )
    client = None
    try:
        port = await proc.listeningPort()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, HTTPClient())
        response = client.send(
            request(b"GET", b"/slow", b"blog.example.com"), timeout=15
        )
        deadline = time.monotonic() + 5
        while not up.requests and time.monotonic() < deadline:
            await deferLater(reactor, 0.02, lambda: None)
        assert up.requests, "the request did not reach the upstream"
        signaled = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)

        # New connections are refused once the signal is handled.
        refused = False
        while time.monotonic() < signaled + 1.5:
            await deferLater(reactor, 0.1, lambda: None)
            try:
                late = await connectProtocol(endpoint, HTTPClient())
            except ConnectionRefusedError:
                refused = True
                break
            late.transport.abortConnection()
        assert refused, "the proxy still accepts connections after SIGTERM"

        try:
            r = await response
        except Exception as e:
            raise AssertionError(
                f"the in-flight request failed ({e}); proxy log:\n{proc.text()}"
            ) from e
        assert r.code == 200, r
        assert r.json()["target"] == "/slow"
        code = await proc.exitCode(timeout=10)
        # twistd would re-raise the signal after a clean shutdown; the drain
        # makes a drained SIGTERM exit 0, as supervisor and systemd expect.
        assert code == 0, proc.text()
        assert "Server Shut Down." in proc.text(), proc.text()
        assert time.monotonic() - signaled < 8 + 2
        assert "Traceback" not in proc.text(), proc.text()
    finally:
        await endSession(client, proc, up)


def test_plugin_is_listed():
    """twistd's plugin discovery lists revproxy."""
    names = [p.tapname for p in getPlugins(IServiceMaker)]
    assert "revproxy" in names, names
