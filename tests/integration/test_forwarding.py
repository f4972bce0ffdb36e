"""
Integration tests of the forwarding headers, request ids and the access
log: the real twistd, from this checkout, in front of a real loopback echo
upstream that reports the header lines it saw.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.integration.test_cli import lastLine, twistd
from tests.integration.upstreams import (
    ProxyProcess,
    proxySession,
    request,
)

HOST = b"blog.example.com"
SPOOFED = (
    b"X-Forwarded-For: 203.0.113.9",
    b"X-Forwarded-Host: evil.example",
    b"X-Forwarded-Proto: https",
    b"X-Forwarded-Port: 443",
    b"Forwarded: for=203.0.113.9",
    b"X-Real-IP: 203.0.113.9",
    b"X-Request-Id: chosen-by-client",
    b"Transfer_Encoding: chunked",
    b"X_Secret: s",
    b"Connection: Host, X-Forwarded-For, X-Hop",
    b"X-Hop: gone",
)
ID = re.compile(r"^[0-9a-f]{16}$")


async def _session(tmp_path: Path, args: list[str], requests: list[bytes]):
    """
    Run the proxy with C{args} in front of an echo upstream, send
    C{requests} on one connection, stop it with SIGTERM; the responses and
    the process.
    """
    async with proxySession(tmp_path, HOST.decode(), args) as (proc, client, up):
        responses = [await client.send(r) for r in requests]
    return responses, proc, up


def _seen(response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


@pytest_twisted.ensureDeferred
async def test_untrusted_client(tmp_path):
    """By default a client's forwarding headers are replaced or dropped, underscore names and Connection tricks do not reach the upstream, and every response (a 404 too) carries a new request id, which the access log (standard output) shows."""
    responses, proc, up = await _session(
        tmp_path, [],
        [request(b"GET", b"/a", HOST, *SPOOFED),
         request(b"GET", b"/b", b"nowhere.example", b"X-Request-Id: mine")],
    )
    ok, missing = responses
    assert ok.code == 200 and missing.code == 404
    seen = _seen(ok)
    assert seen["host"] == [HOST.decode()]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == [HOST.decode()]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-port"] == [str(proc_port(proc))]
    for name in ("forwarded", "x-real-ip", "transfer_encoding", "x_secret", "x-hop"):
        assert name not in seen, (name, seen)
    [rid] = seen["x-request-id"]
    assert ID.match(rid), rid
    assert ok.header(b"x-request-id") == [rid.encode()]
    [rid404] = missing.header(b"x-request-id")
    assert ID.match(rid404.decode()) and rid404.decode() != rid
    lines = [line for line in proc.text().splitlines() if "request_id=" in line]
    assert len(lines) == 2, proc.text()
    assert lines[0].startswith('127.0.0.1 - - ['), lines
    assert '"GET /a HTTP/1.1" 200 ' in lines[0] and lines[0].endswith(f"request_id={rid}")
    assert lines[1].endswith(f"request_id={rid404.decode()}"), lines
    # twistd's lines and the access lines share standard output, whole.
    for line in proc.text().splitlines():
        assert re.match(r"\d{4}-\d\d-\d\dT|127\.0\.0\.1 - - \[", line), line


def proc_port(proc: ProxyProcess) -> int:
    return int(re.search(r"starting on (\d+)", proc.text()).group(1))


@pytest_twisted.ensureDeferred
async def test_trusted_proxy_and_forwarded(tmp_path):
    """From a trusted proxy the forwarding headers and a valid request id are kept, the peer appended; --forwarded adds this proxy's element; --access-log FILE gets the line."""
    log = tmp_path / "access.log"
    responses, proc, up = await _session(
        tmp_path,
        ["--trusted-proxies", "10.0.0.0/8,127.0.0.1", "--forwarded",
         "--access-log", str(log), "--allow-underscore-headers"],
        [request(b"GET", b"/a", HOST, *SPOOFED[:6], b"X-Request-Id: abc-123",
                 b"X_Secret: s")],
    )
    [ok] = responses
    seen = _seen(ok)
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-host"] == ["evil.example"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-port"] == ["443"]
    assert seen["x-real-ip"] == ["203.0.113.9"]
    assert seen["forwarded"] == [
        f"for=203.0.113.9, for=127.0.0.1;by=127.0.0.1;host={HOST.decode()};proto=http"
    ]
    assert seen["x-request-id"] == ["abc-123"]
    assert seen["x_secret"] == ["s"]
    assert ok.header(b"x-request-id") == [b"abc-123"]
    [line] = log.read_text().splitlines()
    assert line.endswith("request_id=abc-123") and '"GET /a HTTP/1.1" 200' in line
    assert "request_id=" not in proc.text()


@pytest_twisted.ensureDeferred
async def test_json_access_log_has_request_id(tmp_path):
    """With --log-format json the access line is a JSON object on standard output with its named fields and request_id."""
    responses, proc, up = await _session(
        tmp_path, ["--log-format", "json"], [request(b"GET", b"/j", HOST)]
    )
    [ok] = responses
    [rid] = ok.header(b"x-request-id")
    records = [json.loads(x) for x in proc.text().splitlines()[2:]]
    [access] = [r for r in records if r.get("namespace") == "revproxy.access"]
    assert access["request_id"] == rid.decode()
    assert (access["uri"], access["status"], access["level"]) == ("/j", 200, "info")


@pytest_twisted.ensureDeferred
async def test_access_log_file_reopened_on_sighup(tmp_path):
    """SIGHUP writes what is held and reopens the --access-log file, so that logrotate's rename works."""
    log = tmp_path / "access.log"
    async with proxySession(tmp_path, HOST.decode(), ["--access-log", str(log)]) as (
        proc, client, _
    ):
        assert (await client.get(b"/one", HOST)).code == 200
        log.rename(tmp_path / "access.log.1")
        os.kill(proc.pid, signal.SIGHUP)
        for _ in range(100):
            if "reopened access log" in proc.text():
                break
            await deferLater(reactor, 0.05, lambda: None)
        assert f"reopened access log {log}" in proc.text(), proc.text()
        assert (await client.get(b"/two", HOST)).code == 200
    assert '"GET /one HTTP/1.1"' in (tmp_path / "access.log.1").read_text()
    [line] = log.read_text().splitlines()
    assert '"GET /two HTTP/1.1"' in line


def test_bad_trusted_proxies_is_one_line():
    """A bad --trusted-proxies exits 2 with one line naming the option and the value."""
    result = twistd("--listen", "tcp:0:interface=127.0.0.1", "--route", "a=127.0.0.1:1",
                    "--trusted-proxies", "10.0.0.0/8,banana")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "--trusted-proxies: 'banana' is not an IP network" in lastLine(output), output


@pytest_twisted.ensureDeferred
async def test_channel_refusal_has_request_id(tmp_path):
    """A request the channel refuses (HTTP/1.2: 505) gets a new X-Request-Id, and the JSON log line of the refusal names it."""
    responses, proc, up = await _session(
        tmp_path, ["--log-format", "json"],
        [b"GET / HTTP/1.2\r\nHost: blog.example.com\r\n\r\n"],
    )
    [refused] = responses
    assert refused.code == 505
    [rid] = refused.header(b"x-request-id")
    assert ID.match(rid.decode()), rid
    records = [json.loads(x) for x in proc.text().splitlines()[2:]]
    [event] = [r for r in records if r["text"].startswith("refused a request")]
    assert event["request_id"] == rid.decode()
    assert up.requests == []
