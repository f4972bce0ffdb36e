"""
Property tests (hypothesis) of the balancing policies of
L{revproxy.routing.balancing}: distributions within tolerance, no pick of
an unusable upstream while another is usable, and the stability of
consistent hashing when membership changes.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import Upstream
from revproxy.routing.balancing import (
    POLICIES,
    consistentHash,
    hashKey,
    leastRequests,
    policyName,
    policyNamed,
    usable,
    weighted,
)


@dataclass
class Load:
    """
    A candidate with the runtime state that L{usable} reads.
    """

    upstream: Upstream
    inflight: int = 0
    ejectedUntil: float = 0.0
    down: bool = False
    probing: bool = False
    lastFailure: float = 0.0


def loads(n: int, weights: list[int] | None = None) -> list[Load]:
    return [
        Load(Upstream("http", "10.0.0.1", 1000 + i, weight=weights[i] if weights else 1))
        for i in range(n)
    ]


class WeightedTests(SynchronousTestCase):
    @given(st.lists(st.integers(1, 20), min_size=1, max_size=8))
    def test_exactPerPeriod(self, weights: list[int]) -> None:
        """
        Over every period of the sum of the weights, smooth weighted round
        robin picks each upstream exactly its weight's share.
        """
        cands = loads(len(weights), weights)
        total = sum(weights)
        rng = random.Random(0)
        counts = Counter(weighted(cands, t, rng).upstream.port for t in range(3 * total))
        for i, w in enumerate(weights):
            self.assertEqual(counts[1000 + i], 3 * w)

    def test_smooth(self) -> None:
        """
        Weights 5, 1, 1 give nginx's smooth sequence a a b a c a a.
        """
        cands = loads(3, [5, 1, 1])
        rng = random.Random(0)
        self.assertEqual(
            [weighted(cands, t, rng).upstream.port - 1000 for t in range(7)],
            [0, 0, 1, 0, 2, 0, 0],
        )


class LeastRequestsTests(SynchronousTestCase):
    @given(
        st.lists(st.integers(0, 50), min_size=2, max_size=10, unique=True),
        st.integers(0, 2**32),
    )
    def test_neverTheBusiest(self, inflight: list[int], seed: int) -> None:
        """
        Of two distinct choices the less loaded wins, so the busiest
        upstream is never picked.
        """
        cands = loads(len(inflight))
        for c, n in zip(cands, inflight):
            c.inflight = n
        chosen = leastRequests(cands, 0, random.Random(seed))
        self.assertLess(chosen.inflight, max(inflight))

    def test_balancesLoad(self) -> None:
        """
        Picking repeatedly while nothing ends keeps the in-flight counts
        within one or two of each other.
        """
        cands = loads(5)
        rng = random.Random(3)
        for t in range(1000):
            leastRequests(cands, t, rng).inflight += 1
        counts = [c.inflight for c in cands]
        self.assertLessEqual(max(counts) - min(counts), 3, counts)


class HashTests(SynchronousTestCase):
    @settings(max_examples=50)
    @given(st.integers(3, 12), st.data())
    def test_removalMovesOnlyItsShare(self, n: int, data: st.DataObject) -> None:
        """
        Removing one upstream moves only the keys it owned; the others keep
        their upstream.
        """
        cands = loads(n)
        gone = data.draw(st.integers(0, n - 1))
        rest = cands[:gone] + cands[gone + 1 :]
        rng = random.Random(0)
        for k in range(300):
            key = hashKey(b"client-%d" % (k,))
            before = consistentHash(cands, 0, rng, key)
            after = consistentHash(rest, 0, rng, key)
            if before is not cands[gone]:
                self.assertIs(after, before)

    def test_spread(self) -> None:
        """
        Keys spread over the upstreams within 25% of an even share.
        """
        cands = loads(4)
        rng = random.Random(0)
        counts = Counter(
            consistentHash(cands, 0, rng, hashKey(b"%d" % (k,))).upstream.port
            for k in range(20000)
        )
        for n in counts.values():
            self.assertTrue(3750 < n < 6250, counts)

    def test_boundedLoad(self) -> None:
        """
        A key whose upstream already carries more than 1.25 times the mean
        load goes to the next upstream on the ring.
        """
        cands = loads(4)
        rng = random.Random(0)
        key = hashKey(b"sticky")
        first = consistentHash(cands, 0, rng, key)
        first.inflight = 10
        self.assertIsNot(consistentHash(cands, 0, rng, key), first)

    def test_stableAcrossNodes(self) -> None:
        """
        The hash of a key is the same on every run (not Python's salted
        hash).
        """
        self.assertEqual(hashKey(b"abc"), 0xd8bb14d833d59559)


class UsableTests(SynchronousTestCase):
    @given(
        st.lists(
            st.tuples(st.booleans(), st.booleans(), st.floats(0, 100)),
            min_size=1,
            max_size=10,
        ),
        st.sampled_from(POLICIES),
        st.integers(0, 1000),
    )
    def test_noUnusablePick(
        self, flags: list[tuple[bool, bool, float]], name: str, turn: int
    ) -> None:
        """
        With no ejection cap, every policy picks, among the usable
        upstreams, never a down or ejected one while another is usable.
        """
        cands = loads(len(flags))
        for c, (down, ejected, failed) in zip(cands, flags):
            c.down = down
            c.ejectedUntil = 100.0 if ejected else 0.0
            c.lastFailure = failed
        eligible = usable(cands, 50.0, maxEjectedPercent=100)
        for c in eligible:
            self.assertFalse(c.down or c.ejectedUntil > 50.0)
        if eligible:
            chosen = policyNamed(name)(eligible, turn, random.Random(turn), turn)
            self.assertIn(chosen, eligible)

    @given(st.integers(1, 12), st.integers(0, 12), st.integers(0, 100))
    def test_panicCap(self, n: int, ejectedCount: int, percent: int) -> None:
        """
        At most the given percentage of a host's upstreams is held out by
        ejection; past it the least recently failed stay in rotation.
        """
        cands = loads(n)
        ejectedCount = min(ejectedCount, n)
        for i, c in enumerate(cands[:ejectedCount]):
            c.ejectedUntil = 100.0
            c.lastFailure = float(i)
        eligible = usable(cands, 50.0, maxEjectedPercent=percent)
        allowed = n * percent // 100
        self.assertEqual(len(cands) - len(eligible), min(ejectedCount, allowed))
        kept = [c for c in eligible if c.ejectedUntil]
        held = [c for c in cands[:ejectedCount] if c not in kept]
        if kept and held:
            self.assertLess(max(c.lastFailure for c in kept), min(c.lastFailure for c in held))

    def test_probation(self) -> None:
        """
        Past its ejection an upstream is usable again, once: not while its
        probe is in flight.
        """
        (c,) = loads(1)
        c.ejectedUntil = 10.0
        self.assertEqual(usable([c], 11.0, 100), [c])
        c.probing = True
        self.assertEqual(usable([c], 11.0, 100), [])

    def test_names(self) -> None:
        """
        Every policy name gives a policy whose name is the same.
        """
        for name in POLICIES:
            self.assertEqual(policyName(policyNamed(name)), name)
