# -*- test-case-name: tests.routing.test_balancing -*-
"""
Balancing policies: which of a host's upstreams gets the next request.

A policy is a small object with one method, L{Balancer.pick}.  Each host in
the route table gets its own instance, so that round robin alternates per
host.  Randomness is passed in, never taken from the global L{random} state,
so tests can fix it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from revproxy.routing.address import Upstream

__all__ = ["Balancer", "RoundRobin", "RandomChoice", "POLICIES", "policyFactory"]


class Balancer(Protocol):
    """
    Chooses one upstream out of a non-empty sequence.
    """

    def pick(self, upstreams: Sequence[Upstream]) -> Upstream:
        """
        Return one element of C{upstreams}, which is never empty.
        """


class RoundRobin:
    """
    Each call picks the next upstream in order, wrapping around.
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, upstreams: Sequence[Upstream]) -> Upstream:
        n = self._next
        self._next = n + 1
        return upstreams[n % len(upstreams)]


class RandomChoice:
    """
    Each call picks an upstream uniformly at random.
    """

    __slots__ = ("_choice",)

    def __init__(self, rng: random.Random) -> None:
        self._choice = rng.choice

    def pick(self, upstreams: Sequence[Upstream]) -> Upstream:
        return self._choice(upstreams)


POLICIES = ("round-robin", "random")


def policyFactory(
    name: str, rng: random.Random | None = None
) -> Callable[[], Balancer]:
    """
    Return a factory that makes one balancer of the named policy per host.

    @raise ValueError: for an unknown policy name.
    """
    if name == "round-robin":
        return RoundRobin
    if name == "random":
        shared = rng if rng is not None else random.Random()
        return lambda: RandomChoice(shared)
    raise ValueError(
        f"unknown balancing policy {name!r} (choose from {', '.join(POLICIES)})"
    )
