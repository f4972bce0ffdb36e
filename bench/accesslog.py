"""
In-process micro benchmark of the access log's cost (issue 10): CPU time
per request through the real proxy resource, channel and upstream
connection on in-memory transports (no sockets, so the denominators are
smaller than a real request's and the shares are upper bounds), with:

  off       no access log (--no-access-log)
  writer    the default: the line built once, a buffered LineWriter to a file
  json      --log-format json through the writer
  logging   through twisted.logger and twistd's text file observer (the old
            default, still what --logfile FILE gets)

and the cost of the log call alone for each.  Run from the checkout:

    python bench/accesslog.py [--requests 5000] [--repeat 11]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402
from twisted.logger import Logger, LogPublisher, textFileLogObserver  # noqa: E402

from revproxy.forward.resource import RoutingProxyResource  # noqa: E402
from revproxy.http.server import ProxySite  # noqa: E402
from revproxy.ops.accesslog import AccessLogger, renderJSON, renderLine  # noqa: E402
from revproxy.ops.logwriter import LineWriter  # noqa: E402
from revproxy.routing import RouteTable, parseUpstream  # noqa: E402
from revproxy.routing.resolver import RouteResolver  # noqa: E402
from revproxy.upstream.pool import UpstreamPool  # noqa: E402
from tests.fakes import FakeEndpoint  # noqa: E402

REQUEST = (
    b"GET /1k HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk/4.2\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 03 Dec 2026 13:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Connection: keep-alive\r\n\r\n" + b"x" * 1024
)


def accessLogger(kind: str, reactor: MemoryReactorClock, tmp: str) -> tuple[object, object]:
    if kind == "off":
        return None, None
    if kind == "logging":
        out = open(os.path.join(tmp, "twistd.log"), "w")  # noqa: SIM115
        publisher = LogPublisher(textFileLogObserver(out))
        return AccessLogger(reactor, Logger(namespace="revproxy.access", observer=publisher)), out
    path = os.path.join(tmp, f"{kind}.log")
    render = renderJSON if kind == "json" else renderLine
    writer = LineWriter(reactor, lambda: open(path, "ab"), path, render=render)  # noqa: SIM115
    writer.startService()
    return AccessLogger(reactor, writer=writer, asJSON=kind == "json"), writer


def perRequest(kind: str, n: int, tmp: str) -> float:
    """
    CPU microseconds per request, keep-alive client, pooled upstream.
    """
    reactor = MemoryReactorClock()
    endpoint = FakeEndpoint()
    pool = UpstreamPool(reactor, endpointFactory=lambda u: endpoint)
    pool.startService()
    upstream = parseUpstream("10.0.0.1:80")
    resolver = RouteResolver(RouteTable.fromMapping({"bench.local": [upstream]}))
    log, _ = accessLogger(kind, reactor, tmp)
    resource = RoutingProxyResource(resolver, pool, reactor, accessLog=log)  # type: ignore[arg-type]
    site = ProxySite(resource, reactor=reactor)
    addr = IPv4Address("TCP", "127.0.0.1", 40000)
    channel = site.buildProtocol(addr)
    client = StringTransport(peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(client)  # type: ignore[union-attr]
    channel.dataReceived(REQUEST)  # type: ignore[union-attr]
    proto, upTransport = endpoint.succeed()
    proto.dataReceived(RESPONSE)
    for _ in range(200):  # warm up
        channel.dataReceived(REQUEST)  # type: ignore[union-attr]
        proto.dataReceived(RESPONSE)
    client.clear()
    upTransport.clear()
    start = time.process_time()
    for i in range(n):
        channel.dataReceived(REQUEST)  # type: ignore[union-attr]
        proto.dataReceived(RESPONSE)
        if i % 256 == 0:
            client.clear()
            upTransport.clear()
            reactor.advance(0.01)  # the writer's timed flush, the clock
    took = time.process_time() - start
    assert len(endpoint.protocols) == 1, "the upstream connection was not reused"
    return took / n * 1e6


def perCall(kind: str, n: int, tmp: str) -> float:
    from twisted.web.test.requesthelper import DummyRequest

    reactor = MemoryReactorClock()
    log, _ = accessLogger(kind, reactor, tmp)
    request = DummyRequest([b"1k"])
    request.uri = b"/1k"
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.requestHeaders.setRawHeaders(b"user-agent", [b"wrk/4.2"])
    request.sentLength = 1024
    request.client = IPv4Address("TCP", "127.0.0.1", 40000)
    request.requestId = b"0123456789abcdef"  # type: ignore[attr-defined]
    upstream = parseUpstream("10.0.0.1:80")
    start = time.process_time()
    for i in range(n):
        log(request, 200, upstream, 0.000123)  # type: ignore[misc]
        if i % 256 == 0:
            reactor.advance(0.01)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    kinds = ("writer", "json", "logging")
    with tempfile.TemporaryDirectory() as tmp:
        # Each kind is measured in pairs with "off", in alternating order,
        # each run after a full collection: the figure is the median of the
        # paired differences, which cancels the drift of a busy machine.
        off: list[float] = []
        runs: dict[str, list[float]] = {k: [] for k in kinds}
        deltas: dict[str, list[float]] = {k: [] for k in kinds}
        calls: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.repeat):
            for kind in kinds:
                pair = {}
                for which in (("off", kind) if r % 2 else (kind, "off")):
                    gc.collect()
                    pair[which] = perRequest(which, args.requests, tmp)
                off.append(pair["off"])
                runs[kind].append(pair[kind])
                deltas[kind].append(pair[kind] - pair["off"])
                gc.collect()
                calls[kind].append(perCall(kind, args.requests, tmp))
        base = median(off)
        print(f"{'access log':<10} {'us/request':>11} {'vs off':>8} {'share':>7} {'log call us':>12}")
        print(f"{'off':<10} {base:>11.2f}")
        for kind in kinds:
            delta = median(deltas[kind])
            print(f"{kind:<10} {median(runs[kind]):>11.2f} {delta:>+8.2f} "
                  f"{100 * delta / (base + delta):>6.1f}% {min(calls[kind]):>12.2f}")
        print(f"(medians of {args.repeat} rounds of {args.requests} requests; 'vs off' is the "
              "median of paired differences; share = that / a request's CPU with the log; "
              "log call alone: the fastest run)")

if __name__ == "__main__":
    main()
