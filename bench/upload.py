"""
A large upload through the proxy to a deliberately slow upstream: does the
proxy stream the request body (flat memory, flat disk) or spool it?

    python bench/upload.py                    # 2 GiB with Content-Length, upstream reads 50 MiB/s
    python bench/upload.py --chunked --size 512M
    python bench/upload.py --smoke            # 64 MiB; what CI runs; never judged

It starts a loopback upstream in this process that reads request bodies at
C{--rate} MiB/s at most (so that a streaming proxy must apply backpressure
to the client) and a fresh proxy (C{twistd -n revproxy --route} from this
tree, or C{--proxy-cmd}), pinned on its own CPU as bench/run.py does.  One
client sends C{--size} bytes as fast as the proxy takes them.  Every
C{--sample} seconds it reads the proxy's resident set (VmRSS in
/proc/PID/status), the disk used on the filesystems of /tmp and $TMPDIR
(statvfs), and the size of the files the proxy holds open that are
deleted (what a spool to an unlinked temporary file looks like).  At the
end it prints the largest growth of each, when the upstream got the first
body byte and when the client sent its last one.

The target of issue 10: RSS growth under 64 MiB and disk use flat on a
2 GiB upload.  Disk figures include whatever else the machine writes
meanwhile; the deleted-file figure is the proxy's alone.  Bounded by
C{--timeout}; only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from processes import (  # noqa: E402
    CpuPlan,
    Supervisor,
    freePort,
    memoryKiB,
    raiseFileLimit,
    waitListening,
)

MiB = 1024 * 1024
PIECE = b"u" * MiB


def parseSize(text: str) -> int:
    """
    A size in bytes, with an optional K, M or G suffix (powers of 1024).
    """
    match = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 64M or 2G")
    scale = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[match.group(2).upper()]
    return int(match.group(1)) * scale


@dataclass
class UpstreamLog:
    """
    What the slow upstream saw, times relative to the client's first byte.
    """

    firstBodyByte: float | None = None
    bodyBytes: int = 0
    done: float | None = None
    error: str | None = None


class SlowUpstream:
    """
    A one-request-per-connection HTTP/1.1 upstream that reads the body at
    most C{rate} bytes a second (Content-Length or chunked), then answers
    200.
    """

    def __init__(self, rate: float, epoch: list[float]) -> None:
        self.rate = rate
        self.epoch = epoch
        self.log = UpstreamLog()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.stopped = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv(self, conn: socket.socket, budget: list[float]) -> bytes:
        """
        Up to 64 KiB, no faster than the rate allows.
        """
        start, taken = budget
        due = start + taken / self.rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        data = conn.recv(65536)
        budget[1] += len(data)
        return data

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
            }
            if head.startswith(b"POST"):
                self._readBody(conn, headers, rest)
                self.log.done = time.monotonic() - self.epoch[0]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        except (OSError, ValueError) as e:
            self.log.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def _readBody(self, conn: socket.socket, headers: dict[bytes, bytes], rest: bytes) -> None:
        budget = [time.monotonic(), 0.0]
        log = self.log

        def got(n: int) -> None:
            if n and log.firstBodyByte is None:
                log.firstBodyByte = time.monotonic() - self.epoch[0]
            log.bodyBytes += n

        if b"content-length" in headers:
            left = int(headers[b"content-length"]) - len(rest)
            got(len(rest))
            while left > 0:
                data = self._recv(conn, budget)
                if not data:
                    raise ValueError("body cut short")
                got(len(data))
                left -= len(data)
            return
        # Chunked: parse the framing as it streams, count the data.
        buf = rest
        while True:
            while b"\r\n" not in buf:
                data = self._recv(conn, budget)
                if not data:
                    raise ValueError("chunked body cut short")
                buf += data
            line, _, buf = buf.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):
                    data = self._recv(conn, budget)
                    if not data:
                        return
                    buf += data
                return
            need = size + 2
            while need > 0:
                if not buf:
                    buf = self._recv(conn, budget)
                    if not buf:
                        raise ValueError("chunk cut short")
                take = min(need, len(buf))
                got(min(take, max(0, need - 2)))
                buf = buf[take:]
                need -= take


@dataclass
class ClientLog:
    lastByte: float | None = None
    status: int | None = None
    error: str | None = None
    sent: int = 0


def upload(port: int, size: int, chunked: bool, epoch: list[float], log: ClientLog) -> None:
    """
    Send a POST of C{size} bytes as fast as the proxy takes it, then read
    the status.
    """
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    head = b"POST /upload HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n" % (run.HOST.encode(), framing)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            epoch[0] = time.monotonic()
            s.sendall(head)
            left = size
            while left > 0:
                piece = PIECE if left >= len(PIECE) else PIECE[:left]
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                left -= len(piece)
                log.sent += len(piece)
            if chunked:
                s.sendall(b"0\r\n\r\n")
            log.lastByte = time.monotonic() - epoch[0]
            answer = s.recv(4096)
            if answer[:7] == b"HTTP/1." and answer[9:12].isdigit():
                log.status = int(answer[9:12])
            else:
                log.error = f"answer {answer[:80]!r}"
    except OSError as e:
        log.error = f"{type(e).__name__}: {e}"


def _diskUsed(paths: list[str]) -> dict[str, int]:
    """
    Bytes used on the filesystem of each path, one entry per filesystem.
    """
    used: dict[str, int] = {}
    seen: set[int] = set()
    for path in paths:
        try:
            device = os.stat(path).st_dev
            if device in seen:
                continue
            seen.add(device)
            st = os.statvfs(path)
        except OSError:
            continue
        used[path] = (st.f_blocks - st.f_bfree) * st.f_frsize
    return used


def _deletedFileBytes(pid: int) -> int:
    """
    The total size of the deleted files C{pid} holds open.
    """
    sizes: dict[tuple[int, int], int] = {}
    fds = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fds.iterdir())
    except OSError:
        return 0
    for fd in entries:
        try:
            if os.readlink(fd).endswith(" (deleted)"):
                st = os.stat(fd)
                # One file open twice counts once.
                sizes[(st.st_dev, st.st_ino)] = st.st_size
        except OSError:
            continue
    return sum(sizes.values())


@dataclass
class Samples:
    rssKiB: list[int] = field(default_factory=list)
    disk: dict[str, list[int]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parseSize, default=2 * 1024 * MiB, help="e.g. 64M, 2G")
    parser.add_argument("--rate", type=float, default=50.0, help="upstream reads MiB/s")
    parser.add_argument("--chunked", action="store_true", help="chunked, not Content-Length")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this")
    parser.add_argument("--proxy-cmd", help="command of the proxy, with {port} and {route}")
    parser.add_argument("--smoke", action="store_true", help="64 MiB; figures are not judged")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = 64 * MiB
    return args


def main(argv: list[str]) -> int:
    args = parseArguments(argv)
    started = time.monotonic()
    command, note = run.chooseProxy(args.proxy_cmd)
    cpus = CpuPlan.detect()
    if cpus.load is not None:
        os.sched_setaffinity(0, {cpus.load})
    workdir = Path(tempfile.mkdtemp(prefix="revproxy-upload-"))
    supervisor = Supervisor(workdir, raiseFileLimit(4096))
    epoch = [time.monotonic()]
    upstream = SlowUpstream(args.rate * MiB, epoch)
    client = ClientLog()
    samples = Samples()
    failed = False
    try:
        port = freePort()
        argvProxy = cpus.prefix(cpus.proxy) + shlex.split(
            command.format(port=port, route=f"{run.HOST}=127.0.0.1:{upstream.port}")
        )
        proxy = supervisor.start("proxy", argvProxy, cwd=run.REPO)
        waitListening(proxy, port)
        tmpPaths = sorted({"/tmp", os.environ.get("TMPDIR") or tempfile.gettempdir()})
        baseRss = memoryKiB(proxy.pid)[1]
        baseDisk = _diskUsed(tmpPaths)
        print(f"proxy: {note}: {command}")
        print(
            f"upload: {args.size / MiB:.0f} MiB, {'chunked' if args.chunked else 'Content-Length'}; "
            f"upstream reads {args.rate:g} MiB/s; pinning: {cpus.reason}",
            flush=True,
        )
        sender = threading.Thread(
            target=upload, args=(port, args.size, args.chunked, epoch, client), daemon=True
        )
        sender.start()
        deadline = time.monotonic() + args.timeout
        while sender.is_alive() and time.monotonic() < deadline:
            if proxy.popen.poll() is not None:
                client.error = f"the proxy exited with {proxy.popen.returncode}"
                break
            samples.rssKiB.append(memoryKiB(proxy.pid)[1])
            for path, used in _diskUsed(tmpPaths).items():
                samples.disk.setdefault(path, []).append(used)
            samples.deleted.append(_deletedFileBytes(proxy.pid))
            sender.join(args.sample)
        if sender.is_alive():
            client.error = f"not done after {args.timeout:g} s (--timeout)"
        took = time.monotonic() - epoch[0]
        log = upstream.log
        rssGrowth = (max(samples.rssKiB, default=baseRss) - baseRss) / 1024
        print(
            f"client: sent {client.sent / MiB:.0f} MiB, last byte at "
            + (f"{client.lastByte:.1f} s" if client.lastByte is not None else "-")
            + f", status {client.status}"
            + (f", error: {client.error}" if client.error else "")
        )
        print(
            "upstream: first body byte at "
            + (f"{log.firstBodyByte:.1f} s" if log.firstBodyByte is not None else "-")
            + f", got {log.bodyBytes / MiB:.0f} MiB"
            + (f", done at {log.done:.1f} s" if log.done is not None else "")
            + (f", error: {log.error}" if log.error else "")
        )
        print(f"proxy RSS: before {baseRss / 1024:.1f} MiB, max growth {rssGrowth:.1f} MiB")
        for path, values in samples.disk.items():
            growth = (max(values) - baseDisk.get(path, values[0])) / MiB
            print(f"disk used on {path}: max growth {growth:.1f} MiB (whole filesystem)")
        print(
            f"deleted files held open by the proxy: max {max(samples.deleted, default=0) / MiB:.1f} MiB"
        )
        if not args.smoke:
            diskFlat = max(samples.deleted, default=0) < 64 * MiB
            print(
                f"target (issue 10): RSS growth < 64 MiB: {'yes' if rssGrowth < 64 else 'NO'}; "
                f"no spool (deleted files < 64 MiB): {'yes' if diskFlat else 'NO'}"
            )
        print(f"took {took:.0f} s ({time.monotonic() - started:.0f} s with start-up)")
        failed = client.status is None
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: stopping everything", file=sys.stderr)
        failed = True
    except Exception as e:
        print(f"upload failed: {type(e).__name__}: {e}", file=sys.stderr)
        failed = True
    finally:
        supervisor.stopAll()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    survivors = supervisor.survivors()
    if survivors:
        print(f"NOT STOPPED: pids {[c.pid for c in survivors]}")
    return 1 if failed or survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
