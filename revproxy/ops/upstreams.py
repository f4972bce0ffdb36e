# -*- test-case-name: tests.ops.test_upstreams -*-
"""
What operators see of their upstreams' health: each upstream's state for
C{/routes}, the explanation of one host's route for C{/routes/<host>}, and
the health metrics (C{revproxy_upstream_healthy},
C{revproxy_upstream_ejections_total}, C{revproxy_retries_total},
C{revproxy_health_checks_total}).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from revproxy.routing import normalizeRequestHost
from revproxy.routing.balancing import policyName
from revproxy.routing.resolver import RouteResolver
from revproxy.upstream.state import UpstreamState, UpstreamStates

__all__ = ["upstreamState", "explainRoute", "healthMetrics"]


def _stateName(state: UpstreamState, now: float) -> str:
    if state.down:
        return "down"
    if state.ejectedUntil > now:
        return "ejected"
    if state.ejectedUntil:
        return "probation"
    return "up"


def upstreamState(state: UpstreamState | None, now: float) -> dict[str, Any]:
    """
    The runtime state of one upstream as JSON-ready data: C{state} (C{up},
    C{down}, C{ejected} or C{probation}), C{ejected_until} (on the proxy's
    clock, Unix time with a real reactor) and C{ejected_for} (seconds
    left), C{consecutive_failures}, C{ejections} (in a row),
    C{requests_in_flight} and C{last_check}.
    """
    if state is None:
        return {"state": "unknown"}
    until = state.ejectedUntil
    return {
        "state": _stateName(state, now),
        "ejected_until": until if until > now else None,
        "ejected_for": round(until - now, 3) if until > now else None,
        "consecutive_failures": state.consecutiveFailures,
        "ejections": state.ejections,
        "requests_in_flight": state.inflight,
        "last_check": None
        if not state.lastCheck
        else {
            "passed": state.lastCheckPassed,
            "at": state.lastCheck,
            "seconds_ago": round(now - state.lastCheck, 3),
        },
    }


def _why(state: UpstreamState, eligible: bool, now: float) -> str:
    if state.down:
        return "down: failed its active health checks" if state.lastCheck else (
            "down: waiting for its first passed health check"
        )
    if state.ejectedUntil > now:
        left = state.ejectedUntil - now
        if eligible:
            return (
                f"ejected for {left:.1f}s more, but kept in rotation: "
                "too many of the host's upstreams are ejected (max-ejected-percent)"
            )
        return (
            f"ejected for {left:.1f}s more after {state.consecutiveFailures} "
            "consecutive failures"
        )
    if state.ejectedUntil:
        if state.probing:
            return "on probation after an ejection: its probe request is in flight"
        return "on probation after an ejection: the next request probes it"
    if state.consecutiveFailures:
        return f"up, {state.consecutiveFailures} consecutive failures"
    return "up"


def explainRoute(
    resolver: RouteResolver, states: UpstreamStates, host: str, now: float
) -> dict[str, Any] | None:
    """
    Why requests for C{host} go where they go: the matched pattern, the
    policy, and each upstream with whether it is eligible now and why.
    L{None} if no route matches.

    @raise NoRouteTable: if no table is loaded yet.
    """
    route = resolver.resolve(normalizeRequestHost(host.encode("utf-8")))
    if route is None:
        return None
    hostState = states.hostState(route)
    if hostState is not None:
        eligible = {id(s) for s in hostState.usable(now)}
    else:
        eligible = None
    upstreams = []
    for upstream in route.upstreams:
        state = states.get(upstream)
        ok = state is not None and (eligible is None or id(state) in eligible)
        entry: dict[str, Any] = {
            "upstream": str(upstream),
            "weight": upstream.weight,
            "eligible": ok,
            "why": "no request yet" if state is None else _why(state, ok, now),
        }
        entry.update(upstreamState(state, now))
        upstreams.append(entry)
    return {
        "host": host,
        "pattern": route.host,
        "policy": policyName(route.policy),
        "usable": sum(1 for u in upstreams if u["eligible"]),
        "upstreams": upstreams,
    }


def healthMetrics(
    states: UpstreamStates,
    retryCounts: dict[str, int],
    checkResults: dict[str, int] | None,
    now: float,
) -> Iterator[Metric]:
    """
    The health metrics, read at scrape time.
    """
    healthy = GaugeMetricFamily(
        "revproxy_upstream_healthy",
        "1 if the upstream takes requests (not down, not ejected), else 0.",
        labels=["upstream"],
    )
    for state in sorted(states, key=lambda s: s.upstream.name):
        healthy.add_metric([state.upstream.name], 1 if state.available(now) else 0)
    yield healthy
    ejections = CounterMetricFamily(
        "revproxy_upstream_ejections",
        "Times an upstream was ejected by passive health.",
        labels=["upstream"],
    )
    for name, n in sorted(states.rules.ejections.items()):
        ejections.add_metric([name], n)
    yield ejections
    retries = CounterMetricFamily(
        "revproxy_retries",
        "Requests tried again, by reason: connect, reset, stale, window.",
        labels=["reason"],
    )
    for reason in sorted({"connect", "reset", "stale", "window"} | set(retryCounts)):
        retries.add_metric([reason], retryCounts.get(reason, 0))
    yield retries
    checks = CounterMetricFamily(
        "revproxy_health_checks",
        "Active health checks, by result: pass, fail.",
        labels=["result"],
    )
    results = checkResults or {}
    for result in ("fail", "pass"):
        checks.add_metric([result], results.get(result, 0))
    yield checks


