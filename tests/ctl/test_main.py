"""
Tests for L{revproxy.ctl.main}: argument parsing, route documents, planning and
formatting (pure), and the commands on the in-memory route store.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ctl.main import (
    ATTEMPTS,
    Change,
    CommandError,
    Config,
    RouteState,
    RouteWatcher,
    UsageError,
    describeFailure,
    formatChange,
    formatTable,
    loadDocument,
    main,
    parseArgs,
    parseRouteDocument,
    parseStored,
    planAdd,
    planImport,
    planRm,
    readState,
    routeDocument,
    routeKey,
    routeValue,
    runAdd,
    runExport,
    runImport,
    runLs,
    runRm,
)
from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.types import EtcdError, EtcdUnavailable, TxnResult
from revproxy.routing import Upstream, parseRouteKey, parseUpstream

U1 = parseUpstream("127.0.0.1:4000")
U2 = parseUpstream("127.0.0.1:4001")
U3 = parseUpstream("https://backend:8443/base")


def state(*items: tuple[str, bytes], prefix: str = "/hosts/") -> RouteState:
    return readState(
        7, [(k.encode(), v, i + 1) for i, (k, v) in enumerate(items)], prefix
    )


def weighted(u: Upstream, weight: int) -> Upstream:
    return parseUpstream(str(u), weight)


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


class DocumentTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """A document maps hosts to addresses or {upstream, weight} objects."""
        text = json.dumps(
            {
                "Blog.example.com": ["127.0.0.1:4000", {"upstream": "127.0.0.1:4001", "weight": 3}],
                "*": [{"upstream": "https://backend:8443/base"}],
            }
        )
        routes = parseRouteDocument(text, "f.json")
        self.assertEqual(routes, {"blog.example.com": (U1, U2), "*": (U3,)})
        self.assertEqual([u.weight for u in routes["blog.example.com"]], [1, 3])

    def test_refused(self) -> None:
        """Each kind of bad document is refused with a one-line message naming the source."""
        cases = [
            ("{", "not valid JSON"),
            ("[]", "expected a JSON object"),
            ('{"bad host": ["h:1"]}', "invalid host"),
            ('{"h": "h:1"}', "expected a list"),
            ('{"h": []}', "no upstreams"),
            ('{"h": ["h"]}', "upstream #1: upstream 'h': no port"),
            ('{"h": [1]}', "expected an address"),
            ('{"h": [{"upstream": "h:1", "weight": 0}]}', "weight 0"),
            ('{"h": [{"upstream": "h:1", "weight": true}]}', "weight True"),
            ('{"h": [{"upstream": "h:1", "weight": 1.5}]}', "weight 1.5"),
            ('{"h": [{"upstream": 5}]}', '"upstream" must be'),
            ('{"h": [{"upstream": "h:1", "wieght": 2}]}', "unknown field 'wieght'"),
            ('{"h": ["h:1", "http://h:1/"]}', "listed twice"),
            ('{"h": ["h:1"], "H.": ["h:2"]}', "appears twice"),
            ('{"h": ["h:1"], "h": ["h:2"]}', "appears twice"),
        ]
        for text, word in cases:
            e = self.assertRaises(UsageError, parseRouteDocument, text, "f.json")
            self.assertIn(word, str(e), text)
            self.assertTrue(str(e).startswith("f.json: "), str(e))
            self.assertNotIn("\n", str(e))

    def test_countsProblems(self) -> None:
        """Every host is checked; the message gives the first problem and how many more."""
        e = self.assertRaises(
            UsageError, parseRouteDocument, '{"a b": ["h:1"], "h": ["x"], "ok": ["h:1"]}', "f"
        )
        self.assertIn("invalid host 'a b'", str(e))
        self.assertIn("and 1 more problems", str(e))
        self.assertIn("nothing was written", str(e))

    def test_loadDocument(self) -> None:
        """- reads standard input; an unreadable file is a UsageError naming it."""
        routes = loadDocument("-", io.StringIO('{"h": ["127.0.0.1:4000"]}'))
        self.assertEqual(routes, {"h": (U1,)})
        e = self.assertRaises(UsageError, loadDocument, "/nonexistent/f.json", io.StringIO())
        self.assertIn("/nonexistent/f.json", str(e))

    def test_exportRoundTrip(self) -> None:
        """The exported document parses back to the same upstreams and weights."""
        s = state(
            ("/hosts/b.com/127.0.0.1:4000", b""),
            ("/hosts/b.com/127.0.0.1:4001", b'{"weight": 3}'),
            ("/hosts/a.com/https://backend:8443/base", b""),
        )
        document, warnings = routeDocument(s)
        self.assertEqual(warnings, [])
        self.assertEqual(
            document,
            {
                "a.com": ["https://backend:8443/base"],
                "b.com": ["127.0.0.1:4000", {"upstream": "127.0.0.1:4001", "weight": 3}],
            },
        )
        routes = parseRouteDocument(json.dumps(document), "-")
        self.assertEqual(planImport(s, "/hosts/", routes, replace=True).changes, ())

    def test_exportDuplicates(self) -> None:
        """Two keys naming one upstream of a host are exported once, with a warning."""
        s = state(("/hosts/h/127.0.0.1:4000", b""), ("/hosts/h/http://127.0.0.1:4000", b""))
        document, warnings = routeDocument(s)
        self.assertEqual(document, {"h": ["127.0.0.1:4000"]})
        self.assertEqual(len(warnings), 1)


class StateTests(SynchronousTestCase):
    def test_readState(self) -> None:
        """Keys are parsed as the proxy parses them; bad keys are set aside with a reason."""
        s = state(
            ("/hosts/B.com/127.0.0.1:4000", b'{"weight": 2}'),
            ("/hosts/bad host/h:1", b""),
            ("/hosts/h/h:1", b"{nope"),
        )
        self.assertEqual([(r.host, r.upstream, r.upstream.weight) for r in s.routes], [("b.com", U1, 2)])
        self.assertEqual([k for k, _ in s.skipped], ["/hosts/bad host/h:1", "/hosts/h/h:1"])
        self.assertIn("not UTF-8", parseStored(b"/hosts/\xff/h:1", b"", "/hosts/"))

    def test_routeKey(self) -> None:
        """A key written for a route parses back to that route, weight included."""
        for host in ("blog.example.com", "*.example.com", "*", "[::1]", "10.0.0.1"):
            for u in (U1, U2, U3, parseUpstream("[::1]:80"), parseUpstream("https://h")):
                for weight in (1, 7):
                    up = weighted(u, weight)
                    key = routeKey("/p/", host, up).decode()
                    got = parseRouteKey(key, "/p/", routeValue(weight))
                    self.assertEqual(got, (host, up))
                    self.assertEqual(got[1].weight, weight)
        self.assertEqual(routeValue(1), b"")

    def test_table(self) -> None:
        """The table has a header and one aligned row per route, hosts sorted, filtered by host."""
        s = state(
            ("/hosts/b.com/127.0.0.1:4000", b""),
            ("/hosts/a.com/127.0.0.1:4001", b'{"weight": 3}'),
        )
        self.assertEqual(
            formatTable(s),
            "HOST   UPSTREAM        WEIGHT\n"
            "a.com  127.0.0.1:4001  3\n"
            "b.com  127.0.0.1:4000  1\n",
        )
        self.assertEqual(formatTable(s, "b.com").splitlines()[1:], ["b.com  127.0.0.1:4000  1"])

    def test_formatChange(self) -> None:
        """Change lines are +, - or ~, host, upstream, weight if not 1, and revision if given."""
        self.assertEqual(formatChange(Change("+", "h", U1, b"k", 0)), "+ h 127.0.0.1:4000")
        self.assertEqual(
            formatChange(Change("+", "h", weighted(U1, 2), b"k", 0), 9),
            "+ h 127.0.0.1:4000 weight=2 revision=9",
        )
        self.assertEqual(formatChange(Change("-", "h", U1, b"k", 3), 9), "- h 127.0.0.1:4000 revision=9")
        self.assertEqual(
            formatChange(Change("~", "h", weighted(U1, 5), b"k", 3, 1)),
            "~ h 127.0.0.1:4000 weight=5 (was 1)",
        )


class PlanTests(SynchronousTestCase):
    s = state(
        ("/hosts/a.com/127.0.0.1:4000", b""),
        ("/hosts/a.com/http://127.0.0.1:4001", b'{"weight": 2}'),
        ("/hosts/b.com/127.0.0.1:4000", b""),
    )

    def test_addNew(self) -> None:
        """add of a new upstream puts its canonical key, guarded on its absence."""
        plan = planAdd(self.s, "/hosts/", "c.com", [U3], None)
        self.assertEqual(plan.changes, (Change("+", "c.com", U3, b"/hosts/c.com/https://backend:8443/base", 0),))

    def test_addExistingIsANote(self) -> None:
        """add of an upstream already there (however its key is spelled) changes nothing."""
        plan = planAdd(self.s, "/hosts/", "a.com", [U1, parseUpstream("127.0.0.1:4001")], None)
        self.assertEqual(plan.changes, ())
        self.assertEqual(len(plan.notes), 2)
        self.assertIn("already present", plan.notes[0])
        plan = planAdd(self.s, "/hosts/", "a.com", [weighted(U2, 2)], 2)
        self.assertEqual(plan.changes, ())

    def test_addSetsWeight(self) -> None:
        """add --weight of an existing upstream with another weight sets it on its key."""
        plan = planAdd(self.s, "/hosts/", "a.com", [weighted(U2, 5)], 5)
        (c,) = plan.changes
        self.assertEqual((c.kind, c.key, c.upstream.weight, c.oldWeight, c.modRevision),
                         ("~", b"/hosts/a.com/http://127.0.0.1:4001", 5, 2, 2))

    def test_rmHost(self) -> None:
        """rm of a host removes each of its keys, guarded by their revisions."""
        plan = planRm(self.s, "a.com", [])
        self.assertEqual([(c.kind, c.key, c.modRevision) for c in plan.changes],
                         [("-", b"/hosts/a.com/127.0.0.1:4000", 1),
                          ("-", b"/hosts/a.com/http://127.0.0.1:4001", 2)])

    def test_rmUpstream(self) -> None:
        """rm of an upstream removes its key however spelled; the last one notes the host is gone."""
        plan = planRm(self.s, "a.com", [U2])
        self.assertEqual([c.key for c in plan.changes], [b"/hosts/a.com/http://127.0.0.1:4001"])
        self.assertEqual(plan.notes, ())
        self.assertIn("host is gone", planRm(self.s, "b.com", [U1]).notes[0])

    def test_rmAbsent(self) -> None:
        """rm of an absent host, or of any absent upstream, raises CommandError and removes nothing."""
        e = self.assertRaises(CommandError, planRm, self.s, "nope.com", [])
        self.assertIn("no such host: nope.com", str(e))
        e = self.assertRaises(CommandError, planRm, self.s, "a.com", [U1, U3])
        self.assertIn("no upstream https://backend:8443/base", str(e))

    def test_import(self) -> None:
        """import gives each host of the file exactly its upstreams and weights; others stay."""
        routes = {"a.com": (U1, weighted(U3, 4)), "c.com": (U2,)}
        plan = planImport(self.s, "/hosts/", routes, replace=False)
        self.assertEqual(
            [formatChange(c) for c in plan.changes],
            [
                "+ a.com https://backend:8443/base weight=4",
                "- a.com 127.0.0.1:4001",
                "+ c.com 127.0.0.1:4001",
            ],
        )

    def test_importWeight(self) -> None:
        """A plain address in a file means weight 1: import resets another weight."""
        plan = planImport(self.s, "/hosts/", {"a.com": (U1, U2)}, replace=False)
        self.assertEqual([formatChange(c) for c in plan.changes], ["~ a.com 127.0.0.1:4001 weight=1 (was 2)"])

    def test_importReplace(self) -> None:
        """import --replace also removes the hosts not in the file."""
        plan = planImport(self.s, "/hosts/", {"a.com": (U1, weighted(U2, 2))}, replace=True)
        self.assertEqual([formatChange(c) for c in plan.changes], ["- b.com 127.0.0.1:4000"])

    def test_importDuplicateKeys(self) -> None:
        """import removes a second key naming an upstream the file lists once."""
        s = state(("/hosts/h/127.0.0.1:4000", b""), ("/hosts/h/http://127.0.0.1:4000", b""))
        plan = planImport(s, "/hosts/", {"h": (U1,)}, replace=False)
        self.assertEqual([c.key for c in plan.changes], [b"/hosts/h/http://127.0.0.1:4000"])


def run(d: Any) -> Any:
    return Deferred.fromCoroutine(d)


class Commands:
    """
    A store and captured output for the command tests.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.test = test
        self.store = MemoryRouteStore()
        self.out = io.StringIO()
        self.err = io.StringIO()

    def config(self, *argv: str) -> Config:
        return parseArgs(list(argv), {})

    def put(self, key: str, value: bytes = b"") -> None:
        self.store.put(key.encode(), value)

    def keys(self) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.store.items().items()}

    def lines(self) -> list[str]:
        text = self.out.getvalue()
        self.out.seek(0)
        self.out.truncate()
        return text.splitlines()

    def start(self, *argv: str, routes: Any = None) -> Deferred[int]:
        c = self.config(*argv)
        if c.command == "add":
            coro = runAdd(self.store, c, self.out)
        elif c.command == "rm":
            coro = runRm(self.store, c, self.out)
        elif c.command == "ls":
            coro = runLs(self.store, c, self.out, self.err)
        elif c.command == "export":
            coro = runExport(self.store, c, self.out, self.err)
        else:
            coro = runImport(self.store, c, routes, self.out)
        d: Deferred[int] = run(coro)
        return d

    def run(self, *argv: str, routes: Any = None) -> int:
        result: int = self.test.successResultOf(self.start(*argv, routes=routes))
        return result

    def fails(self, *argv: str, routes: Any = None) -> str:
        before = self.keys()
        failure = self.test.failureResultOf(self.start(*argv, routes=routes), CommandError)
        self.test.assertEqual(self.keys(), before)
        return str(failure.value)


class CommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.c = Commands(self)

    def test_addLsRm(self) -> None:
        """add writes canonical keys in one revision; ls shows them; rm removes them."""
        c = self.c
        self.assertEqual(c.run("add", "Blog.example.com", "http://127.0.0.1:4000/", "127.0.0.1:4001", "--weight", "2"), 0)
        self.assertEqual(
            c.keys(),
            {"/hosts/blog.example.com/127.0.0.1:4000": b'{"weight": 2}',
             "/hosts/blog.example.com/127.0.0.1:4001": b'{"weight": 2}'},
        )
        self.assertEqual(c.store.revision, 2)
        self.assertEqual(c.lines(), ["+ blog.example.com 127.0.0.1:4000 weight=2 revision=2",
                                     "+ blog.example.com 127.0.0.1:4001 weight=2 revision=2"])
        c.run("ls")
        self.assertEqual(c.lines()[0].split(), ["HOST", "UPSTREAM", "WEIGHT"])
        self.assertEqual(c.run("rm", "blog.example.com", "127.0.0.1:4000"), 0)
        self.assertEqual(list(c.keys()), ["/hosts/blog.example.com/127.0.0.1:4001"])
        self.assertEqual(c.run("rm", "blog.example.com"), 0)
        self.assertEqual(c.keys(), {})

    def test_addIdempotent(self) -> None:
        """add of an upstream that exists writes nothing, says so and succeeds."""
        c = self.c
        c.put("/hosts/h/http://127.0.0.1:4000")
        revision = c.store.revision
        self.assertEqual(c.run("add", "h", "127.0.0.1:4000"), 0)
        self.assertEqual(c.store.revision, revision)
        self.assertEqual(c.lines(), ["h 127.0.0.1:4000: already present, nothing to do"])

    def test_rmAbsent(self) -> None:
        """rm of a missing host or upstream fails and writes nothing."""
        c = self.c
        c.put("/hosts/h/127.0.0.1:4000")
        self.assertIn("no such host: nope", c.fails("rm", "nope"))
        self.assertIn("no upstream 127.0.0.1:4001", c.fails("rm", "h", "127.0.0.1:4000", "127.0.0.1:4001"))

    def test_prefix(self) -> None:
        """Commands use --prefix; keys under other prefixes are not routes."""
        c = self.c
        c.put("/hosts/h/127.0.0.1:4000")
        c.run("--prefix", "/other", "add", "h", "127.0.0.1:4001")
        self.assertIn("/other/h/127.0.0.1:4001", c.keys())
        c.lines()
        c.run("--prefix", "/other", "export")
        self.assertEqual(json.loads(c.out.getvalue()), {"h": ["127.0.0.1:4001"]})

    def test_lsJson(self) -> None:
        """ls --json prints the export document, of one host if given."""
        c = self.c
        c.put("/hosts/a/127.0.0.1:4000")
        c.put("/hosts/b/127.0.0.1:4001", b'{"weight": 3}')
        c.run("ls", "--json")
        self.assertEqual(json.loads(c.out.getvalue()),
                         {"a": ["127.0.0.1:4000"], "b": [{"upstream": "127.0.0.1:4001", "weight": 3}]})
        c.lines()
        c.run("ls", "b", "--json")
        self.assertEqual(list(json.loads(c.out.getvalue())), ["b"])

    def test_lsWarnsAndFails(self) -> None:
        """ls warns about keys that do not parse, says when empty, and fails for a missing host."""
        c = self.c
        c.run("ls")
        self.assertEqual(c.err.getvalue(), "no routes under /hosts/\n")
        c.put("/hosts/h/nope")
        c.run("ls")
        self.assertIn("warning: skipping key '/hosts/h/nope'", c.err.getvalue())
        self.assertIn("no such host: x", c.fails("ls", "x"))

    def test_importDryRun(self) -> None:
        """import --dry-run prints the changes and a summary, and writes nothing."""
        c = self.c
        c.put("/hosts/a/127.0.0.1:4000")
        self.assertEqual(c.run("import", "f", "--dry-run", "--replace", routes={"b": (U1,)}), 0)
        self.assertEqual(c.keys(), {"/hosts/a/127.0.0.1:4000": b""})
        self.assertEqual(c.lines(), ["- a 127.0.0.1:4000", "+ b 127.0.0.1:4000",
                                     "dry run: 1 to add, 1 to remove, 0 to change; nothing was written"])

    def test_importOneTransaction(self) -> None:
        """import applies every change in one revision."""
        c = self.c
        c.put("/hosts/a/127.0.0.1:4000")
        c.run("import", "f", "--replace", routes={"b": (U1, U2), "c": (U3,)})
        self.assertEqual(c.store.revision, 3)
        self.assertEqual(sorted(c.keys()), ["/hosts/b/127.0.0.1:4000", "/hosts/b/127.0.0.1:4001",
                                            "/hosts/c/https://backend:8443/base"])
        self.assertEqual(c.run("import", "f", routes={"b": (U1, U2)}), 0)
        self.assertEqual(c.lines()[-1], "nothing to change")

    def test_tooLarge(self) -> None:
        """A change above --max-txn-ops is refused before anything is written, naming the limit."""
        c = self.c
        routes = {f"h{i}": (U1,) for i in range(5)}
        message = c.fails("--max-txn-ops", "4", "import", "f", routes=routes)
        self.assertIn("needs 5 operations", message)
        self.assertIn("limit of 4", message)
        self.assertIn("--max-txn-ops", message)
        self.assertEqual(c.run("--max-txn-ops", "5", "import", "f", routes=routes), 0)
        self.assertEqual(len(c.keys()), 5)

    def test_tooLargeDryRun(self) -> None:
        """A dry run of a change too large still prints it, then fails naming the limit."""
        c = self.c
        c.fails("--max-txn-ops", "1", "import", "f", "--dry-run", routes={"a": (U1, U2)})
        self.assertEqual(len(c.lines()), 3)

    def test_etcdRefusesTooMany(self) -> None:
        """etcd's own "too many operations" answer is reported as the transaction limit."""
        c = self.c

        def txn(*args: object) -> Deferred[TxnResult]:
            return fail(EtcdError(3, "etcdserver: too many operations in txn request", 400))

        c.store.txn = txn  # type: ignore[method-assign]
        self.assertIn("more than etcd allows", c.fails("add", "h", "127.0.0.1:4000"))

    def test_concurrentWriterReplans(self) -> None:
        """When a guarded key changes between read and transaction, the change is planned again."""
        c = self.c
        c.put("/hosts/h/127.0.0.1:4000")
        real = c.store.txn
        calls: list[int] = []

        def txn(compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()) -> Deferred[TxnResult]:
            calls.append(1)
            if len(calls) == 1:
                c.put("/hosts/h/127.0.0.1:4000", b'{"weight": 9}')
            return real(compare, success, failure)

        c.store.txn = txn  # type: ignore[method-assign]
        c.run("import", "f", routes={"h": (U2,)})
        self.assertEqual(len(calls), 2)
        self.assertEqual(list(c.keys()), ["/hosts/h/127.0.0.1:4001"])

    def test_concurrentWriterGivesUp(self) -> None:
        """A change whose keys keep changing fails after ATTEMPTS tries, writing nothing of its own."""
        c = self.c
        c.put("/hosts/h/127.0.0.1:4000")
        real = c.store.txn
        n = [0]

        def txn(compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()) -> Deferred[TxnResult]:
            n[0] += 1
            c.put("/hosts/h/127.0.0.1:4000", str(n[0] + 1).encode())
            return real(compare, success, failure)

        c.store.txn = txn  # type: ignore[method-assign]
        self.assertIn("kept changing", str(self.failureResultOf(c.start("rm", "h"), CommandError).value))
        self.assertEqual(n[0], ATTEMPTS)
        self.assertIn("/hosts/h/127.0.0.1:4000", c.keys())

    def test_unavailable(self) -> None:
        """An unreachable store fails the command with EtcdUnavailable, described naming the endpoints."""
        c = self.c
        c.store.unavailable = True
        f = self.failureResultOf(run(runLs(c.store, c.config("ls"), c.out, c.err)), EtcdUnavailable)
        self.assertEqual(describeFailure(f, ["http://e:1"]), "cannot reach etcd: memory store is unavailable")
        f = Failure(EtcdError(5, "boom", 500))
        self.assertIn("etcd at http://e:1 failed", describeFailure(f, ["http://e:1"]))


class WatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryRouteStore()
        self.store.put(b"/hosts/a/127.0.0.1:4000", b"")
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.watcher = RouteWatcher(self.store, "/hosts/", self.clock, self.out, self.err)

    def lines(self) -> list[str]:
        text = self.out.getvalue()
        self.out.seek(0)
        self.out.truncate()
        return text.splitlines()

    def test_changes(self) -> None:
        """Each change prints one line: + for a new route, ~ for a weight, - for a removal."""
        done = self.watcher.start()
        self.assertEqual(self.lines(), [])
        self.store.put(b"/hosts/b/127.0.0.1:4001", b"")
        self.store.put(b"/hosts/b/127.0.0.1:4001", b'{"weight": 4}')
        self.store.put(b"/hosts/b/127.0.0.1:4001", b'{"weight": 4}')
        self.store.delete(b"/hosts/a/127.0.0.1:4000")
        self.store.put(b"/elsewhere/x", b"")
        self.assertEqual(
            self.lines(),
            ["+ b 127.0.0.1:4001 revision=3",
             "~ b 127.0.0.1:4001 weight=4 (was 1) revision=4",
             "- a 127.0.0.1:4000 revision=6"],
        )
        self.assertNoResult(done)
        self.assertEqual(self.successResultOf(self.watcher.stop()), 0)
        self.assertEqual(self.store.watches, [])

    def test_badKey(self) -> None:
        """A key that stops parsing shows as a removal and a warning."""
        self.watcher.start()
        self.store.put(b"/hosts/a/127.0.0.1:4000", b"{bad")
        self.assertEqual(self.lines(), ["- a 127.0.0.1:4000 revision=3"])
        self.assertIn("skipping key", self.err.getvalue())

    def test_firstReadFails(self) -> None:
        """If etcd cannot be read at the start, the watch fails at once."""
        self.store.unavailable = True
        self.failureResultOf(self.watcher.start(), EtcdUnavailable)

    def test_resumes(self) -> None:
        """An interrupted watch resumes from the next revision after a delay, losing nothing."""
        self.watcher.start()
        self.store.disconnect()
        self.assertIn("watch interrupted", self.err.getvalue())
        self.store.put(b"/hosts/c/127.0.0.1:4000", b"")
        self.assertEqual(self.lines(), [])
        self.clock.advance(1)
        self.assertEqual(self.lines(), ["+ c 127.0.0.1:4000 revision=3"])
        self.assertEqual(self.successResultOf(self.watcher.stop()), 0)

    def test_stopWhileWaiting(self) -> None:
        """Stopping during the delay before a retry ends at once, leaving no timer."""
        done = self.watcher.start()
        self.store.disconnect()
        self.watcher.stop()
        self.assertEqual(self.successResultOf(done), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_compacted(self) -> None:
        """After a compaction the routes are read again and the difference printed."""
        self.watcher.start()
        self.store.disconnect()
        self.store.put(b"/hosts/c/127.0.0.1:4000", b"")
        self.store.delete(b"/hosts/a/127.0.0.1:4000")
        self.store.compact(self.store.revision)
        self.clock.advance(1)
        self.assertIn("compacted", self.err.getvalue())
        self.assertEqual(self.lines(), ["- a 127.0.0.1:4000 revision=4", "+ c 127.0.0.1:4000 revision=4"])
        self.store.put(b"/hosts/d/127.0.0.1:4000", b"")
        self.assertEqual(self.lines(), ["+ d 127.0.0.1:4000 revision=5"])


class MainTests(SynchronousTestCase):
    def test_usageError(self) -> None:
        """A bad argument exits 2 with one line on stderr, before any I/O."""
        err = io.StringIO()
        self.patch(__import__("sys"), "stderr", err)
        e = self.assertRaises(SystemExit, main, ["add", "bad host", "h:1"])
        self.assertEqual(e.code, 2)
        self.assertEqual(err.getvalue(), "revproxyctl: invalid host 'bad host'\n")

    def test_badImportFile(self) -> None:
        """An invalid import document exits 2 before etcd is contacted."""
        err = io.StringIO()
        sys = __import__("sys")
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdin", io.StringIO('{"h": ["nope"]}'))
        e = self.assertRaises(SystemExit, main, ["--etcd", "http://127.0.0.1:1", "import", "-"])
        self.assertEqual(e.code, 2)
        self.assertIn("<stdin>: host 'h', upstream #1", err.getvalue())
