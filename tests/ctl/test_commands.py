"""
Tests for L{revproxy.ctl.commands}: the commands, and watch, on the in-memory
route store.
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

from revproxy.ctl.args import Config, parseArgs
from revproxy.ctl.commands import (
    ATTEMPTS,
    RouteWatcher,
    describeFailure,
    runAdd,
    runExport,
    runImport,
    runLs,
    runRm,
)
from revproxy.ctl.plans import (
    CommandError,
)
from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.types import EtcdError, EtcdUnavailable, TxnResult
from tests.ctl.samples import U1, U2, U3


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

    def test_probeFailureRestarts(self) -> None:
        """A failed liveness probe restarts the watch, saying why, and loses nothing."""
        self.watcher.start()
        original = self.store.getPrefix
        self.store.getPrefix = lambda p, revision=None: fail(  # type: ignore[method-assign]
            EtcdUnavailable(["etcd down"])
        )
        self.clock.advance(5)
        self.assertIn(
            "revproxyctl: watch interrupted (liveness probe failed: etcd down); retrying in 1s",
            self.err.getvalue(),
        )
        self.store.getPrefix = original  # type: ignore[method-assign]
        self.store.put(b"/hosts/c/127.0.0.1:4000", b"")
        self.clock.advance(1)
        self.assertEqual(self.lines(), ["+ c 127.0.0.1:4000 revision=3"])
        self.assertEqual(self.successResultOf(self.watcher.stop()), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LsAdminTests(SynchronousTestCase):
    def _routes(self) -> bytes:
        return json.dumps({"hosts": {"a": [
            {"upstream": "127.0.0.1:4000", "state": "ejected", "ejected_for": 7.2,
             "consecutive_failures": 3, "requests_in_flight": 0,
             "last_check": None},
            {"upstream": "127.0.0.1:4001", "state": "up", "ejected_for": None,
             "consecutive_failures": 0, "requests_in_flight": 2,
             "last_check": {"passed": True, "seconds_ago": 1.4}},
        ]}}).encode()

    def test_health(self) -> None:
        """ls --admin URL adds each upstream's state, failures, in-flight requests and last check from the node's /routes."""
        c = Commands(self)
        c.put("/hosts/a/127.0.0.1:4000")
        c.put("/hosts/a/127.0.0.1:4001")
        asked = []

        async def fetch(url: str) -> bytes:
            asked.append(url)
            return self._routes()

        config = c.config("ls", "--admin", "http://127.0.0.1:9901/")
        self.successResultOf(run(runLs(c.store, config, c.out, c.err, fetch)))
        self.assertEqual(asked, ["http://127.0.0.1:9901/routes"])
        self.assertEqual(c.out.getvalue().splitlines(), [
            "HOST  UPSTREAM        WEIGHT  STATE        FAILURES  INFLIGHT  CHECK",
            "a     127.0.0.1:4000  1       ejected(7s)  3         0         -",
            "a     127.0.0.1:4001  1       up           0         2         pass 1s ago",
        ])

    def test_adminUnreachable(self) -> None:
        """ls --admin with a node that cannot be read fails with one line naming the URL."""
        c = Commands(self)
        c.put("/hosts/a/127.0.0.1:4000")

        async def fetch(url: str) -> bytes:
            raise ConnectionRefusedError("refused")

        config = c.config("ls", "--admin", "http://127.0.0.1:9901")
        f = self.failureResultOf(run(runLs(c.store, config, c.out, c.err, fetch)))
        self.assertIn("cannot read http://127.0.0.1:9901/routes", str(f.value))

    def test_badAdmin(self) -> None:
        """ls --admin with something that is not an http URL is a usage error."""
        from revproxy.ctl.args import UsageError

        with self.assertRaises(UsageError):
            parseArgs(["ls", "--admin", "127.0.0.1:9901"], {})

    def test_weightChangeKeepsHealth(self) -> None:
        """add --weight on an upstream keeps the health and balance fields of its value."""
        c = Commands(self)
        c.put("/hosts/a/127.0.0.1:4000", b'{"health": {"path": "/ready"}, "balance": "hash"}')
        c.run("add", "a", "127.0.0.1:4000", "--weight", "2")
        self.assertEqual(
            json.loads(c.keys()["/hosts/a/127.0.0.1:4000"]),
            {"weight": 2, "health": {"path": "/ready"}, "balance": "hash"},
        )


class HealthDocumentTests(SynchronousTestCase):
    def test_exportImportKeepHealth(self) -> None:
        """export writes a value's health and balance; import of that document into an empty etcd writes them back, and changing them is a ~ change."""
        c = Commands(self)
        value = b'{"health": {"path": "/ready", "interval": 2.0}, "balance": "hash"}'
        c.put("/hosts/a/127.0.0.1:4000", value)
        c.run("export")
        document = json.loads(c.out.getvalue())
        self.assertEqual(document, {"a": [{
            "upstream": "127.0.0.1:4000", "weight": 1,
            "health": {"path": "/ready", "interval": 2.0}, "balance": "hash",
        }]})
        from revproxy.ctl.documents import parseRouteDocument

        routes = parseRouteDocument(json.dumps(document), "f")
        empty = Commands(self)
        empty.run("import", "f", routes=routes)
        self.assertEqual(json.loads(empty.keys()["/hosts/a/127.0.0.1:4000"]), json.loads(value))
        document["a"][0]["balance"] = "random"
        empty.lines()
        empty.run("import", "f", routes=parseRouteDocument(json.dumps(document), "f"))
        self.assertIn("~ a 127.0.0.1:4000 health/balance changed", empty.out.getvalue())
        self.assertEqual(json.loads(empty.keys()["/hosts/a/127.0.0.1:4000"])["balance"], "random")
