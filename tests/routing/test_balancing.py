"""
Tests for L{revproxy.routing.balancing}: the policies are pure functions of
the candidates, the host's turn and a random source.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing import Upstream
from revproxy.routing.balancing import policyNamed, randomChoice, roundRobin

UPS = tuple(Upstream("http", "10.0.0.1", p) for p in (1, 2, 3))


@dataclass
class Load:
    """
    An L{revproxy.routing.balancing.UpstreamLoad} for tests.
    """

    upstream: Upstream
    inflight: int = 0
    ejectedUntil: float = 0.0


LOADS = tuple(Load(u) for u in UPS)


class RoundRobinTests(SynchronousTestCase):
    def test_alternates(self) -> None:
        """
        Round robin picks each upstream in turn, strictly.
        """
        rng = random.Random(0)
        self.assertEqual(
            [roundRobin(LOADS, turn, rng).upstream.port for turn in range(7)],
            [1, 2, 3, 1, 2, 3, 1],
        )

    def test_perTurn(self) -> None:
        """
        The pick depends on the turn given, nothing else: each host (with
        its own turn) keeps its own position.
        """
        rng = random.Random(0)
        a, b = 0, 0
        roundRobin(LOADS, a, rng)
        a += 1
        self.assertEqual(roundRobin(LOADS, b, rng).upstream.port, 1)
        self.assertEqual(roundRobin(LOADS, a, rng).upstream.port, 2)

    def test_shorterCandidates(self) -> None:
        """
        Round robin works over any non-empty sequence, e.g. the upstreams
        left after a failure.
        """
        rng = random.Random(0)
        self.assertEqual(
            {roundRobin(LOADS[:1], turn, rng).upstream for turn in range(3)}, {UPS[0]}
        )

    def test_ignoresRandom(self) -> None:
        """
        Round robin draws nothing from the random source.
        """
        rng = random.Random(5)
        before = rng.getstate()
        roundRobin(LOADS, 4, rng)
        self.assertEqual(rng.getstate(), before)


class RandomTests(SynchronousTestCase):
    def test_uniform(self) -> None:
        """
        Random choice hits every upstream about equally often.
        """
        rng = random.Random(1234)
        counts = Counter(randomChoice(LOADS, t, rng).upstream.port for t in range(30000))
        self.assertEqual(set(counts), {1, 2, 3})
        for n in counts.values():
            self.assertTrue(9000 < n < 11000, counts)

    def test_seeded(self) -> None:
        """
        The given random source decides, so a seed repeats the sequence.
        """
        picks = []
        for _ in range(2):
            rng = random.Random(7)
            picks.append([randomChoice(LOADS, t, rng) for t in range(5)])
        self.assertEqual(picks[0], picks[1])


class PolicyNamedTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        Each policy name gives its policy.
        """
        self.assertIs(policyNamed("round-robin"), roundRobin)
        self.assertIs(policyNamed("random"), randomChoice)

    def test_unknown(self) -> None:
        """
        An unknown name raises ValueError naming it.
        """
        with self.assertRaises(ValueError) as cm:
            policyNamed("sideways")
        self.assertIn("sideways", str(cm.exception))
