"""
Tests for L{revproxy.tap}: command-line options, the service tree, and the
twistd plugin.
"""

from __future__ import annotations

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing.balancing import randomChoice, roundRobin
from revproxy.routing.resolver import RouteResolver
from revproxy.routing import Upstream
from revproxy.tap import Options, makeService


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_port(self) -> None:
        """
        --port N listens on tcp:N; --listen adds strports descriptions.
        """
        o = _parse("--port", "3000", "--listen", "unix:/tmp/rp.sock", "--route", "a=h:1")
        self.assertEqual(o["listen"], ["tcp:3000", "unix:/tmp/rp.sock"])

    def test_defaultListen(self) -> None:
        """
        Without --port or --listen the proxy listens on tcp:8080.
        """
        self.assertEqual(_parse("--route", "a=h:1")["listen"], ["tcp:8080"])

    def test_routes(self) -> None:
        """
        Repeated --route options build the static route map.
        """
        o = _parse("--route", "A.com=h:1,h:2", "--route", "*.b.com=http://h:3/x")
        self.assertEqual(
            o["routes"],
            {
                "a.com": (Upstream("http", "h", 1), Upstream("http", "h", 2)),
                "*.b.com": (Upstream("http", "h", 3, b"/x"),),
            },
        )

    def test_upstream(self) -> None:
        """
        --upstream is a default route for every host.
        """
        o = _parse("--upstream", "http://h:1/base/")
        self.assertEqual(o["routes"], {"*": (Upstream("http", "h", 1, b"/base/"),)})

    def test_defaults(self) -> None:
        """
        Timeouts and policy have their documented defaults.
        """
        o = _parse("--route", "a=h:1")
        self.assertEqual(o["balance"], "round-robin")
        self.assertEqual(o["connect-timeout"], 5.0)
        self.assertEqual(o["timeout"], 60.0)
        self.assertEqual(o["drain-timeout"], 10.0)
        self.assertEqual(o["prefix"], "/hosts/")

    def test_badValues(self) -> None:
        """
        Bad values raise UsageError naming the option, in one line.
        """
        cases = [
            (["--port", "notaport"], "--port"),
            (["--port", "70000"], "--port"),
            (["--route", "nonsense"], "--route"),
            (["--route", "a=ftp://x"], "--route"),
            (["--upstream", "ftp://x"], "--upstream"),
            (["--route", "a=h:1", "--balance", "sideways"], "--balance"),
            (["--route", "a=h:1", "--timeout", "soon"], "--timeout"),
            (["--route", "a=h:1", "--connect-timeout", "-1"], "--connect-timeout"),
            (["--route", "a=h:1", "--drain-timeout", "nan"], "--drain-timeout"),
            (["--route", "a=h:1", "--pool-size", "many"], "--pool-size"),
            (["--route", "a=h:1", "--listen", "bogus:1"], "--listen"),
            (["--route", "a=h:1", "--listen", "tcp:notaport"], "--listen"),
            (["--route", "a=h:1", "--route", "A=h:2"], "--route"),
            (["--upstream", "h:1", "--route", "a=h:1"], "--upstream"),
            (["--etcd", "ftp://x"], "--etcd"),
            (["--etcd", "h:1,"], "--etcd"),
            (["--etcd", "http://h:1/path"], "--etcd"),
            (["--etcd", "h:1", "--etcd-probe-interval", "0"], "--etcd-probe-interval"),
            (["--etcd", "h:1", "--etcd-backoff-max", "x"], "--etcd-backoff-max"),
            (["--route", "a=h:1", "--prefix", "hosts"], "--prefix"),
            (["--route", "a=h:1", "--admin", "nonsense:1"], "--admin"),
            (["--route", "a=h:1", "--upstream-ca", "/nonexistent/ca.pem"], "--upstream-ca"),
            (["--route", "a=h:1", "--upstream-ca", __file__], "--upstream-ca"),
            (["--route", "a=h:1", "--ready-grace", "x"], "--ready-grace"),
            ([], "--route"),
        ]
        for argv, option in cases:
            with self.assertRaises(UsageError, msg=argv) as cm:
                _parse(*argv)
            message = str(cm.exception)
            self.assertIn(option, message, argv)
            self.assertNotIn("\n", message, argv)

    def test_etcd(self) -> None:
        """
        --etcd takes a comma-separated list of endpoints, normalized to URLs;
        it needs no --route.
        """
        o = _parse("--etcd", "http://127.0.0.1:2379,127.0.0.1:22379")
        self.assertEqual(o["etcd"], ["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
        self.assertEqual(o["routes"], {})

    def test_etcdWithRoute(self) -> None:
        """
        Static routes and etcd routes are not mixed.
        """
        self.assertRaises(UsageError, _parse, "--etcd", "h:1", "--route", "a=h:1")

    def test_prefixSlash(self) -> None:
        """
        A prefix without a trailing slash gets one.
        """
        self.assertEqual(_parse("--route", "a=h:1", "--prefix", "/r")["prefix"], "/r/")


class MakeServiceTests(SynchronousTestCase):
    def _service(self, *argv: str) -> tuple[MultiService, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        service = makeService(_parse(*argv), reactor=reactor)
        return service, reactor  # type: ignore[return-value]

    def test_tree(self) -> None:
        """
        The service tree holds the resolver, the pool, the access log's
        writer, the drain and one listener per --listen, each named.
        """
        service, reactor = self._service(
            "--port", "3000", "--listen", "tcp:3001", "--route", "a=h:1"
        )
        self.assertIsInstance(service, MultiService)
        names = [s.name for s in service]
        self.assertEqual(
            names,
            ["route-resolver", "upstream-pool", "access-log", "drain", "sighup",
             "listen tcp:3000", "listen tcp:3001"],
        )
        resolver = service.getServiceNamed("route-resolver")
        self.assertIsInstance(resolver, RouteResolver)
        self.assertEqual(sorted(resolver.table.routes), ["a"])  # type: ignore[union-attr]

    def test_listensOnInjectedReactor(self) -> None:
        """
        Starting the tree listens on the given reactor, not the global one;
        stopping it stops listening and leaves no timer.
        """
        service, reactor = self._service("--port", "3000", "--route", "a=h:1")
        service.startService()
        self.assertEqual([p[0] for p in reactor.tcpServers], [3000])
        d = service.stopService()
        self.successResultOf(d)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_cannotListen(self) -> None:
        """
        A port that cannot be bound stops start-up with a one-line message
        naming the listen description, and exit status 1.
        """

        class BusyReactor(MemoryReactorClock):
            def listenTCP(self, port, factory, backlog=50, interface=""):  # type: ignore[no-untyped-def]
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))

        service = makeService(_parse("--port", "3000", "--route", "a=h:1"), reactor=BusyReactor())
        with self.assertRaises(SystemExit) as cm:
            service.privilegedStartService()
        message = str(cm.exception.code)
        self.assertIn("cannot listen on tcp:3000", message)
        self.assertIn("Address already in use", message)
        self.assertNotIn("\n", message)

    def test_etcdTree(self) -> None:
        """
        With --etcd the tree also holds the etcd sync, and no table is
        loaded until etcd answers.
        """
        service, reactor = self._service("--etcd", "http://127.0.0.1:2379")
        etcd = service.getServiceNamed("etcd")
        self.assertEqual([s.name for s in etcd], ["etcd-connections", "etcd-sync"])  # type: ignore[attr-defined]
        self.assertIsNone(service.getServiceNamed("route-resolver").table)  # type: ignore[attr-defined]

    def test_admin(self) -> None:
        """
        --admin adds its own listener, and the proxy resource counts
        metrics only then.
        """
        service, reactor = self._service(
            "--port", "3000", "--route", "a=h:1", "--admin", "tcp:9901:interface=127.0.0.1"
        )
        names = [s.name for s in service]
        self.assertEqual(names[-1], "admin tcp:9901:interface=127.0.0.1")
        service.startService()
        self.assertEqual(sorted(p[0] for p in reactor.tcpServers), [3000, 9901])
        self.successResultOf(service.stopService())
        plain, _ = self._service("--route", "a=h:1")
        self.assertNotIn("admin", " ".join(s.name for s in plain))

    def test_balance(self) -> None:
        """
        --balance picks the policy of every host's route.
        """
        for name, policy in [("round-robin", roundRobin), ("random", randomChoice)]:
            service, _ = self._service("--route", "a=h:1", "--balance", name)
            table = service.getServiceNamed("route-resolver").table  # type: ignore[attr-defined]
            self.assertIs(table.routes["a"].policy, policy)


class TunnelOptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        Tunnels idle out after an hour and a removed upstream's tunnels
        live on with no limit (0) by default.
        """
        options = _parse("--route", "a=h:1")
        self.assertEqual(options["tunnel-idle-timeout"], 3600.0)
        self.assertEqual(options["tunnel-drain-timeout"], 0.0)

    def test_values(self) -> None:
        """
        Both options take seconds; bad values name the option.
        """
        options = _parse(
            "--route", "a=h:1", "--tunnel-idle-timeout", "2.5", "--tunnel-drain-timeout", "30"
        )
        self.assertEqual(options["tunnel-idle-timeout"], 2.5)
        self.assertEqual(options["tunnel-drain-timeout"], 30.0)
        for option, value in [
            ("--tunnel-idle-timeout", "0"),
            ("--tunnel-idle-timeout", "x"),
            ("--tunnel-drain-timeout", "-1"),
        ]:
            with self.assertRaises(UsageError) as e:
                _parse("--route", "a=h:1", option, value)
            self.assertIn(option, str(e.exception))

    def test_wired(self) -> None:
        """
        makeService gives the resource a tunnel registry with the options'
        timeouts, observing the routes.
        """
        reactor = MemoryReactorClock()
        service = makeService(
            _parse("--route", "a=h:1", "--tunnel-idle-timeout", "9", "--tunnel-drain-timeout", "4"),
            reactor=reactor,
        )
        tunnels = service.getServiceNamed("drain")._resource.tunnels  # type: ignore[attr-defined]
        self.assertEqual((tunnels.idleTimeout, tunnels.drainTimeout), (9.0, 4.0))
        self.assertIs(tunnels.clock, reactor)
        resolver = service.getServiceNamed("route-resolver")  # type: ignore[attr-defined]
        self.assertIn(tunnels, resolver.observers)


class PluginTests(SynchronousTestCase):
    def test_listed(self) -> None:
        """
        twistd finds the revproxy plugin.
        """
        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertIn("revproxy", names)

    def test_pluginUsesTap(self) -> None:
        """
        The plugin's options are L{revproxy.tap.Options}.
        """
        [plugin] = [p for p in getPlugins(IServiceMaker) if p.tapname == "revproxy"]
        self.assertIs(plugin.options, Options)


class MessagesTests(SynchronousTestCase):
    def _underTwistd(self, *argv: str) -> tuple[object, str, str]:
        import io
        import sys

        from twisted.scripts.twistd import ServerOptions

        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as cm:
            ServerOptions().parseOptions(["revproxy", *argv])
        return cm.exception.code, out.getvalue(), err.getvalue()

    def test_badOptionOneLine(self) -> None:
        """Under twistd a bad option value prints one line naming it and exits 2."""
        code, out, err = self._underTwistd("--port", "abc")
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertEqual(
            err,
            "revproxy: --port: 'abc' is not a TCP port number; "
            "see twistd revproxy --help\n",
        )

    def test_unknownOptionOneLine(self) -> None:
        """Under twistd an unknown option prints one line and exits 2."""
        code, out, err = self._underTwistd("--bogus")
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("--bogus", err)

    def test_version(self) -> None:
        """--version prints revproxy's version and exits 0."""
        from revproxy import __version__

        code, out, err = self._underTwistd("--version")
        self.assertEqual((code, out, err), (0, f"revproxy {__version__}\n", ""))

    def test_directUseRaises(self) -> None:
        """Used directly (not under twistd), a bad option raises UsageError."""
        self.assertRaises(UsageError, _parse, "--port", "abc")

    def test_helpNamesSources(self) -> None:
        """The help text names all three route sources and wraps without runs of spaces."""
        text = str(Options())
        for word in ("--route", "--routes-file", "--etcd"):
            self.assertIn(word, Options.longdesc)
        for line in text.splitlines():
            self.assertNotIn("   ", line[30:].strip(), line)


class RoutesFileOptionTests(SynchronousTestCase):
    def _file(self, text: str) -> str:
        import os
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".json")
        os.write(fd, text.encode())
        os.close(fd)
        self.addCleanup(os.unlink, path)
        return path

    def test_loads(self) -> None:
        """--routes-file loads the routes of the file, its path made absolute."""
        path = self._file('{"a": ["h:1"]}')
        o = _parse("--routes-file", path)
        self.assertEqual(o["routes"], {"a": (Upstream("http", "h", 1),)})
        self.assertTrue(o["routes-file"].is_absolute())

    def test_badFileAtStart(self) -> None:
        """A routes file that does not load stops start-up with one line naming the option, the error and its line."""
        path = self._file('{\n  "a": ["h"]\n}')
        e = self.assertRaises(UsageError, _parse, "--routes-file", path)
        self.assertTrue(str(e).startswith(f"--routes-file: {path}: host 'a'"), str(e))
        self.assertIn("(line 2)", str(e))

    def test_alone(self) -> None:
        """--routes-file cannot be combined with another route source."""
        path = self._file("{}")
        for other in (["--route", "a=h:1"], ["--etcd", "http://e:2379"], ["--upstream", "h:1"]):
            e = self.assertRaises(UsageError, _parse, "--routes-file", path, *other)
            self.assertIn("cannot be combined", str(e))

    def test_serviceAndReload(self) -> None:
        """With --routes-file the tree follows the file and SIGHUP reloads it."""
        path = self._file('{"a": ["h:1"]}')
        service = makeService(_parse("--routes-file", path), MemoryReactorClock())
        names = [s.name for s in service]  # type: ignore[attr-defined]
        self.assertIn("routes-file", names)
        hangup = service.getServiceNamed("sighup")  # type: ignore[attr-defined]
        # the file, the access log and twistd's log files
        self.assertEqual(len(hangup.reloaders), 3)
