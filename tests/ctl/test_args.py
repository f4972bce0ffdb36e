"""
Tests for L{revproxy.ctl.args}: parsing and validating the command line.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ctl.args import Config, UsageError, parseArgs
from tests.ctl.samples import U1, U3


class ParseArgsTests(SynchronousTestCase):
    def parse(self, *argv: str, **environ: str) -> Config:
        return parseArgs(list(argv), environ)

    def test_defaults(self) -> None:
        """Without options or environment, etcd is 127.0.0.1:2379 and the prefix /hosts/."""
        c = self.parse("ls")
        self.assertEqual(
            (c.command, c.endpoints, c.prefix, c.timeout, c.maxTxnOps),
            ("ls", ("http://127.0.0.1:2379",), "/hosts/", 5.0, 128),
        )

    def test_environment(self) -> None:
        """REVPROXY_ETCD and REVPROXY_PREFIX supply absent options."""
        c = self.parse(
            "ls", REVPROXY_ETCD="10.0.0.1:2379,https://e2:2379", REVPROXY_PREFIX="/r"
        )
        self.assertEqual(c.endpoints, ("http://10.0.0.1:2379", "https://e2:2379"))
        self.assertEqual(c.prefix, "/r/")

    def test_optionsOverrideEnvironment(self) -> None:
        """--etcd and --prefix win over the environment, before or after the subcommand."""
        env = {"REVPROXY_ETCD": "bad://x", "REVPROXY_PREFIX": "nope"}
        for argv in (
            ["--etcd", "h:1", "--prefix", "/p/", "ls"],
            ["ls", "--etcd", "h:1", "--prefix", "/p/"],
        ):
            c = parseArgs(argv, env)
            self.assertEqual((c.endpoints, c.prefix), (("http://h:1",), "/p/"))

    def test_badEnvironmentNamed(self) -> None:
        """A bad REVPROXY_ETCD or REVPROXY_PREFIX is reported by its name."""
        e = self.assertRaises(UsageError, self.parse, "ls", REVPROXY_ETCD="ftp://x")
        self.assertIn("$REVPROXY_ETCD", str(e))
        e = self.assertRaises(UsageError, self.parse, "ls", REVPROXY_PREFIX="x")
        self.assertIn("$REVPROXY_PREFIX", str(e))

    def test_add(self) -> None:
        """add validates and normalizes the host and the upstreams with the proxy's parser."""
        c = self.parse("add", "Blog.Example.COM.", "127.0.0.1:4000", "https://backend:8443/base", "--weight", "3")
        self.assertEqual(c.host, "blog.example.com")
        self.assertEqual(c.upstreams, (U1, U3))
        self.assertEqual([u.weight for u in c.upstreams], [3, 3])
        self.assertEqual(c.weight, 3)
        self.assertIsNone(self.parse("add", "h", "h:1").weight)

    def test_rm(self) -> None:
        """rm takes a host and optional upstreams."""
        self.assertEqual(self.parse("rm", "h").upstreams, ())
        self.assertEqual(self.parse("rm", "h", "127.0.0.1:4000").upstreams, (U1,))

    def test_lsImportFlags(self) -> None:
        """ls takes an optional host and --json; import a file, --dry-run and --replace."""
        c = self.parse("ls", "*.Example.com", "--json")
        self.assertEqual((c.host, c.json), ("*.example.com", True))
        c = self.parse("import", "-", "--dry-run", "--replace")
        self.assertEqual((c.file, c.dryRun, c.replace), ("-", True, True))
        self.assertIsNone(self.parse("ls").host)

    def test_refused(self) -> None:
        """Bad hosts, upstreams, numbers and syntax raise UsageError with one line."""
        cases: list[tuple[list[str], str]] = [
            (["add", "bad host", "h:1"], "invalid host"),
            (["add", "h:80", "h:1"], "has no port"),
            (["add", "h", "h"], "no port"),
            (["add", "h", "ftp://h:1"], "unsupported scheme"),
            (["add", "h", "h:1", "http://h:1"], "listed twice"),
            (["add", "h", "h:1", "--weight", "0"], "--weight"),
            (["add", "h", "h:1", "--weight", "x"], "--weight"),
            (["add", "h"], "required"),
            (["rm", "h", "h:99999"], "h:99999"),
            (["ls", "--timeout", "0"], "--timeout"),
            (["ls", "--timeout", "nan"], "--timeout"),
            (["ls", "--max-txn-ops", "0"], "--max-txn-ops"),
            (["ls", "--etcd", "h:1/path"], "path"),
            (["ls", "--prefix", "hosts"], "--prefix"),
            (["frob"], "invalid choice"),
            ([], "required"),
        ]
        for argv, word in cases:
            e = self.assertRaises(UsageError, parseArgs, argv, {})
            self.assertIn(word, str(e), argv)
            self.assertNotIn("\n", str(e))

    def test_help(self) -> None:
        """--help prints usage and exits 0."""
        e = self.assertRaises(SystemExit, parseArgs, ["--help"], {})
        self.assertEqual(e.code, 0)


class VersionTests(SynchronousTestCase):
    def test_version(self) -> None:
        """revproxyctl --version prints its version and exits 0."""
        import io
        import sys

        from revproxy import __version__

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as cm:
            parseArgs(["--version"], {})
        self.assertEqual(cm.exception.code, 0)
        self.assertEqual(out.getvalue(), f"revproxyctl {__version__}\n")
