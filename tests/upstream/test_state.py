"""
Tests for L{revproxy.upstream.state}: per-upstream runtime state, per-host
balancing turns, and the registry that follows the route resolver.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import HostRoute, RouteTable, Upstream, parseUpstream
from revproxy.routing.balancing import randomChoice
from revproxy.routing.resolver import RouteResolver
from revproxy.upstream.state import DOWN, UNKNOWN, UP, UpstreamState, UpstreamStates


def _ups(*texts: str) -> list[Upstream]:
    return [parseUpstream(t) for t in texts]


def _follow(routes: dict[str, list[str]]) -> tuple[RouteResolver, UpstreamStates]:
    resolver = RouteResolver(
        RouteTable.fromMapping({h: _ups(*u) for h, u in routes.items()})
    )
    states = UpstreamStates(random.Random(0))
    resolver.addObserver(states)
    return resolver, states


def _route(resolver: RouteResolver, host: str) -> HostRoute:
    assert resolver.table is not None
    return resolver.table.routes[host]


class UpstreamStateTests(SynchronousTestCase):
    def test_initial(self) -> None:
        """
        A new state has nothing in flight, no failure and unknown health.
        """
        state = UpstreamState(parseUpstream("h:1"))
        self.assertEqual(
            (state.inflight, state.lastFailure, state.consecutiveFailures),
            (0, 0.0, 0),
        )
        self.assertEqual(state.ejectedUntil, 0.0)
        self.assertEqual(state.health, UNKNOWN)

    def test_failuresAndSuccess(self) -> None:
        """
        Failures count up and mark the upstream down; a success resets the
        count and marks it up.
        """
        state = UpstreamState(parseUpstream("h:1"))
        state.failed(10.0)
        state.failed(12.5)
        self.assertEqual((state.consecutiveFailures, state.lastFailure), (2, 12.5))
        self.assertEqual(state.health, DOWN)
        state.succeeded()
        self.assertEqual((state.consecutiveFailures, state.lastFailure), (0, 12.5))
        self.assertEqual(state.health, UP)


class HostStateTests(SynchronousTestCase):
    def test_roundRobinTurns(self) -> None:
        """
        Each pick takes a turn: round robin alternates strictly, also when
        picking among the candidates left after a failure.
        """
        resolver, states = _follow({"a": ["h:1", "h:2", "h:3"]})
        host = states.forRoute(_route(resolver, "a"))
        self.assertEqual([host.pick().upstream.port for _ in range(4)], [1, 2, 3, 1])
        self.assertEqual(host.turn, 4)
        self.assertEqual(host.pickFrom(host.states[1:]).upstream.port, 2)
        self.assertEqual(host.turn, 5)

    def test_perHost(self) -> None:
        """
        Each host keeps its own turn.
        """
        resolver, states = _follow({"a": ["h:1", "h:2"], "b": ["h:1", "h:2"]})
        a = states.forRoute(_route(resolver, "a"))
        b = states.forRoute(_route(resolver, "b"))
        a.pick()
        self.assertEqual(b.pick().upstream.port, 1)
        self.assertEqual(a.pick().upstream.port, 2)

    def test_policyOfTheRoute(self) -> None:
        """
        The route's policy picks, with the registry's random source.
        """
        route = HostRoute("a", tuple(_ups("h:1", "h:2", "h:3")), randomChoice)
        picks = []
        for _ in range(2):
            host = UpstreamStates(random.Random(7)).forRoute(route)
            picks.append([host.pick().upstream for _ in range(10)])
        self.assertEqual(picks[0], picks[1])
        self.assertEqual(len(set(picks[0])), 3)


class RegistryTests(SynchronousTestCase):
    def test_followsResolver(self) -> None:
        """
        The registry has a state per upstream of the current routes, one
        per identity however many hosts share it.
        """
        resolver, states = _follow({"a": ["h:1", "h:2"], "b": ["h:2", "h:3"]})
        self.assertEqual(len(states), 3)
        a = states.forRoute(_route(resolver, "a"))
        b = states.forRoute(_route(resolver, "b"))
        self.assertIs(a.states[1], b.states[0])
        self.assertIs(states.get(parseUpstream("h:2")), a.states[1])

    def test_keptAcrossChanges(self) -> None:
        """
        An upstream that stays in some route keeps its state when the
        routes change, even when it moves to another host.
        """
        resolver, states = _follow({"a": ["h:1", "h:2"]})
        kept = states.get(parseUpstream("h:1"))
        assert kept is not None
        kept.failed(3.0)
        resolver.apply({"a": _ups("h:1", "h:3")})
        self.assertIs(states.get(parseUpstream("h:1")), kept)
        resolver.apply({"a": None, "b": _ups("h:1")})
        self.assertIs(states.get(parseUpstream("h:1")), kept)
        self.assertEqual(kept.consecutiveFailures, 1)

    def test_weightChangeKeepsState(self) -> None:
        """
        A new weight makes a new route but the same upstream identity: its
        state is kept.
        """
        resolver, states = _follow({"a": ["h:1"]})
        kept = states.get(parseUpstream("h:1"))
        resolver.apply({"a": [parseUpstream("h:1", weight=5)]})
        self.assertIs(states.get(parseUpstream("h:1")), kept)

    def test_droppedWhenGone(self) -> None:
        """
        An upstream in no route any more is forgotten, as is its host's
        state; one that comes back starts afresh.
        """
        resolver, states = _follow({"a": ["h:1", "h:2"], "b": ["h:2"]})
        old = _route(resolver, "a")
        gone = states.get(parseUpstream("h:1"))
        assert gone is not None
        gone.failed(1.0)
        resolver.apply({"a": None})
        self.assertIsNone(states.get(parseUpstream("h:1")))
        self.assertIsNotNone(states.get(parseUpstream("h:2")))
        self.assertNotIn(old, states._hosts)
        resolver.apply({"b": None})
        self.assertEqual(len(states), 0)
        self.assertEqual(states._hosts, {})
        resolver.apply({"c": _ups("h:1")})
        fresh = states.get(parseUpstream("h:1"))
        assert fresh is not None
        self.assertIsNot(fresh, gone)
        self.assertEqual(fresh.consecutiveFailures, 0)

    def test_replaceWhole(self) -> None:
        """
        A table not made from the current one is compared whole: the state
        of upstreams in both is kept, the rest is dropped.
        """
        resolver, states = _follow({"a": ["h:1"], "b": ["h:2"]})
        kept = states.get(parseUpstream("h:2"))
        resolver.replace(RouteTable.fromMapping({"c": _ups("h:2", "h:3")}))
        self.assertIs(states.get(parseUpstream("h:2")), kept)
        self.assertIsNone(states.get(parseUpstream("h:1")))
        self.assertEqual(len(states), 2)

    def test_unchangedHostKeepsTurn(self) -> None:
        """
        A host whose upstreams did not change keeps its round-robin position
        across changes to other hosts; a changed host starts over.
        """
        resolver, states = _follow({"a": ["h:1", "h:2"], "b": ["h:3"]})
        a = states.forRoute(_route(resolver, "a"))
        self.assertEqual(a.pick().upstream.port, 1)
        resolver.apply({"b": _ups("h:4"), "c": _ups("h:5")})
        resolver.apply({"a": _ups("h:1", "h:2")})
        self.assertIs(states.forRoute(_route(resolver, "a")), a)
        self.assertEqual(a.pick().upstream.port, 2)
        resolver.apply({"a": _ups("h:2", "h:1")})
        self.assertEqual(states.forRoute(_route(resolver, "a")).pick().upstream.port, 2)

    def test_lazyForUnobservedRoute(self) -> None:
        """
        A route the registry did not hear of gets its state on first use.
        """
        states = UpstreamStates()
        route = HostRoute("a", tuple(_ups("h:1")))
        host = states.forRoute(route)
        self.assertIs(states.forRoute(route), host)
        self.assertIs(states.get(parseUpstream("h:1")), host.states[0])
        states.routesChanged([route], [])
        self.assertEqual(len(states), 0)

    def test_changeCostsChangedHostsOnly(self) -> None:
        """
        A change to a few hosts of a large table tells the registry of those
        routes only.
        """
        resolver = RouteResolver(
            RouteTable.fromMapping(
                {f"h{i}": _ups(f"10.0.{i // 250}.{i % 250}:80") for i in range(10000)}
            )
        )
        calls: list[tuple[int, int]] = []

        class Counting(UpstreamStates):
            def routesChanged(
                self, removed: Sequence[HostRoute], added: Sequence[HostRoute]
            ) -> None:
                calls.append((len(removed), len(added)))
                super().routesChanged(removed, added)

        states = Counting()
        resolver.addObserver(states)
        del calls[:]
        resolver.apply(
            {"h1": _ups("h:1"), "new": _ups("h:2"), "h2": None, "h3": _ups("10.0.0.3:80")}
        )
        self.assertEqual(calls, [(2, 2)])
        self.assertEqual(len(states), 10000)


class PassiveHealthTests(SynchronousTestCase):
    def _state(self, **rules: float) -> UpstreamState:
        from revproxy.upstream.state import PassiveHealth

        return UpstreamState(parseUpstream("10.0.0.1:1"), PassiveHealth(**rules))  # type: ignore[arg-type]

    def test_ejectAfterMaxFailsInWindow(self) -> None:
        """
        max-fails failures within the window eject the upstream for the
        eject time; failures spread wider do not.
        """
        state = self._state(maxFails=3, failWindow=10, ejectTime=10)
        self.assertFalse(state.failed(0.0))
        self.assertFalse(state.failed(6.0))
        self.assertFalse(state.failed(11.0))  # 0.0 is out of the window
        self.assertTrue(state.failed(12.0))
        self.assertEqual(state.ejectedUntil, 22.0)

    def test_doubling(self) -> None:
        """
        A failed probe ejects again for twice as long, up to 300 s; a
        success resets it.
        """
        state = self._state(maxFails=1, ejectTime=100)
        state.failed(0.0)
        self.assertEqual(state.ejectedUntil, 100.0)
        state.failed(100.0)
        self.assertEqual(state.ejectedUntil, 300.0)
        state.failed(300.0)
        self.assertEqual(state.ejectedUntil, 600.0)
        state.succeeded()
        self.assertEqual((state.ejectedUntil, state.ejections), (0.0, 0))
        state.failed(700.0)
        self.assertEqual(state.ejectedUntil, 800.0)

    def test_counted(self) -> None:
        """
        Each ejection is counted by upstream name.
        """
        from revproxy.upstream.state import PassiveHealth

        rules = PassiveHealth(maxFails=1)
        state = UpstreamState(parseUpstream("10.0.0.1:1"), rules)
        state.failed(0.0)
        self.assertEqual(rules.ejections, {"10.0.0.1:1": 1})

    def test_never(self) -> None:
        """
        max-fails 0 never ejects.
        """
        state = self._state(maxFails=0)
        for t in range(10):
            self.assertFalse(state.failed(float(t)))

    def test_startDown(self) -> None:
        """
        A registry told to start upstreams down makes new states down.
        """
        states = UpstreamStates(startDown=True)
        route = HostRoute("a.com", (parseUpstream("10.0.0.1:1"),))
        host = states.forRoute(route)
        self.assertTrue(host.states[0].down)
        self.assertIsNone(host.pick(0.0))
