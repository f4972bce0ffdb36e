"""
Tests for L{revproxy.ops.fleet}: the fleet options of C{twistd revproxy}
and the wiring of node registration and the snapshot into the service
tree.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.ops.tempdirs import temporary

from revproxy.ops.fleet import urlOfListener
from revproxy.tap import Options, makeService

ETCD = ["--etcd", "http://127.0.0.1:2379"]


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        The node TTL is 10 s, the report interval 0.2 s, the prefix
        /revproxy/nodes/; no node id (hostname:port:pid is made at start),
        no state directory.
        """
        o = parse(*ETCD)
        self.assertEqual(
            (o["node-ttl"], o["node-report-interval"], o["nodes-prefix"], o["node-id"], o["state-dir"]),
            (10, 0.2, "/revproxy/nodes/", None, None),
        )

    def test_badValuesNamed(self) -> None:
        """
        A bad fleet option is a one-line usage error naming it.
        """
        for args, named in [
            (["--node-ttl", "0"], "--node-ttl"),
            (["--node-ttl", "x"], "--node-ttl"),
            (["--node-report-interval", "-1"], "--node-report-interval"),
            (["--nodes-prefix", "nodes"], "--nodes-prefix"),
            (["--node-id", "a/b"], "--node-id"),
            (["--node-id", "a b"], "--node-id"),
            (["--ready-requires-etcd"], "--ready-requires-etcd"),
        ]:
            with self.assertRaises(usage.UsageError) as e:
                parse(*ETCD, *args)
            self.assertIn(named, str(e.exception))
            self.assertNotIn("\n", str(e.exception))

    def test_stateDirNeedsEtcd(self) -> None:
        """
        --state-dir keeps a snapshot of etcd's routes: it needs --etcd; it
        is created if missing, and must be a directory.
        """
        with self.assertRaises(usage.UsageError) as e:
            parse("--route", "a.com=127.0.0.1:80", "--state-dir", temporary(self))
        self.assertIn("--state-dir", str(e.exception))
        path = Path(temporary(self))
        o = parse(*ETCD, "--state-dir", str(path), "--ready-requires-etcd")
        self.assertTrue(path.is_dir())
        self.assertEqual(o["state-dir"], path.absolute())
        file = Path(temporary(self))
        file.write_text("")
        with self.assertRaises(usage.UsageError):
            parse(*ETCD, "--state-dir", str(file))


class WiringTests(SynchronousTestCase):
    def test_servicesWithEtcd(self) -> None:
        """
        With --etcd the tree has the node registration, and with
        --state-dir the snapshot; without etcd, neither.
        """
        o = parse(*ETCD, "--state-dir", temporary(self), "--node-ttl", "4")
        root = makeService(o, reactor=MemoryReactorClock())
        registration = root.getServiceNamed("node-registration")  # type: ignore[attr-defined]
        self.assertEqual((registration.ttl, registration.prefix), (4, "/revproxy/nodes/"))
        root.getServiceNamed("route-snapshot")  # type: ignore[attr-defined]
        static = makeService(parse("--route", "a.com=127.0.0.1:80"), reactor=MemoryReactorClock())
        with self.assertRaises(KeyError):
            static.getServiceNamed("node-registration")  # type: ignore[attr-defined]

    def test_urlOfListener(self) -> None:
        """
        The admin URL is made from the listener's kind and bound address.
        """
        class Port:
            def __init__(self, host: str) -> None:
                self.host = host

            def getHost(self) -> IPv4Address:
                return IPv4Address("TCP", self.host, 9901)

        self.assertEqual(urlOfListener("tcp:0:interface=127.0.0.1", Port("127.0.0.1")),
                         "http://127.0.0.1:9901")
        self.assertEqual(urlOfListener("ssl:9901:privateKey=k", Port("10.1.2.3")),
                         "https://10.1.2.3:9901")
        self.assertIsNone(urlOfListener("unix:/tmp/admin.sock", Port("x")))


class ReadmeTests(SynchronousTestCase):
    def test_optionsDocumented(self) -> None:
        """
        Every fleet option, revproxyctl's fleet commands and the status page
        are in the README.
        """
        from revproxy.ops.fleet import FLEET_FLAGS, FLEET_PARAMETERS

        readme = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
        for option in [*FLEET_FLAGS, *FLEET_PARAMETERS]:
            self.assertIn(f"``--{option[0]}", readme)
        for text in ("``--wait[=SECONDS]``", "revproxyctl nodes", "revproxyctl explain HOST [PATH]",
                     "``ready, stale:``", "routes.snapshot.json", "The status page"):
            self.assertIn(text, readme)
