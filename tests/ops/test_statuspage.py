"""
Tests for L{revproxy.ops.statuspage} and the fleet's part of
L{revproxy.ops.admin}: the HTML status page and a stale node's
C{/readyz}, in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.nodes import NodeRecord, NodeRegistration
from revproxy.ops.fleet import Fleet
from tests.ops.test_admin import AdminHarness


class StaleSnapshot:
    stale = True

    def describe(self) -> str:
        return "stale: serving the last-good snapshot of revision 7"


def withFleet(h: AdminHarness, stale: bool = False, requireEtcd: bool = False) -> Fleet:
    assert h.sync is not None
    record = NodeRecord("n1", "0.1.0", 0.0, "http://127.0.0.1:9", 3, True, 1)
    registration = NodeRegistration(h.store, "/revproxy/nodes/", lambda: record, h.clock)
    registration.startService()
    snapshot: Any = StaleSnapshot() if stale else None
    fleet = Fleet(registration, snapshot, h.store, requireEtcd)
    h.admin.fleet = fleet
    return fleet


class StatusPageTests(SynchronousTestCase):
    def test_pageShowsRoutesNodesAndState(self) -> None:
        """
        / is an HTML page with the routes and their health, the applied
        revision, the watch state and the fleet's nodes read from etcd.
        """
        h = AdminHarness(withSync=True)
        assert h.sync is not None
        h.sync.startService()
        withFleet(h)
        code, body, ctype = h.get("/", self)
        self.assertEqual((code, ctype), (200, "text/html; charset=utf-8"))
        page = body.decode()
        self.assertIn('data-host="e.com" data-upstream="10.0.0.3:80"', page)
        self.assertIn('<td id="watch" class="up">live</td>', page)
        self.assertIn('data-node="n1"', page)
        self.assertIn("http://127.0.0.1:9", page)
        self.assertIn('<link rel="icon" href="data:,">', page)
        self.assertNotIn("http://cdn", page)
        self.assertIn("setTimeout(refresh", page)

    def test_pageEscapes(self) -> None:
        """
        Names on the page are HTML-escaped.
        """
        h = AdminHarness(withSync=True)
        assert h.sync is not None
        h.sync.startService()
        h.store.put(b"/revproxy/nodes/x", NodeRecord("<b>x", "", 0, None, 1, True, 0).toJSON())
        withFleet(h)
        page = h.get("/", self)[1].decode()
        self.assertIn("&lt;b&gt;x", page)
        self.assertNotIn("<b>x", page)

    def test_withoutEtcd(self) -> None:
        """
        With static routes the page has routes and no fleet.
        """
        code, body, _ = AdminHarness().get("/", self)
        self.assertEqual(code, 200)
        self.assertIn(b'data-host="a.com"', body)
        self.assertNotIn(b"Fleet", body)

    def test_otherPathsNotFound(self) -> None:
        """
        A path the admin endpoint does not serve is a 404, not the page.
        """
        self.assertEqual(AdminHarness().get("/nope", self)[0], 404)


class StaleReadyTests(SynchronousTestCase):
    def test_staleIsReadyWithAWord(self) -> None:
        """
        A node serving its snapshot before etcd is read answers /readyz
        200 with a body saying stale.
        """
        h = AdminHarness(withSync=True)
        assert h.sync is not None
        h.sync.startService()
        withFleet(h, stale=True)
        code, body, _ = h.get("/readyz", self)
        self.assertEqual(code, 200)
        self.assertIn(b"ready, stale: serving the last-good snapshot", body)

    def test_staleNotReadyWhenEtcdRequired(self) -> None:
        """
        With --ready-requires-etcd a stale node answers 503.
        """
        h = AdminHarness(withSync=True)
        assert h.sync is not None
        h.sync.startService()
        withFleet(h, stale=True, requireEtcd=True)
        code, body, _ = h.get("/readyz", self)
        self.assertEqual(code, 503)
        self.assertIn(b"--ready-requires-etcd", body)
