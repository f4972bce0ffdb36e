"""
Integration tests of C{revproxyctl}: each runs C{python -m revproxy.ctl.main} in
a subprocess against a real etcd, and checks etcd's keys through its own
HTTP gateway.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.etcd_fixture import EtcdMember, free_port

ROOT = Path(__file__).resolve().parents[2]


def ctl(
    etcd_url: str, *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -m revproxy.ctl.main ARGS} with C{REVPROXY_ETCD} set, to its end.
    """
    env = {**os.environ, "REVPROXY_ETCD": etcd_url}
    env.pop("REVPROXY_PREFIX", None)
    return subprocess.run(
        [sys.executable, "-m", "revproxy.ctl", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def gateway(etcd: EtcdMember, method: str, body: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(
        f"{etcd.url}/v3/{method}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, object] = json.load(response)
        return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def keys(etcd: EtcdMember, prefix: bytes = b"/") -> dict[str, bytes]:
    """
    Every key under C{prefix} and its value, read from etcd directly.
    """
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    result = gateway(etcd, "kv/range", {"key": b64(prefix), "range_end": b64(end)})
    kvs = result.get("kvs") or []
    assert isinstance(kvs, list)
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
        for kv in kvs
    }


def put(etcd: EtcdMember, key: str, value: bytes = b"") -> None:
    gateway(etcd, "kv/put", {"key": b64(key.encode()), "value": b64(value)})


def revision(etcd: EtcdMember) -> int:
    header = gateway(etcd, "maintenance/status", {})["header"]
    assert isinstance(header, dict)
    return int(header["revision"])


def test_add_ls_rm(etcd: EtcdMember) -> None:
    """add writes the routes, ls lists them, rm removes an upstream and then the host."""
    out = ok(ctl(etcd.url, "add", "Blog.Example.com", "127.0.0.1:4000", "127.0.0.1:4001"))
    assert "+ blog.example.com 127.0.0.1:4000" in out
    assert keys(etcd) == {
        "/hosts/blog.example.com/127.0.0.1:4000": b"",
        "/hosts/blog.example.com/127.0.0.1:4001": b"",
    }
    ok(ctl(etcd.url, "add", "blog.example.com", "127.0.0.1:4001", "--weight", "3"))
    assert keys(etcd)["/hosts/blog.example.com/127.0.0.1:4001"] == b'{"weight": 3}'

    before = revision(etcd)
    result = ctl(etcd.url, "add", "blog.example.com", "127.0.0.1:4000")
    assert "already present" in ok(result)
    assert revision(etcd) == before

    table = ok(ctl(etcd.url, "ls")).splitlines()
    assert table[0].split() == ["HOST", "UPSTREAM", "WEIGHT"]
    assert [line.split() for line in table[1:]] == [
        ["blog.example.com", "127.0.0.1:4000", "1"],
        ["blog.example.com", "127.0.0.1:4001", "3"],
    ]
    assert json.loads(ok(ctl(etcd.url, "ls", "--json"))) == {
        "blog.example.com": ["127.0.0.1:4000", {"upstream": "127.0.0.1:4001", "weight": 3}]
    }

    ok(ctl(etcd.url, "rm", "blog.example.com", "http://127.0.0.1:4000"))
    assert list(keys(etcd)) == ["/hosts/blog.example.com/127.0.0.1:4001"]
    ok(ctl(etcd.url, "rm", "blog.example.com"))
    assert keys(etcd) == {}

    result = ctl(etcd.url, "rm", "blog.example.com")
    assert result.returncode == 1
    assert "no such host: blog.example.com" in result.stderr


def test_bad_arguments_write_nothing(etcd: EtcdMember) -> None:
    """A bad host or address exits 2 with one line on stderr, no traceback, nothing written."""
    for args in (["add", "bad host", "127.0.0.1:1"], ["add", "h", "127.0.0.1"],
                 ["add", "h", "127.0.0.1:1", "ftp://x:1"]):
        result = ctl(etcd.url, *args)
        assert result.returncode == 2, result
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert keys(etcd) == {}


def test_import_dry_run_writes_nothing(etcd: EtcdMember) -> None:
    """import --dry-run prints the diff and writes nothing."""
    put(etcd, "/hosts/old.example.com/127.0.0.1:4000")
    before = revision(etcd)
    document = json.dumps({"new.example.com": ["127.0.0.1:4001"]})
    out = ok(ctl(etcd.url, "import", "-", "--dry-run", "--replace", stdin=document))
    assert out.splitlines() == [
        "+ new.example.com 127.0.0.1:4001",
        "- old.example.com 127.0.0.1:4000",
        "dry run: 1 to add, 1 to remove, 0 to change; nothing was written",
    ]
    assert revision(etcd) == before


def test_import_bad_entry_writes_nothing(etcd: EtcdMember, tmp_path: Path) -> None:
    """An import with one bad entry among good ones exits 2 and writes nothing."""
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({
        "a.example.com": ["127.0.0.1:4000"],
        "b.example.com": ["127.0.0.1:4001", {"upstream": "127.0.0.1:4002", "weight": 0}],
        "c.example.com": ["127.0.0.1:4003"],
    }))
    result = ctl(etcd.url, "import", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"revproxyctl: {path}: host 'b.example.com', upstream #2: weight 0 is not "
        "a whole number of at least 1; nothing was written"
    ]
    assert keys(etcd) == {}


def test_import_replace(etcd: EtcdMember) -> None:
    """import sets the hosts in the file in one revision; --replace also removes the others."""
    put(etcd, "/hosts/keep.example.com/127.0.0.1:4000")
    put(etcd, "/hosts/a.example.com/127.0.0.1:4009")
    document = json.dumps({"a.example.com": ["127.0.0.1:4001"], "b.example.com": ["127.0.0.1:4002"]})
    before = revision(etcd)
    ok(ctl(etcd.url, "import", "-", stdin=document))
    assert revision(etcd) == before + 1
    assert sorted(keys(etcd)) == [
        "/hosts/a.example.com/127.0.0.1:4001",
        "/hosts/b.example.com/127.0.0.1:4002",
        "/hosts/keep.example.com/127.0.0.1:4000",
    ]
    ok(ctl(etcd.url, "import", "-", "--replace", stdin=document))
    assert sorted(keys(etcd)) == [
        "/hosts/a.example.com/127.0.0.1:4001",
        "/hosts/b.example.com/127.0.0.1:4002",
    ]


def test_export_import_round_trip(etcd: EtcdMember) -> None:
    """export then import into another prefix reproduces every route and weight."""
    put(etcd, "/hosts/a.example.com/127.0.0.1:4000")
    put(etcd, "/hosts/a.example.com/http://127.0.0.1:4001", b'{"weight": 5}')
    put(etcd, "/hosts/*.example.com/https://backend:8443/base")
    put(etcd, "/hosts/*/[::1]:80", b'{"weight": 2}')
    exported = ok(ctl(etcd.url, "export"))
    ok(ctl(etcd.url, "--prefix", "/copy/", "import", "-", stdin=exported))
    assert json.loads(ok(ctl(etcd.url, "--prefix", "/copy", "export"))) == json.loads(exported)
    assert json.loads(exported)["a.example.com"] == [
        "127.0.0.1:4000", {"upstream": "127.0.0.1:4001", "weight": 5}
    ]
    # Importing the export over the original changes nothing.
    before = revision(etcd)
    assert ok(ctl(etcd.url, "import", "-", "--replace", stdin=exported)) == "nothing to change\n"
    assert revision(etcd) == before


def test_transaction_limit(etcd: EtcdMember) -> None:
    """A change above 128 operations is refused naming the limit, and etcd's own refusal too."""
    document = json.dumps({f"h{i}.example.com": ["127.0.0.1:4000"] for i in range(129)})
    result = ctl(etcd.url, "import", "-", stdin=document)
    assert result.returncode == 1
    assert "limit of 128" in result.stderr and "--max-txn-ops" in result.stderr
    result = ctl(etcd.url, "--max-txn-ops", "200", "import", "-", stdin=document)
    assert result.returncode == 1
    assert "more than etcd allows" in result.stderr, result.stderr
    assert keys(etcd) == {}


def test_unreachable(tmp_path: Path) -> None:
    """An unreachable etcd exits 1 quickly with one line naming the endpoint."""
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = ctl(url, "ls")
    assert result.returncode == 1
    assert result.stderr.startswith(f"revproxyctl: cannot reach etcd: {url}"), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert time.monotonic() - started < 5


def test_unresponsive() -> None:
    """An etcd that accepts but never answers exits 1 after --timeout, naming the endpoint."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        result = ctl(url, "--timeout", "1", "add", "h", "127.0.0.1:1")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert url in result.stderr and "Timeout" in result.stderr, result.stderr
    assert 1 <= elapsed < 5


class Lines:
    """
    Read a subprocess's output line by line with a deadline.
    """

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.selector = selectors.DefaultSelector()
        assert process.stdout is not None and process.stderr is not None
        self.selector.register(process.stdout, selectors.EVENT_READ, "out")
        self.selector.register(process.stderr, selectors.EVENT_READ, "err")
        self.seen: dict[str, list[str]] = {"out": [], "err": []}

    def wait_for(self, stream: str, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen[stream]:
                if text in line:
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} on {stream} in {timeout}s: {self.seen}")
            for key, _ in self.selector.select(remaining):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if line:
                    self.seen[key.data].append(line.rstrip("\n"))


@pytest.fixture
def watcher(etcd: EtcdMember) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "revproxy.ctl", "--etcd", etcd.url, "watch"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_watch(etcd: EtcdMember, watcher: subprocess.Popen[str]) -> None:
    """watch prints an add and a removal made by another client, and exits 0 on SIGTERM."""
    put(etcd, "/hosts/before.example.com/127.0.0.1:4000")
    lines = Lines(watcher)
    lines.wait_for("err", "watching /hosts/ from revision")
    ok(ctl(etcd.url, "add", "blog.example.com", "127.0.0.1:4000", "--weight", "2"))
    line = lines.wait_for("out", "blog.example.com")
    assert line.startswith("+ blog.example.com 127.0.0.1:4000 weight=2 revision=")
    ok(ctl(etcd.url, "rm", "before.example.com"))
    lines.wait_for("out", "- before.example.com 127.0.0.1:4000 revision=")
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(10) == 0
    assert "Traceback" not in "\n".join(lines.seen["err"])


def test_interrupted() -> None:
    """A command cut short by SIGTERM exits 130 saying whether a change may have been applied."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "revproxy.ctl", "--etcd", url, "rm", "h"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Wait until it has connected and sent its request.
        connection, _ = listener.accept()
        with connection:
            connection.recv(1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 130
    assert process.stderr is not None
    assert process.stderr.read() == (
        "revproxyctl: interrupted; the change may or may not have been applied: "
        "check with ls\n"
    )
