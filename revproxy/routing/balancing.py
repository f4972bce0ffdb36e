# -*- test-case-name: tests.routing.test_balancing -*-
"""
Balancing policies: which of a host's upstreams gets the next request.

A policy is a pure function of the candidates (each an upstream with its
runtime state, as L{UpstreamLoad} describes what a policy may read), the
host's turn (how many picks the host has made before this one), a random
source and the request's hash key (read only by L{consistentHash}).  The
mutable parts, the turn and the runtime state, live in
L{revproxy.upstream.state}; randomness is passed in, never taken from the
global L{random} state, so tests can fix it.

L{usable} is the other pure half: which of a host's upstreams a policy may
choose from (not down by active checks, not ejected, not being probed), with
Envoy's panic rule (never more than a given share of a host's upstreams
ejected at once: past it, the least recently failed stay in rotation).
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Sequence
from math import gcd
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from revproxy.routing.address import Upstream

__all__ = [
    "UpstreamLoad",
    "Policy",
    "roundRobin",
    "randomChoice",
    "weighted",
    "leastRequests",
    "consistentHash",
    "hashKey",
    "usable",
    "POLICIES",
    "policyNamed",
    "policyName",
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


class HealthLoad(UpstreamLoad, Protocol):
    """
    What L{usable} reads besides L{UpstreamLoad}.
    """

    @property
    def down(self) -> bool:
        """
        Whether active health checks (or C{--health-start-down}) hold the
        upstream out of rotation.
        """

    @property
    def probing(self) -> bool:
        """
        Whether the one probe request after an ejection is in flight.
        """

    @property
    def lastFailure(self) -> float:
        """
        When the upstream last failed, on the proxy's clock.
        """


L = TypeVar("L", bound=UpstreamLoad)
H = TypeVar("H", bound=HealthLoad)


class Policy(Protocol):
    """
    Chooses one candidate out of a non-empty sequence.
    """

    def __call__(
        self, candidates: Sequence[L], turn: int, rng: random.Random, key: int = 0
    ) -> L:
        """
        Return one element of C{candidates}, which is never empty.  C{turn}
        counts the host's earlier picks; C{rng} is the random source;
        C{key} is the request's hash key (L{hashKey}) for the policies that
        read one.
        """


def roundRobin(
    candidates: Sequence[L], turn: int, rng: random.Random, key: int = 0
) -> L:
    """
    Each turn picks the next candidate in order, wrapping around.
    """
    return candidates[turn % len(candidates)]


def randomChoice(
    candidates: Sequence[L], turn: int, rng: random.Random, key: int = 0
) -> L:
    """
    Each turn picks a candidate uniformly at random.
    """
    return rng.choice(candidates)


_MAX_SCHEDULE = 1 << 16
_schedules: dict[tuple[int, ...], tuple[int, ...]] = {}


def _schedule(weights: tuple[int, ...]) -> tuple[int, ...]:
    """
    One period of nginx's smooth weighted round robin over C{weights}: the
    index picked at each step.  Memoized per weight vector.
    """
    schedule = _schedules.get(weights)
    if schedule is not None:
        return schedule
    divisor = 0
    for w in weights:
        divisor = gcd(divisor, w)
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    if total > _MAX_SCHEDULE:
        # Keep the period bounded: scale the weights down, each at least 1.
        reduced = [max(1, w * _MAX_SCHEDULE // total) for w in reduced]
        total = sum(reduced)
    current = [0] * len(reduced)
    picks = []
    indices = range(len(reduced))
    for _ in range(total):
        best = 0
        for i in indices:
            current[i] += reduced[i]
            if current[i] > current[best]:
                best = i
        current[best] -= total
        picks.append(best)
    if len(_schedules) >= 256:
        _schedules.clear()
    schedule = _schedules[weights] = tuple(picks)
    return schedule


def weighted(
    candidates: Sequence[L], turn: int, rng: random.Random, key: int = 0
) -> L:
    """
    Smooth weighted round robin (nginx's): over each period of the sum of
    the weights, every candidate is picked as many times as its weight,
    spread as evenly as possible.
    """
    if len(candidates) == 1:
        return candidates[0]
    schedule = _schedule(tuple([c.upstream.weight for c in candidates]))
    return candidates[schedule[turn % len(schedule)]]


def leastRequests(
    candidates: Sequence[L], turn: int, rng: random.Random, key: int = 0
) -> L:
    """
    The power of two choices (Envoy's default): of two distinct candidates
    drawn at random, the one with fewer requests in flight.
    """
    n = len(candidates)
    if n == 1:
        return candidates[0]
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    if j >= i:
        j += 1
    a = candidates[i]
    b = candidates[j]
    return a if a.inflight <= b.inflight else b


def hashKey(data: bytes) -> int:
    """
    A stable 64-bit hash of C{data}: the same on every proxy node and every
    run (unlike L{hash}).
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


VIRTUAL_NODES = 160
"""Points per upstream on the consistent-hash ring."""

LOAD_BOUND = 1.25
"""With bounded load, no upstream takes more than this factor of the mean
in-flight load (consistent hashing with bounded loads, Mirrokni et al.)."""

_rings: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}


def _ring(names: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """
    The ring of C{names}: sorted point hashes and the index owning each.
    Memoized per membership.
    """
    ring = _rings.get(names)
    if ring is not None:
        return ring
    points = sorted(
        (hashKey(f"{name}#{v}".encode()), i)
        for i, name in enumerate(names)
        for v in range(VIRTUAL_NODES)
    )
    if len(_rings) >= 256:
        _rings.clear()
    ring = _rings[names] = ([p for p, _ in points], [i for _, i in points])
    return ring


def consistentHash(
    candidates: Sequence[L], turn: int, rng: random.Random, key: int = 0
) -> L:
    """
    Consistent hashing with bounded load: the request's C{key} picks the
    next point clockwise on a ring of the candidates' virtual nodes, whose
    owner takes it unless it already has more than L{LOAD_BOUND} times the
    mean in-flight load, in which case the walk goes on.  Removing a
    candidate moves only the keys it owned.
    """
    n = len(candidates)
    if n == 1:
        return candidates[0]
    hashes, owners = _ring(tuple([c.upstream.name for c in candidates]))
    total = 1
    for c in candidates:
        total += c.inflight
    limit = LOAD_BOUND * total / n
    size = len(hashes)
    start = bisect_right(hashes, key)
    for step in range(size):
        candidate = candidates[owners[(start + step) % size]]
        if candidate.inflight < limit:
            return candidate
    return candidates[owners[start % size]]  # pragma: no cover (limit * n > total)


def usable(candidates: Sequence[H], now: float, maxEjectedPercent: float = 50.0) -> list[H]:
    """
    The candidates a policy may choose from, in their order: not down, not
    ejected (or ejected but past its ejection and not already probed).  At
    most C{maxEjectedPercent} of them may be ejected at once: past it, the
    least recently failed of the ejected stay in rotation.
    """
    eligible: list[H] = []
    ejected: list[H] = []
    for c in candidates:
        if c.down:
            continue
        until = c.ejectedUntil
        if until == 0.0:
            eligible.append(c)
        elif until > now:
            ejected.append(c)
        elif not c.probing:
            eligible.append(c)
    if ejected:
        allowed = int(len(candidates) * maxEjectedPercent // 100)
        if len(ejected) > allowed:
            ejected.sort(key=lambda c: c.lastFailure)
            kept = set(map(id, eligible))
            kept.update(map(id, ejected[: len(ejected) - allowed]))
            eligible = [c for c in candidates if id(c) in kept]
    return eligible


POLICIES = ("round-robin", "random", "weighted", "least-requests", "hash")

_BY_NAME: dict[str, Policy] = {
    "round-robin": roundRobin,
    "random": randomChoice,
    "weighted": weighted,
    "least-requests": leastRequests,
    "hash": consistentHash,
}
_NAMES: dict[object, str] = {p: n for n, p in _BY_NAME.items()}


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


def policyName(policy: object) -> str:
    """
    The name of a policy of L{POLICIES}, or its Python name for another.
    """
    name = _NAMES.get(policy)
    if name is None:
        name = str(getattr(policy, "__name__", repr(policy)))
    return name
