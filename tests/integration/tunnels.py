"""
Helpers of the tunnel tests: a real C{twistd revproxy} process driven from
plain (synchronous) tests, a real WebSocket echo server (the C{websockets}
package) and a raw upstream that switches to a line protocol.  Each server
runs in threads of this process, on loopback port 0.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import socketserver
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from tests.integration.upstreams import ProxyProcess

MiB = 1 << 20


def waitFor(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Poll C{predicate} until it holds, for at most C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Proxy:
    """
    C{twistd -n revproxy ARGS} with an admin listener, from a sync test.
    """

    def __init__(self, args: list[str], outputDir: Path) -> None:
        self.process = ProxyProcess(
            ["--listen", "tcp:0:interface=127.0.0.1",
             "--admin", "tcp:0:interface=127.0.0.1", *args],
            outputDir,
        )
        self.pid = self.process.pid
        deadline = time.monotonic() + 20
        while True:
            text = self.process.text()
            proxy = re.search(r"ProxySite starting on (\d+)", text)
            admin = re.search(r"_?AdminSite starting on (\d+)", text)
            if proxy and admin:
                self.port = int(proxy.group(1))
                self.adminPort = int(admin.group(1))
                break
            if self.process.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the proxy did not start:\n{text}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.process.text()

    def rss(self) -> int:
        return self.process.rss()

    def peakRSS(self) -> int:
        """
        The process's peak resident set size (VmHWM), in bytes.
        """
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.adminPort}/metrics", timeout=5
        ) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """
        One sample of /metrics, 0 if it is absent.
        """
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        line = f"{name}{{{want}}} " if want else f"{name} "
        for text in self.metrics().splitlines():
            if text.startswith(line):
                return float(text.split()[-1])
        return 0.0

    def websocket(self, host: str, path: str = "/echo", **kw: object) -> ClientConnection:
        """
        A WebSocket client connected through the proxy with C{Host: host}.
        """
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        kw.setdefault("max_size", None)
        kw.setdefault("open_timeout", 10)
        kw.setdefault("close_timeout", 5)
        return connect(f"ws://{host}{path}", sock=sock, **kw)  # type: ignore[arg-type]

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def kill(self) -> None:
        self.process.kill()


class EchoServer:
    """
    A WebSocket server: C{/echo} echoes every message (and closes with
    4000 on the text C{close-me}); C{/flood} sends 1 MiB binary messages
    until the client goes, counting the bytes in L{flooded}.
    """

    def __init__(self) -> None:
        self.flooded = 0
        self.closes: list[int | None] = []
        self._server = serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        self.port = self._server.socket.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/flood":
                block = b"x" * MiB
                while True:
                    ws.send(block)
                    self.flooded += len(block)
            for message in ws:
                if message == "close-me":
                    ws.close(4000, "server closes")
                    break
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append(ws.close_code)

    def stop(self) -> None:
        self._server.shutdown()


class _LineHandler(socketserver.StreamRequestHandler):
    """
    One connection of L{LineServer}.
    """

    server: _LineTCPServer

    def handle(self) -> None:
        owner = self.server.owner
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline()
                if not line:
                    return
                head += line
            owner.heads.append(head)
            target = head.split(b" ", 2)[1]
            if target == b"/line":
                self.wfile.write(
                    b"HTTP/1.1 101 Switching Protocols\r\n"
                    b"Upgrade: line\r\nConnection: Upgrade\r\nX-Line: 1\r\n\r\n"
                )
                # Each line back upper-cased; at the client's end, BYE, then
                # a half-close.
                for line in iter(self.rfile.readline, b""):
                    self.wfile.write(line.upper())
                self.wfile.write(b"BYE\n")
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.recv(1)
                return
            body = b"no upgrade here" if target == b"/refuse" else json.dumps(
                {"head": head.decode("latin-1")}
            ).encode()
            code = b"426 Upgrade Required" if target == b"/refuse" else b"200 OK"
            self.wfile.write(
                b"HTTP/1.1 " + code + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )


class _LineTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LineServer


class LineServer:
    """
    A raw HTTP/1.1 upstream: C{/line} switches to a line protocol that
    upper-cases each line; C{/refuse} answers 426 and stays usable; any
    other target answers 200 with the request head it got, as JSON.
    """

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self._server = _LineTCPServer(("127.0.0.1", 0), _LineHandler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def readHead(sock: socket.socket) -> tuple[bytes, bytes]:
    """
    Read a response head from C{sock}: the head and what came after it.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def etcdPut(url: str, key: str, value: str = "") -> None:
    _etcd(url, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


def etcdDelete(url: str, key: str) -> None:
    _etcd(url, "/v3/kv/deleterange", {"key": _b64(key)})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _etcd(url: str, path: str, body: dict[str, str]) -> None:
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        r.read()
