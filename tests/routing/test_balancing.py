"""
Tests for L{revproxy.routing.balancing}.
"""

from __future__ import annotations

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from revproxy.routing.balancing import RandomChoice, RoundRobin, policyFactory
from revproxy.routing import Upstream

UPS = tuple(Upstream("http", "10.0.0.1", p) for p in (1, 2, 3))


class RoundRobinTests(SynchronousTestCase):
    def test_alternates(self) -> None:
        """
        Round robin picks each upstream in turn, strictly.
        """
        rr = RoundRobin()
        self.assertEqual([rr.pick(UPS).port for _ in range(7)], [1, 2, 3, 1, 2, 3, 1])

    def test_perInstance(self) -> None:
        """
        Each balancer (one per host) keeps its own position.
        """
        a, b = RoundRobin(), RoundRobin()
        a.pick(UPS)
        self.assertEqual(b.pick(UPS).port, 1)
        self.assertEqual(a.pick(UPS).port, 2)

    def test_shorterCandidates(self) -> None:
        """
        Round robin works over any non-empty sequence, e.g. the upstreams
        left after a failure.
        """
        rr = RoundRobin()
        self.assertEqual({rr.pick(UPS[:1]) for _ in range(3)}, {UPS[0]})


class RandomTests(SynchronousTestCase):
    def test_uniform(self) -> None:
        """
        Random choice hits every upstream about equally often.
        """
        r = RandomChoice(random.Random(1234))
        counts = Counter(r.pick(UPS).port for _ in range(30000))
        self.assertEqual(set(counts), {1, 2, 3})
        for n in counts.values():
            self.assertTrue(9000 < n < 11000, counts)

    def test_seeded(self) -> None:
        """
        The given random source decides, so a seed repeats the sequence.
        """
        picks = [
            [RandomChoice(random.Random(7)).pick(UPS) for _ in range(5)] for _ in range(2)
        ]
        self.assertEqual(picks[0], picks[1])


class PolicyFactoryTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        Each policy name makes new balancers of its kind.
        """
        self.assertIsInstance(policyFactory("round-robin")(), RoundRobin)
        self.assertIsInstance(policyFactory("random")(), RandomChoice)

    def test_unknown(self) -> None:
        """
        An unknown name raises ValueError naming it.
        """
        with self.assertRaises(ValueError) as cm:
            policyFactory("sideways")
        self.assertIn("sideways", str(cm.exception))
