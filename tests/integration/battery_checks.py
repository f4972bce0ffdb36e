"""
The vocabulary of the attack battery's cases: raw requests, what a case
is, and the checks of what the recording upstream may have seen.

The cases themselves, and what a strict HTTP/1.1 reverse proxy must do with
each as issue 10 states it, are in L{tests.integration.battery_framing} and
L{tests.integration.battery_semantics}.

Drawn from RFC 9112 (message framing, sections 2.2, 3, 5, 6, 7), RFC 9110
(Host, Connection, Expect), PortSwigger's request smuggling research
(CL.TE, TE.CL, TE.TE obfuscations, CL.0), defparam/smuggler's
Transfer-Encoding mutations (space or control byte before or after the
name or value, header hidden behind a control byte or a bare CR/LF), the
HTTP Garden's findings (bare LF and CR in chunk lines and extensions,
over-long chunk sizes, obs-fold) and Go's CVE-2025-22871 (a bare LF ending
a chunk-size line).

Each L{Case} says which proxy it runs against (see
L{tests.integration.test_battery}), the exact status, whether the proxy
must close the connection after it, and what the recording upstream may
have seen.  Many rejected requests carry a smuggled request after them,
C{GET /smuggled}: the upstream must never see it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.integration.battery import RecordingUpstream, Seen

HOST = b"battery.test"
UNROUTED = b"nowhere.test"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: battery.test\r\n\r\n"

Check = Callable[[RecordingUpstream], None]


def req(
    method: bytes = b"GET",
    target: bytes = b"/",
    *lines: bytes,
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
    host: bytes | None = HOST,
    eol: bytes = b"\r\n",
) -> bytes:
    """
    The raw bytes of a request: its request line, a Host (unless None),
    the extra header C{lines} as given, an empty line and C{body} as given
    (no framing header is added).
    """
    head = [method + b" " + target + b" " + version]
    if host is not None:
        head.append(b"Host: " + host)
    head += lines
    return eol.join(head) + eol + eol + body


def chunks(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """
    A well-formed chunked body of C{pieces}.
    """
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"


# -- what the upstream may have seen ---------------------------------------------


def nothing(up: RecordingUpstream) -> None:
    """
    The upstream received no byte at all.
    """
    raw = up.raw()
    assert raw == b"", f"the upstream received {len(raw)} bytes: {raw[:400]!r}"


def noCompleteRequest(up: RecordingUpstream) -> None:
    """
    The upstream got no complete request (a request it may have begun to
    receive was aborted).
    """
    seen = up.requests()
    assert seen == [], f"the upstream got complete requests: {[s.target for s in seen]}"


def notSmuggled(up: RecordingUpstream) -> None:
    """
    Whatever the upstream got, none of it was the smuggled request.
    """
    targets = [s.target for s in up.requests()]
    assert not [t for t in targets if b"smuggled" in t], f"smuggled request upstream: {targets}"
    assert up.malformed() == [], f"the upstream got malformed bytes: {up.malformed()}"


def forwarded(check: Callable[[list[Seen]], None] | None = None, count: int = 1) -> Check:
    """
    The upstream got exactly C{count} well-formed requests, none of them
    smuggled, each with exactly one Host (C{battery.test}), at most one
    framing, no header name with an underscore or a control byte; then
    C{check} on them.
    """

    def verify(up: RecordingUpstream) -> None:
        assert up.malformed() == [], f"the upstream got malformed bytes: {up.malformed()}"
        seen = up.requests()
        targets = [s.target for s in seen]
        assert len(seen) == count, f"the upstream got {len(seen)} requests: {targets}"
        for s in seen:
            assert b"smuggled" not in s.target, (
                f"a smuggled request reached the upstream: {targets}"
            )
            assert s.header(b"host") == [HOST], f"Host lines upstream: {s.header(b'host')}"
            framing = [n for n in s.names() if n in (b"content-length", b"transfer-encoding")]
            assert len(framing) <= 1, f"framing headers upstream: {framing}"
            for name in s.names():
                assert b"_" not in name, f"underscore header reached the upstream: {name!r}"
                assert all(32 < c < 127 for c in name), f"header name {name!r} upstream"
        if check is not None:
            check(seen)

    return verify


def body(expected: bytes) -> Callable[[list[Seen]], None]:
    def check(seen: list[Seen]) -> None:
        assert seen[0].body == expected, f"upstream body {seen[0].body[:200]!r}"

    return check


def lacks(*names: bytes) -> Callable[[list[Seen]], None]:
    def check(seen: list[Seen]) -> None:
        present = [n for n in names if seen[0].header(n)]
        assert not present, f"headers that must not reach the upstream: {present}"

    return check


def headerIs(name: bytes, *values: bytes) -> Callable[[list[Seen]], None]:
    def check(seen: list[Seen]) -> None:
        got = seen[0].header(name)
        assert got == list(values), f"{name!r} upstream: {got}, expected {list(values)}"

    return check


def noValue(needle: bytes) -> Callable[[list[Seen]], None]:
    """
    No header value sent upstream contains C{needle} (a spoofed address).
    """

    def check(seen: list[Seen]) -> None:
        bad = [(n, v) for n, v in seen[0].headers if needle in v]
        assert not bad, f"spoofed values reached the upstream: {bad}"

    return check


def both(*checks: Callable[[list[Seen]], None]) -> Callable[[list[Seen]], None]:
    def check(seen: list[Seen]) -> None:
        for c in checks:
            c(seen)

    return check


# -- the cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """
    One raw request and its verdict.

    @ivar status: the one status the client must get (the first of a set
        for the few where the issue allows two).
    @ivar close: the proxy must close the connection after the answer.
    @ivar proxy: which proxy of the battery it runs against.
    """

    id: str
    category: str
    data: bytes
    status: int | frozenset[int]
    upstream: Check = nothing
    close: bool = False
    proxy: str = "default"
    answers: int = 1


def reject(id: str, category: str, data: bytes, status: int | frozenset[int] = 400) -> Case:
    """
    A request the proxy must refuse with C{status}, then close, forwarding
    nothing.
    """
    return Case(id, category, data, status, nothing, close=True)


def refuse(id: str, category: str, data: bytes, status: int = 400) -> Case:
    """
    A well-framed request the proxy must refuse with C{status}, forwarding
    nothing; the connection may stay open.
    """
    return Case(id, category, data, status, nothing)


TE_REFUSED = frozenset({501, 400})
