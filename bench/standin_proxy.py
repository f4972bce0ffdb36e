"""
A stand-in for revproxy while it is being written: Twisted's stock
C{ReverseProxyResource} in front of the first upstream of the route, with
the same command line as C{twistd -n revproxy}. It is the baseline the real
proxy must beat (HTTP/1.0 and a new upstream connection per request).

    python bench/standin_proxy.py --port 8080 \\
        --route bench.local=127.0.0.1:8081,127.0.0.1:8082 --no-access-log
"""

from __future__ import annotations

import argparse

from twisted.internet import reactor
from twisted.web.http import Request
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site


class QuietSite(Site):
    """
    A site that writes no access log.
    """

    def log(self, request: Request) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", required=True, help="HOST=ADDR:PORT[,ADDR:PORT...]")
    parser.add_argument("--no-access-log", action="store_true", help="accepted; never logs")
    args = parser.parse_args()
    _, _, upstreams = args.route.partition("=")
    address, _, port = upstreams.split(",")[0].rpartition(":")
    resource = ReverseProxyResource(address, int(port), b"")  # type: ignore[no-untyped-call]
    site = QuietSite(resource)  # type: ignore[no-untyped-call]
    reactor.listenTCP(args.port, site, backlog=4096, interface="127.0.0.1")  # type: ignore[arg-type]
    reactor.run()


if __name__ == "__main__":
    main()
