"""
Tests for L{revproxy.routing.converter}: routes from a host converter
function.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import RouteError, parseUpstream
from revproxy.routing.balancing import randomChoice
from revproxy.routing.converter import HostConverterTable
from revproxy.routing.resolver import RouteResolver


class HostConverterTableTests(SynchronousTestCase):
    """
    L{HostConverterTable} asks its function for the route of each host.
    """

    def test_upstreamText(self) -> None:
        """
        A host the function maps to an address gets a route to it; the
        function sees the host as text.
        """
        seen: list[str] = []

        def convert(host: str) -> str:
            seen.append(host)
            return "127.0.0.1:4000"

        route = HostConverterTable(convert).lookup(b"a.example.com")
        assert route is not None
        self.assertEqual(route.upstreams, (parseUpstream("127.0.0.1:4000"),))
        self.assertEqual(seen, ["a.example.com"])

    def test_noRoute(self) -> None:
        """
        L{None} or no upstream at all from the function is no route.
        """
        self.assertIsNone(HostConverterTable(lambda host: None).lookup(b"a"))
        self.assertIsNone(HostConverterTable(lambda host: []).lookup(b"a"))

    def test_severalUpstreams(self) -> None:
        """
        Several upstreams, as text or L{Upstream}, make one route with all
        of them, in order, balanced by the table's policy.
        """
        second = parseUpstream("http://10.0.0.2:8080/base")
        table = HostConverterTable(
            lambda host: ["10.0.0.1:80", second], policy=randomChoice
        )
        route = table.lookup(b"h")
        assert route is not None
        self.assertEqual(route.upstreams, (parseUpstream("10.0.0.1:80"), second))
        self.assertIs(route.policy, randomChoice)

    def test_routesShared(self) -> None:
        """
        Hosts sent to the same upstreams share one route, so that its
        balancing turn goes on across them and across requests.
        """
        table = HostConverterTable(lambda host: ["10.0.0.1:80", "10.0.0.2:80"])
        self.assertIs(table.lookup(b"a"), table.lookup(b"b"))
        self.assertIs(table.lookup(b"a"), table.lookup(b"a"))

    def test_badAddress(self) -> None:
        """
        An address that does not parse raises L{RouteError}.
        """
        table = HostConverterTable(lambda host: "not an address")
        self.assertRaises(RouteError, table.lookup, b"a")

    def test_bounded(self) -> None:
        """
        The routes kept are bounded: a function that names a new upstream
        for every host does not grow the table without end.
        """
        table = HostConverterTable(lambda host: f"10.0.0.1:{host}", maxRoutes=10)
        for port in range(1, 100):
            self.assertIsNotNone(table.lookup(str(port).encode()))
        self.assertLessEqual(len(table._routes), 10)
        self.assertLessEqual(len(table._parsed), 10)
        self.assertEqual(len(table), 0)


class _Observer:
    def __init__(self) -> None:
        self.changes: list[tuple[list[str], list[str]]] = []

    def routesChanged(self, removed: object, added: object) -> None:
        self.changes.append(
            (
                [str(r.upstreams[0]) for r in removed],  # type: ignore[attr-defined]
                [str(r.upstreams[0]) for r in added],  # type: ignore[attr-defined]
            )
        )


class ObserverTests(SynchronousTestCase):
    """
    Route observers hear of the routes a converter table makes and drops.
    """

    def test_madeAndDropped(self) -> None:
        """
        An observer hears of each route made, once, and of each route
        dropped past the bound.
        """
        table = HostConverterTable(lambda host: f"10.0.0.1:{host}", maxRoutes=2)
        observer = _Observer()
        table.observe(observer)
        table.lookup(b"1")
        table.lookup(b"1")
        table.lookup(b"2")
        table.lookup(b"3")
        self.assertEqual(
            observer.changes,
            [([], ["10.0.0.1:1"]), ([], ["10.0.0.1:2"]), (["10.0.0.1:1"], ["10.0.0.1:3"])],
        )

    def test_resolverHandsObservers(self) -> None:
        """
        A resolver serving a converter table hands it its observers, those
        added before the table and those added after.
        """
        before, after = _Observer(), _Observer()
        resolver = RouteResolver()
        resolver.addObserver(before)
        table = HostConverterTable(lambda host: "10.0.0.1:80")
        resolver.replace(table)
        resolver.resolve(b"a")
        resolver.addObserver(after)
        self.assertEqual(before.changes, [([], ["10.0.0.1:80"])])
        self.assertEqual(after.changes, [([], ["10.0.0.1:80"])])
