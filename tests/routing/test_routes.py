"""
Tests for L{revproxy.routing}: parsing upstreams, host patterns and routes,
host normalization and the route table's lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing.balancing import roundRobin
from revproxy.routing.resolver import RouteResolver
from revproxy.routing import (
    HostRoute,
    RouteError,
    RouteTable,
    Upstream,
    normalizeRequestHost,
    parseHostPattern,
    parseRoute,
    parseRouteKey,
    parseUpstream,
)


class ParseUpstreamTests(SynchronousTestCase):
    def test_hostPort(self) -> None:
        """
        C{host:port} is a plain-HTTP upstream with no base path.
        """
        self.assertEqual(
            parseUpstream("127.0.0.1:4000"), Upstream("http", "127.0.0.1", 4000)
        )

    def test_ipv6(self) -> None:
        """
        C{[v6]:port} is an IPv6 upstream, kept without brackets.
        """
        u = parseUpstream("[::1]:8080")
        self.assertEqual(u, Upstream("http", "::1", 8080))
        self.assertEqual(u.authority, "[::1]:8080")

    def test_urls(self) -> None:
        """
        http and https URLs give scheme, default port and base path.
        """
        self.assertEqual(
            parseUpstream("http://app.internal:8080/base/"),
            Upstream("http", "app.internal", 8080, b"/base/"),
        )
        self.assertEqual(
            parseUpstream("https://Example.COM"),
            Upstream("https", "example.com", 443),
        )
        self.assertEqual(parseUpstream("http://h"), Upstream("http", "h", 80))

    def test_rootPathIsNoBase(self) -> None:
        """
        A URL whose path is only C{/} has no base path.
        """
        self.assertEqual(parseUpstream("http://h:1/").basePath, b"")

    def test_strRoundTrips(self) -> None:
        """
        The string form of an upstream parses back to the same upstream.
        """
        for text in ["h:1", "[::1]:2", "https://h:3/x/", "http://h:4/y"]:
            u = parseUpstream(text)
            self.assertEqual(parseUpstream(str(u)), u)

    def test_bad(self) -> None:
        """
        Values that are no upstream raise L{RouteError} with a one-line
        message naming the value.
        """
        for text in [
            "",
            "ftp://x",
            "nonsense",
            "h:0",
            "h:99999",
            "h:port",
            "http://user@h:1",
            "h:1/path",
            "http://h:1/?q=1",
            "http://h:1/#f",
            "[zz]:1",
            "[1.2.3.4]:1",
            "-bad-.com:1",
            "a..b:1",
            "http://h:1/a b",
            "http://h:1/é",
        ]:
            with self.assertRaises(RouteError, msg=text) as cm:
                parseUpstream(text)
            message = str(cm.exception)
            self.assertNotIn("\n", message)
            if text:
                self.assertIn(repr(text), message)

    def test_weight(self) -> None:
        """
        A weight is kept but does not make two upstreams different.
        """
        self.assertEqual(parseUpstream("h:1", weight=5).weight, 5)
        self.assertEqual(parseUpstream("h:1", weight=5), parseUpstream("h:1"))
        self.assertRaises(RouteError, parseUpstream, "h:1", weight=0)


class HostPatternTests(SynchronousTestCase):
    def test_normalized(self) -> None:
        """
        Host patterns are lower-cased and lose a trailing dot.
        """
        self.assertEqual(parseHostPattern("Blog.Example.COM."), "blog.example.com")
        self.assertEqual(parseHostPattern("*.Example.com"), "*.example.com")
        self.assertEqual(parseHostPattern("*"), "*")
        self.assertEqual(parseHostPattern("10.0.0.1"), "10.0.0.1")
        self.assertEqual(parseHostPattern("[::1]"), "[::1]")

    def test_bad(self) -> None:
        """
        Patterns with a port, a misplaced wildcard or bad labels are refused.
        """
        for text in ["", "a:80", "*.", "a.*.com", "**", "a b", "-a.com", "[zz]"]:
            self.assertRaises(RouteError, parseHostPattern, text)


class ParseRouteTests(SynchronousTestCase):
    def test_route(self) -> None:
        """
        C{HOST=UP,UP} gives the normalized host and its upstreams in order.
        """
        host, ups = parseRoute("Blog.Example.com=127.0.0.1:4000,[::1]:4001")
        self.assertEqual(host, "blog.example.com")
        self.assertEqual(
            ups, (Upstream("http", "127.0.0.1", 4000), Upstream("http", "::1", 4001))
        )

    def test_bad(self) -> None:
        """
        Malformed routes and duplicated upstreams are refused.
        """
        for text in ["nonsense", "=a:1", "a=", "a=b:1,b:1", "a=b:1,", "a=ftp://x"]:
            self.assertRaises(RouteError, parseRoute, text)


class ParseRouteKeyTests(SynchronousTestCase):
    def test_seedKey(self) -> None:
        """
        C{/hosts/<host>/<upstream>} gives the host and upstream; the value
        is ignored unless it is a JSON object.
        """
        self.assertEqual(
            parseRouteKey("/hosts/Blog.example.com/127.0.0.1:4000", "/hosts/", b"x"),
            ("blog.example.com", Upstream("http", "127.0.0.1", 4000)),
        )

    def test_urlUpstream(self) -> None:
        """
        The upstream is everything after the host's slash, slashes and all.
        """
        host, up = parseRouteKey("/hosts/h/http://10.0.0.1:8080/base", "/hosts/")
        self.assertEqual(up, Upstream("http", "10.0.0.1", 8080, b"/base"))

    def test_weight(self) -> None:
        """
        A JSON object value sets the weight.
        """
        _, up = parseRouteKey("/hosts/h/u:1", "/hosts/", b'{"weight": 5}')
        self.assertEqual(up.weight, 5)
        _, up = parseRouteKey("/hosts/h/u:1", "/hosts/", b"{}")
        self.assertEqual(up.weight, 1)

    def test_bad(self) -> None:
        """
        Keys without a host or upstream, bad addresses and bad JSON objects
        raise L{RouteError} naming the key.
        """
        for key, value in [
            ("/hosts/", b""),
            ("/hosts/h", b""),
            ("/hosts/h/", b""),
            ("/hosts//u:1", b""),
            ("/hosts/h/nonsense", b""),
            ("/hosts/h:80/u:1", b""),
            ("/other/h/u:1", b""),
            ("/hosts/h/u:1", b"{bad json"),
            ("/hosts/h/u:1", b'{"weight": 0}'),
            ("/hosts/h/u:1", b'{"weight": "3"}'),
            ("/hosts/h/u:1", b'{"weight": true}'),
        ]:
            with self.assertRaises(RouteError, msg=(key, value)) as cm:
                parseRouteKey(key, "/hosts/", value)
            self.assertIn(repr(key), str(cm.exception))


class NormalizeHostTests(SynchronousTestCase):
    def test_normalize(self) -> None:
        """
        Request hosts are lower-cased, lose port and trailing dot; IPv6
        literals keep their brackets.
        """
        cases = {
            b"Blog.Example.COM": b"blog.example.com",
            b"blog.example.com:3000": b"blog.example.com",
            b"blog.example.com.:80": b"blog.example.com",
            b"[::1]:3000": b"[::1]",
            b"[::1]": b"[::1]",
            b"127.0.0.1:80": b"127.0.0.1",
            b"": b"",
        }
        for raw, expected in cases.items():
            self.assertEqual(normalizeRequestHost(raw), expected, raw)

    @given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
           st.integers(1, 65535), st.booleans(), st.booleans())
    def test_anyCaseAndPort(self, host: str, port: int, upper: bool, dot: bool) -> None:
        """
        Case, a port and a trailing dot never change the normalized host.
        """
        raw = (host.upper() if upper else host) + ("." if dot else "")
        raw += f":{port}"
        self.assertEqual(normalizeRequestHost(raw.encode()), host.encode())


def _table(*hosts: str) -> RouteTable:
    return RouteTable.fromMapping(
        {h: (Upstream("http", "10.0.0.1", i + 1),) for i, h in enumerate(hosts)}
    )


class RouteTableTests(SynchronousTestCase):
    def test_exact(self) -> None:
        """
        An exact host matches before any wildcard.
        """
        table = _table("*.example.com", "a.example.com", "*")
        self.assertEqual(table.lookup(b"a.example.com").host, "a.example.com")

    def test_longestWildcard(self) -> None:
        """
        The longest matching C{*.suffix} wins, at any depth.
        """
        table = _table("*.example.com", "*.b.example.com")
        self.assertEqual(table.lookup(b"x.b.example.com").host, "*.b.example.com")
        self.assertEqual(table.lookup(b"y.x.b.example.com").host, "*.b.example.com")
        self.assertEqual(table.lookup(b"x.a.example.com").host, "*.example.com")

    def test_wildcardNotApex(self) -> None:
        """
        C{*.example.com} does not match C{example.com} itself.
        """
        self.assertIsNone(_table("*.example.com").lookup(b"example.com"))

    def test_default(self) -> None:
        """
        C{*} catches every host nothing else matches, also the empty one.
        """
        table = _table("a.com", "*")
        self.assertEqual(table.lookup(b"other.org").host, "*")
        self.assertEqual(table.lookup(b"").host, "*")

    def test_noMatch(self) -> None:
        """
        With no default route an unknown host finds nothing.
        """
        self.assertIsNone(_table("a.com").lookup(b"b.com"))

    def test_withChanges(self) -> None:
        """
        C{withChanges} returns a new table, leaves the old one alone, keeps
        the route object (and so its runtime state) of unchanged hosts and removes hosts
        mapped to nothing.
        """
        old = _table("a.com", "b.com", "c.com")
        a = old.lookup(b"a.com")
        new = old.withChanges(
            {
                "a.com": a.upstreams,
                "b.com": None,
                "c.com": (),
                "d.com": (Upstream("http", "h", 1),),
            }
        )
        self.assertEqual(sorted(old.routes), ["a.com", "b.com", "c.com"])
        self.assertEqual(sorted(new.routes), ["a.com", "d.com"])
        self.assertIs(new.lookup(b"a.com"), a)
        self.assertIsNotNone(old.lookup(b"b.com"))
        self.assertIsNone(new.lookup(b"b.com"))
        self.assertIsNotNone(new.lookup(b"d.com"))
        self.assertIsNone(old.lookup(b"d.com"))

    def test_withChangesWildcardAndDefault(self) -> None:
        """
        Wildcard and default routes are added and removed like any host.
        """
        up = (Upstream("http", "h", 1),)
        t1 = _table("a.com")
        t2 = t1.withChanges({"*.b.com": up, "*": up})
        self.assertEqual(t2.lookup(b"x.b.com").host, "*.b.com")
        self.assertEqual(t2.lookup(b"other").host, "*")
        self.assertIsNone(t1.lookup(b"other"))
        t3 = t2.withChanges({"*.b.com": None, "*": None})
        self.assertIsNone(t3.lookup(b"x.b.com"))
        self.assertIsNone(t3.lookup(b"other"))
        self.assertEqual(len(t3), 1)
        self.assertEqual(t2.lookup(b"x.b.com").host, "*.b.com")

    def test_withNoChangesSameRoutes(self) -> None:
        """
        Applying changes that change nothing keeps every route object.
        """
        t1 = _table("a.com", "*")
        t2 = t1.withChanges({"a.com": t1.lookup(b"a.com").upstreams, "zz.com": None})
        self.assertIs(t2.routes, t1.routes)

    def test_withChangesNewWeight(self) -> None:
        """
        A changed weight makes a new route for the host.
        """
        old = _table("a.com")
        a = old.lookup(b"a.com")
        new = old.withChanges({"a.com": (Upstream("http", "10.0.0.1", 1, weight=3),)})
        self.assertIsNot(new.lookup(b"a.com"), a)

    def test_emptyRoute(self) -> None:
        """
        A route needs at least one upstream.
        """
        self.assertRaises(RouteError, HostRoute, "a.com", (), roundRobin)

    def test_changedFrom(self) -> None:
        """
        A table made by C{withChanges} names the hosts it changed relative
        to the table it was made from, and to no other.
        """
        t1 = _table("a.com", "b.com")
        t2 = t1.withChanges({"a.com": None, "c.com": (Upstream("http", "h", 1),)})
        self.assertEqual(sorted(t2.changedFrom(t1) or ()), ["a.com", "c.com"])
        self.assertIsNone(t2.changedFrom(_table("a.com", "b.com")))
        self.assertIsNone(t1.changedFrom(t2))


class RecordingObserver:
    """
    A L{revproxy.routing.resolver.RouteObserver} that records each change.
    """

    def __init__(self) -> None:
        self.changes: list[tuple[list[str], list[str]]] = []

    def routesChanged(self, removed: Sequence[HostRoute], added: Sequence[HostRoute]) -> None:
        self.changes.append(
            (sorted(r.host for r in removed), sorted(r.host for r in added))
        )


class ResolverObserverTests(SynchronousTestCase):
    def test_addObserverHearsCurrent(self) -> None:
        """
        A new observer hears of every current route as added; with no table
        yet, of nothing.
        """
        resolver = RouteResolver(_table("a.com", "b.com"))
        recorder = RecordingObserver()
        resolver.addObserver(recorder)
        self.assertEqual(recorder.changes, [([], ["a.com", "b.com"])])
        empty = RecordingObserver()
        RouteResolver().addObserver(empty)
        self.assertEqual(empty.changes, [])

    def test_applyTellsChangedHosts(self) -> None:
        """
        C{apply} tells the observers of the changed hosts only, and nothing
        when nothing changed.
        """
        resolver = RouteResolver(_table("a.com", "b.com", "c.com"))
        recorder = RecordingObserver()
        resolver.addObserver(recorder)
        a = resolver.table.routes["a.com"]  # type: ignore[union-attr]
        resolver.apply(
            {"a.com": a.upstreams, "b.com": None, "c.com": (Upstream("http", "h", 9),)}
        )
        resolver.apply({"a.com": a.upstreams})
        self.assertEqual(recorder.changes[1:], [(["b.com", "c.com"], ["c.com"])])

    def test_firstTable(self) -> None:
        """
        The first table, by C{apply} or C{replace}, is all added.
        """
        resolver = RouteResolver()
        recorder = RecordingObserver()
        resolver.addObserver(recorder)
        resolver.apply({"a.com": (Upstream("http", "h", 1),)})
        self.assertEqual(recorder.changes, [([], ["a.com"])])

    def test_replaceComparesWhole(self) -> None:
        """
        C{replace} with an unrelated table tells of every route that is not
        the same object in both.
        """
        t1 = _table("a.com", "b.com")
        resolver = RouteResolver(t1)
        recorder = RecordingObserver()
        resolver.addObserver(recorder)
        resolver.replace(RouteTable([t1.routes["a.com"], *_table("c.com").routes.values()]))
        self.assertEqual(recorder.changes[1:], [(["b.com"], ["c.com"])])



class HealthValueTests(SynchronousTestCase):
    def test_healthAndBalance(self) -> None:
        """
        The value's health object and balance name reach the upstream, and
        routeValue writes them back the same.
        """
        from revproxy.routing.address import HealthCheck
        from revproxy.routing.codec import parseRouteKey, routeValue

        value = b'{"weight": 3, "health": {"path": "/ready", "interval": 2}, "balance": "least-requests"}'
        host, upstream = parseRouteKey("/hosts/a.com/10.0.0.1:80", "/hosts/", value)
        self.assertEqual(upstream.weight, 3)
        self.assertEqual(upstream.health, HealthCheck(path="/ready", interval=2.0))
        self.assertEqual(upstream.balance, "least-requests")
        again = parseRouteKey(
            "/hosts/a.com/10.0.0.1:80",
            "/hosts/",
            routeValue(upstream.weight, upstream.health, upstream.balance),
        )[1]
        self.assertEqual(
            (again.weight, again.health, again.balance),
            (upstream.weight, upstream.health, upstream.balance),
        )

    def test_bad(self) -> None:
        """
        A bad health object or balance name makes the key not parse, with
        the reason.
        """
        from revproxy.routing.codec import parseRouteKey

        for value, why in [
            (b'{"health": 3}', "health"),
            (b'{"health": {"path": "ready"}}', "path"),
            (b'{"health": {"interval": -1}}', "interval"),
            (b'{"health": {"rise": 1.5}}', "rise"),
            (b'{"balance": "fastest"}', "balance"),
        ]:
            with self.assertRaises(RouteError) as cm:
                parseRouteKey("/hosts/a.com/10.0.0.1:80", "/hosts/", value)
            self.assertIn(why, str(cm.exception))

    def test_hostPolicy(self) -> None:
        """
        A host takes the policy its first key naming one names; a change of
        it makes a new route.
        """
        from revproxy.routing.balancing import leastRequests

        a = parseUpstream("10.0.0.1:1")
        b = Upstream("http", "10.0.0.2", 2, balance="least-requests")
        table = RouteTable().withChanges({"x.com": [a, b]})
        self.assertIs(table.routes["x.com"].policy, leastRequests)
        plain = Upstream("http", "10.0.0.2", 2)
        newer = table.withChanges({"x.com": [a, plain]})
        self.assertIsNot(newer.routes["x.com"], table.routes["x.com"])
        self.assertIs(newer.routes["x.com"].policy, roundRobin)
