"""
Tests for L{revproxy.ctl.fleet} and the fleet options of
L{revproxy.ctl.args}: C{--wait}, C{nodes} and C{explain} on the in-memory
store and a fake clock.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ctl.args import UsageError, parseArgs
from revproxy.ctl.commands import runAdd
from revproxy.ctl.fleet import runExplain, runNodes, waitApplied
from revproxy.ctl.plans import CommandError
from revproxy.etcd.memory import MemoryRouteStore
from revproxy.etcd.nodes import NodeRecord, nodeKey

PREFIX = "/revproxy/nodes/"


def run(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


def report(store: MemoryRouteStore, node: str, revision: int, admin: str | None = None) -> None:
    record = NodeRecord(node, "0.1.0", 0.0, admin, revision, True, 1)
    store.put(nodeKey(PREFIX, node), record.toJSON())


class ArgsTests(SynchronousTestCase):
    def test_waitForms(self) -> None:
        """
        A bare --wait waits 10 s; --wait=S waits S; without it, no wait; a
        bad value is a usage error naming --wait.
        """
        self.assertEqual(parseArgs(["add", "a.com", "1.2.3.4:80", "--wait"], {}).wait, 10.0)
        self.assertEqual(parseArgs(["add", "--wait", "a.com", "1.2.3.4:80"], {}).wait, 10.0)
        self.assertEqual(parseArgs(["rm", "a.com", "--wait=2.5"], {}).wait, 2.5)
        self.assertEqual(parseArgs(["import", "f.json", "--wait=1"], {}).wait, 1.0)
        self.assertIsNone(parseArgs(["add", "a.com", "1.2.3.4:80"], {}).wait)
        with self.assertRaises(UsageError) as e:
            parseArgs(["add", "a.com", "1.2.3.4:80", "--wait=soon"], {})
        self.assertIn("--wait", str(e.exception))

    def test_nodesAndExplain(self) -> None:
        """
        nodes takes --json and --nodes-prefix; explain takes HOST and an
        optional PATH.
        """
        c = parseArgs(["nodes", "--json", "--nodes-prefix", "/fleet"], {})
        self.assertEqual((c.command, c.json, c.nodesPrefix), ("nodes", True, "/fleet/"))
        c = parseArgs(["explain", "Www.A.com", "/x"], {})
        self.assertEqual((c.host, c.path), ("www.a.com", "/x"))


class WaitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryRouteStore()
        self.out = io.StringIO()

    def wait(self, revision: int, seconds: float = 5) -> Deferred[int]:
        config = parseArgs(["add", "a.com", "1.2.3.4:80", f"--wait={seconds}"], {})
        return run(waitApplied(self.store, config, revision, self.clock, self.out))

    def test_returnsWhenAllApplied(self) -> None:
        """
        The wait ends when every live node reports the revision, not
        before, and names the nodes waited for.
        """
        report(self.store, "n1", 1)
        report(self.store, "n2", 1)
        d = self.wait(10)
        self.assertNoResult(d)
        report(self.store, "n1", 10)
        self.assertNoResult(d)
        report(self.store, "n2", 11)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIn("applied by all 2 nodes", self.out.getvalue())
        self.assertIn("n1, n2", self.out.getvalue())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutNamesLaggards(self) -> None:
        """
        On timeout the command fails naming the nodes that lag and their
        revision.
        """
        report(self.store, "n1", 10)
        report(self.store, "n2", 3)
        d = self.wait(10, 2)
        self.clock.advance(2)
        failure = self.failureResultOf(d, CommandError)
        message = str(failure.value)
        self.assertIn("n2 (at revision 3)", message)
        self.assertNotIn("n1 (", message)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadNodeNotWaitedFor(self) -> None:
        """
        A node whose record goes (its lease expired) is not waited for.
        """
        report(self.store, "n1", 10)
        report(self.store, "n2", 3)
        d = self.wait(10)
        self.store.delete(nodeKey(PREFIX, "n2"))
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIn("n2 left the fleet meanwhile", self.out.getvalue())

    def test_noNodes(self) -> None:
        """
        With no live node there is nothing to wait for: it says so.
        """
        self.assertEqual(self.successResultOf(self.wait(10)), 0)
        self.assertIn("nothing to wait for", self.out.getvalue())

    def test_addGivesItsRevision(self) -> None:
        """
        add hands the revision of its transaction to the wait.
        """
        written: list[int] = []
        config = parseArgs(["add", "a.com", "1.2.3.4:80", "--wait"], {})
        self.successResultOf(run(runAdd(self.store, config, self.out, written)))
        self.assertEqual(written, [self.store.revision])


class NodesTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        nodes lists each live node with its applied revision, its lag
        behind the newest route change, its watch state and age.
        """
        store = MemoryRouteStore()
        report(store, "n1", 0)
        store.put(b"/hosts/a.com/1.2.3.4:80", b"")
        routes = store.revision
        report(store, "n2", routes)
        out, err = io.StringIO(), io.StringIO()
        self.successResultOf(run(runNodes(store, parseArgs(["nodes"], {}), out, err)))
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0].split(), ["NODE", "APPLIED", "LAG", "WATCH", "AGE", "ROUTES", "ADMIN"])
        self.assertEqual(lines[1].split()[:4], ["n1", "0", str(routes), "live"])
        self.assertEqual(lines[2].split()[:4], ["n2", str(routes), "0", "live"])
        self.assertIn("2 nodes", lines[3])
        out = io.StringIO()
        self.successResultOf(run(runNodes(store, parseArgs(["nodes", "--json"], {}), out, err)))
        doc = json.loads(out.getvalue())
        self.assertEqual([n["id"] for n in doc["nodes"]], ["n1", "n2"])
        self.assertEqual(doc["routes_revision"], routes)


class ExplainTests(SynchronousTestCase):
    def test_explain(self) -> None:
        """
        explain names the matched pattern and why, the upstreams, and each
        node's view read from its admin URL.
        """
        store = MemoryRouteStore()
        store.put(b"/hosts/*.a.com/1.2.3.4:80", b'{"weight": 2}')
        report(store, "n1", 5, "http://127.0.0.1:9901")
        fetched: list[str] = []

        def fetch(url: str) -> Deferred[bytes]:
            fetched.append(url)
            return succeed(json.dumps({
                "pattern": "*.a.com", "policy": "round-robin", "usable": 0,
                "upstreams": [{"upstream": "1.2.3.4:80", "state": "down", "eligible": False,
                               "why": "down: failed its active health checks"}],
            }).encode())

        out, err = io.StringIO(), io.StringIO()
        config = parseArgs(["explain", "www.a.com", "/x"], {})
        self.successResultOf(run(runExplain(store, config, out, err, fetch)))  # type: ignore[arg-type]
        text = out.getvalue()
        self.assertIn("route: *.a.com (the wildcard *.a.com", text)
        self.assertIn("upstream 1.2.3.4:80 weight 2", text)
        self.assertIn("node n1: pattern *.a.com, policy round-robin, 0 usable: 1.2.3.4:80 down", text)
        self.assertEqual(fetched, ["http://127.0.0.1:9901/routes/www.a.com"])

    def test_noRoute(self) -> None:
        """
        A host no route matches is a failure saying so.
        """
        config = parseArgs(["explain", "b.com"], {})
        d = run(runExplain(MemoryRouteStore(), config, io.StringIO(), io.StringIO(),
                           lambda url: succeed(b"")))  # type: ignore[arg-type]
        self.assertIn("no route matches", str(self.failureResultOf(d, CommandError).value))
