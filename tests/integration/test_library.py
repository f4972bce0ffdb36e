"""
The library examples of README.rst run as written: each is a whole
program, taken from the README, that serves a C{RoutingProxyResource} from
its own Twisted program and routes a real request to a real upstream.

The examples listen on port 8080 and name the upstream C{127.0.0.1:4000}
and etcd C{http://127.0.0.1:2379}; the test changes only those to free
loopback ports before it runs them.
"""

from __future__ import annotations

import http.client
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.etcd_fixture import EtcdMember, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.rst"

_EXAMPLE = re.compile(
    r"^\.\. example: (?P<name>[\w-]+)\n\n\.\. code-block:: python\n\n(?P<code>(?:(?:    .*)?\n)+)",
    re.MULTILINE,
)


def examples() -> dict[str, str]:
    """
    The library examples of the README, by name, dedented.
    """
    found = {}
    for match in _EXAMPLE.finditer(README.read_text()):
        lines = match.group("code").splitlines()
        found[match.group("name")] = "\n".join(line[4:] for line in lines) + "\n"
    return found


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"upstream saw {self.headers['Host']} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    """
    A plain HTTP server on a free loopback port, in a thread.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(
    name: str, tmp_path: Path, upstream: str, etcd: str = "http://127.0.0.1:2379"
) -> tuple[subprocess.Popen[bytes], int]:
    """
    Start the README's example C{name} with the test's ports.
    """
    port = free_port()
    code = examples()[name]
    assert "8080" in code, f"{name} names no port"
    code = (
        re.sub(r"\b8080\b", str(port), code)
        .replace("http://127.0.0.1:2379", etcd)
        .replace("127.0.0.1:4000", upstream)
    )
    program = tmp_path / f"{name}.py"
    program.write_text(code)
    process = subprocess.Popen(
        [sys.executable, str(program)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return process, port


def get(port: int, host: str, path: str = "/hello?x=1") -> tuple[int, bytes]:
    """
    One request through the example's proxy.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def waitFor(
    process: subprocess.Popen[bytes], port: int, host: str, status: int = 200
) -> tuple[int, bytes]:
    """
    Send requests until one gets C{status} (the program is starting, or
    its routes are loading), for at most 15 seconds.
    """
    deadline = time.monotonic() + 15
    last: tuple[int, bytes] | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else b""
            pytest.fail(f"the example exited with {process.returncode}: {out[-2000:]!r}")
        try:
            last = get(port, host)
        except OSError:
            time.sleep(0.05)
            continue
        if last[0] == status:
            return last
        time.sleep(0.05)
    pytest.fail(f"no {status} from the example in time; last answer {last!r}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """
    Stop the example as an operator would, and wait for it.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_examplesPresent() -> None:
    """
    The README has the three library examples this module runs.
    """
    assert set(examples()) == {"static", "converter", "etcd"}


def test_staticTable(tmp_path: Path, upstream: str) -> None:
    """
    The static-table example routes its host to the upstream and answers
    404 for another host.
    """
    process, port = run("static", tmp_path, upstream)
    try:
        status, body = waitFor(process, port, "blog.example.com")
        assert body == b"upstream saw blog.example.com /hello?x=1\n"
        assert get(port, "other.example.com")[0] == 404
    finally:
        stop(process)


def test_hostConverter(tmp_path: Path, upstream: str) -> None:
    """
    The host-converter example sends every host its function maps to the
    upstream, and answers 404 where the function gives no upstream.
    """
    process, port = run("converter", tmp_path, upstream)
    try:
        status, body = waitFor(process, port, "a.example.com")
        assert body == b"upstream saw a.example.com /hello?x=1\n"
        assert get(port, "b.example.com")[1] == b"upstream saw b.example.com /hello?x=1\n"
        assert get(port, "example.org")[0] == 404
    finally:
        stop(process)


def test_etcdRoutes(tmp_path: Path, upstream: str, etcd: EtcdMember) -> None:
    """
    The etcd example follows the routes in etcd: a route added with
    revproxyctl takes effect while it runs.
    """
    process, port = run("etcd", tmp_path, upstream, etcd=etcd.url)
    try:
        waitFor(process, port, "blog.example.com", status=404)
        subprocess.run(
            [sys.executable, "-m", "revproxy.ctl", "--etcd", etcd.url, "add",
             "blog.example.com", upstream],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        status, body = waitFor(process, port, "blog.example.com")
        assert body == b"upstream saw blog.example.com /hello?x=1\n"
    finally:
        stop(process)
