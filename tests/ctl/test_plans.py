"""
Tests for L{revproxy.ctl.plans}: reading state, planning changes and
formatting them, with no I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.ctl.plans import (
    Change,
    CommandError,
    formatChange,
    formatTable,
    planAdd,
    planImport,
    planRm,
)
from revproxy.routing import parseRouteKey, parseUpstream
from revproxy.routing.codec import parseStored, routeKey, routeValue
from tests.ctl.samples import U1, U2, U3, state, weighted


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
