"""
Integration test of C{--log-format json}: the real twistd, from this
checkout, writes one JSON object per line once it has started.
"""

from __future__ import annotations

import json

import pytest_twisted

from tests.integration.upstreams import (
    proxySession,
    request,
)

TWISTD_BANNER = ("starting up.", "reactor class: ")
"""twistd's own first two lines, logged as text before the plugin's services
start (see L{revproxy.ops.logs})."""


@pytest_twisted.ensureDeferred
async def test_json_log_lines(tmp_path):
    """With --log-format json every line after twistd's banner is a JSON object, and the access event carries its named fields."""
    async with proxySession(tmp_path, "blog.example.com", ["--log-format", "json"]) as (
        proc, client, up
    ):
        r = await client.send(
            request(b"GET", b"/a?q=1", b"blog.example.com", b"User-Agent: test/1")
        )
        assert r.code == 200, r

    lines = proc.text().splitlines()
    banner, records = lines[:2], lines[2:]
    for line, marker in zip(banner, TWISTD_BANNER):
        assert marker in line, lines
    for line in records:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{proc.text()}")
        assert isinstance(record, dict), line
    decoded = [json.loads(line) for line in records]
    access = [d for d in decoded if d.get("namespace") == "revproxy.access"]
    assert len(access) == 1, decoded
    event = access[0]
    assert event["level"] == "info"
    assert {k: event[k] for k in ("client", "method", "uri", "protocol", "status",
                                  "upstream", "user_agent")} == {
        "client": "127.0.0.1",
        "method": "GET",
        "uri": "/a?q=1",
        "protocol": "HTTP/1.1",
        "status": 200,
        "upstream": up.address,
        "user_agent": "test/1",
    }
    assert event["size"] == len(r.body)
    assert isinstance(event["duration"], float)
    assert '"GET /a?q=1 HTTP/1.1" 200' in event["text"]
    texts = [d["text"] for d in decoded]
    assert any("starting on" in t for t in texts), texts
    assert texts[-1] == "Server Shut Down.", texts
