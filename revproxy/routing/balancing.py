# -*- test-case-name: tests.routing.test_balancing -*-
"""
Balancing policies: which of a host's upstreams gets the next request.

A policy is a pure function of the candidates (each an upstream with its
runtime state, as L{UpstreamLoad} describes what a policy may read), the
host's turn (how many picks the host has made before this one) and a
random source.  The mutable parts, the turn and the runtime state, live in
L{revproxy.upstream.state}; randomness is passed in, never taken from the
global L{random} state, so tests can fix it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from revproxy.routing.address import Upstream

__all__ = [
    "UpstreamLoad",
    "Policy",
    "roundRobin",
    "randomChoice",
    "POLICIES",
    "policyNamed",
]


class UpstreamLoad(Protocol):
    """
    What a policy may read of one candidate: the upstream and its runtime
    state.  L{revproxy.upstream.state.UpstreamState} provides it.
    """

    @property
    def upstream(self) -> Upstream:
        """
        The upstream's configuration.
        """

    @property
    def inflight(self) -> int:
        """
        How many requests are assigned to the upstream now.
        """

    @property
    def ejectedUntil(self) -> float:
        """
        Until when (seconds, on the proxy's clock) the upstream is ejected
        from balancing; 0 if it is not.
        """


L = TypeVar("L", bound=UpstreamLoad)


class Policy(Protocol):
    """
    Chooses one candidate out of a non-empty sequence.
    """

    def __call__(self, candidates: Sequence[L], turn: int, rng: random.Random) -> L:
        """
        Return one element of C{candidates}, which is never empty.  C{turn}
        counts the host's earlier picks; C{rng} is the random source.
        """


def roundRobin(candidates: Sequence[L], turn: int, rng: random.Random) -> L:
    """
    Each turn picks the next candidate in order, wrapping around.
    """
    return candidates[turn % len(candidates)]


def randomChoice(candidates: Sequence[L], turn: int, rng: random.Random) -> L:
    """
    Each turn picks a candidate uniformly at random.
    """
    return rng.choice(candidates)


POLICIES = ("round-robin", "random")

_BY_NAME: dict[str, Policy] = {"round-robin": roundRobin, "random": randomChoice}


def policyNamed(name: str) -> Policy:
    """
    The policy called C{name} on the command line.

    @raise ValueError: for an unknown policy name.
    """
    policy = _BY_NAME.get(name)
    if policy is None:
        raise ValueError(
            f"unknown balancing policy {name!r} (choose from {', '.join(POLICIES)})"
        )
    return policy
