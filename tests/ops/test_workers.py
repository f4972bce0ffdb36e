"""
Tests for L{revproxy.ops.workers} and the C{--workers} option.
"""

from __future__ import annotations

import socket

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.workers import (
    cpuCount,
    parseListen,
    workerCommand,
    workerEnvironment,
    workerOptions,
)
from revproxy.tap import Options, makeService


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        Without --workers there is one process: makeService builds the proxy
        itself.
        """
        o = _parse("--route", "a=h:1")
        self.assertEqual(o["workers"], 1)
        tree = makeService(o, reactor=MemoryReactorClock())
        self.assertIsNotNone(tree.getServiceNamed("drain"))  # type: ignore[attr-defined]

    def test_numberAndAuto(self) -> None:
        """
        --workers takes a number from 1 to 256 or auto, the CPUs this
        process may use.
        """
        self.assertEqual(_parse("--route", "a=h:1", "--workers", "4")["workers"], 4)
        self.assertEqual(_parse("--route", "a=h:1", "--workers", "auto")["workers"], cpuCount())
        for bad in ("0", "-1", "257", "two", ""):
            with self.assertRaises(UsageError) as cm:
                _parse("--route", "a=h:1", "--workers", bad)
            self.assertIn("--workers:", str(cm.exception))
            self.assertNotIn("\n", str(cm.exception))

    def test_onlyTCPListeners(self) -> None:
        """
        Workers share tcp: and tcp6: listeners; any other is refused in one
        line.
        """
        with self.assertRaises(UsageError) as cm:
            _parse("--route", "a=h:1", "--workers", "2", "--listen", "unix:/tmp/x.sock")
        self.assertIn("only tcp: and tcp6:", str(cm.exception))
        _parse("--route", "a=h:1", "--workers", "1", "--listen", "unix:/tmp/x.sock")

    def test_parentTree(self) -> None:
        """
        With more than one worker, makeService builds the parent: sockets,
        the supervisor, SIGHUP; no proxy of its own.
        """
        o = _parse("--route", "a=h:1", "--workers", "2", "--port", "0")
        tree = makeService(o, reactor=MemoryReactorClock())
        assert isinstance(tree, MultiService)
        names = {s.name for s in tree}
        self.assertEqual(names, {"listening-sockets", "workers", "sighup"})
        self.assertEqual(tree.getServiceNamed("workers").count, 2)  # type: ignore[attr-defined]

    def test_workerCommand(self) -> None:
        """
        A worker runs twistd revproxy with the parent's revproxy arguments,
        logging JSON.
        """
        o = _parse("--route", "a=h:1", "--workers", "2")
        command = workerCommand(o)
        self.assertEqual(command[-5:], ["revproxy", "--route", "a=h:1", "--workers", "2"])
        self.assertIn("revproxy.ops.workers.workerLogObserver", command)


class ListenTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        tcp: and tcp6: descriptions give family, interface, port and backlog.
        """
        b = parseListen("tcp:8080:interface=127.0.0.1:backlog=100")
        self.assertEqual((b.family, b.interface, b.port, b.backlog),
                         (socket.AF_INET, "127.0.0.1", 8080, 100))
        b = parseListen("tcp6:port=80:interface=\\:\\:1")
        self.assertEqual((b.family, b.interface, b.port), (socket.AF_INET6, "::1", 80))
        self.assertEqual(parseListen("tcp:0").interface, "")
        for bad in ("ssl:443", "tcp:x", "tcp:80:foo=1", "unix:/a"):
            with self.assertRaises(UsageError):
                parseListen(bad)

    def test_bind(self) -> None:
        """
        The parent's socket listens; with reusePort it only holds the port.
        """
        shared = parseListen("tcp:0:interface=127.0.0.1").bind()
        self.addCleanup(shared.close)
        self.assertEqual(shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        held = parseListen("tcp:0:interface=127.0.0.1").bind(reusePort=True)
        self.addCleanup(held.close)
        self.assertEqual(held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 0)
        self.assertEqual(held.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1)


class WorkerEnvironmentTests(SynchronousTestCase):
    def test_notAWorker(self) -> None:
        """
        Without REVPROXY_WORKER the process is no worker.
        """
        self.assertIsNone(workerEnvironment({}))

    def test_worker(self) -> None:
        """
        A worker's options leave logs to its observer, serve admin on its Unix socket and run
        no embedded etcd.
        """
        w = workerEnvironment({
            "REVPROXY_WORKER": "2", "REVPROXY_LISTEN_FDS": "3,4",
            "REVPROXY_WORKER_ADMIN": "/tmp/w2.sock", "REVPROXY_PARENT_PID": "0",
        })
        assert w is not None
        self.assertEqual((w.number, w.fds, w.reusePort), (2, (3, 4), False))
        o = workerOptions({"admin": None, "embedded-etcd": ("etcd", "d", 1)}, w)
        self.assertEqual(o["admin"], "unix:/tmp/w2.sock:mode=600")
        self.assertEqual(o["log-format"], "text")
        self.assertIsNone(o["embedded-etcd"])


class WorkerLogTests(SynchronousTestCase):
    def _line(self, logFormat: str) -> str:
        import io
        import os

        from twisted.logger import LogLevel

        from revproxy.ops.workers import workerLogObserver

        saved = {k: os.environ.get(k) for k in ("REVPROXY_WORKER", "REVPROXY_WORKER_LOG_FORMAT")}
        os.environ.update({"REVPROXY_WORKER": "3", "REVPROXY_WORKER_LOG_FORMAT": logFormat})
        import sys

        out, sys.stdout = sys.stdout, io.StringIO()
        try:
            observer = workerLogObserver()
            observer({"log_format": "GET {uri}", "uri": "/a", "log_level": LogLevel.info,
                      "log_namespace": "revproxy.access", "log_time": 0.0})
            return sys.stdout.getvalue()  # type: ignore[attr-defined,no-any-return]
        finally:
            sys.stdout = out
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_text(self) -> None:
        """
        In text, a worker's line names it after the namespace and level.
        """
        self.assertTrue(self._line("text").endswith(
            " [revproxy.access#info] [worker 3] GET /a\n"))

    def test_json(self) -> None:
        """
        In JSON, a worker's line carries its number.
        """
        import json

        line = json.loads(self._line("json"))
        self.assertEqual((line["worker"], line["uri"], line["text"]), (3, "/a", "GET /a"))
