"""
The request parsers measured against each other, in process: CPU per
request head (a GET of a browser-like head, about 400 bytes with 9 header
fields) for revproxy's parser (llhttp through httptools, with our RFC 9112
checks), h11, and Twisted's HTTPChannel (up to the request's
requestReceived), and what each does with a few malformed heads.

    python bench/parsers.py            # medians of 5 runs
    python bench/parsers.py --smoke    # one short run

It prints figures; it never judges them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import h11
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel, Request

from revproxy.http.parser import HeadLimits, ParsedHead, RequestError, RequestParser

HEAD = (
    b"GET /articles/2026/12/some-article?ref=home&utm_source=x HTTP/1.1\r\n"
    b"Host: blog.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://blog.example.com/\r\n"
    b"Cookie: session=abcdef0123456789; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n\r\n"
)

MALFORMED = {
    "bare LF line ends": b"GET / HTTP/1.1\nHost: a\n\n",
    "CL and TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
    "20-digit chunk size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n",
    "HTTP/1.2": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
}


class _Sink:
    def headReceived(self, head: ParsedHead) -> None:
        pass

    def bodyReceived(self, data: bytes) -> None:
        pass

    def messageEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        pass


def ours(n: int) -> float:
    parser = RequestParser(_Sink(), HeadLimits())
    start = time.process_time()
    for _ in range(n):
        parser.feed(HEAD)
    return (time.process_time() - start) / n


def withH11(n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(HEAD)
        conn.next_event()
        conn.next_event()
    return (time.process_time() - start) / n


class _NoRequest(Request):
    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        pass


def withTwisted(n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        channel = HTTPChannel()
        channel.requestFactory = _NoRequest
        channel.makeConnection(StringTransport())
        channel.dataReceived(HEAD)
    return (time.process_time() - start) / n


def verdicts() -> None:
    print("\nmalformed heads: ours | h11")
    for name, data in MALFORMED.items():
        try:
            RequestParser(_Sink(), HeadLimits()).feed(data)
            a = "accepted"
        except RequestError as e:
            a = str(e.status)
        try:
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(data)
            event = conn.next_event()
            b = "accepted" if isinstance(event, h11.Request) else type(event).__name__
        except h11.RemoteProtocolError as e:
            b = str(e.error_status_hint)
        print(f"  {name:22} {a:8} | {b}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    n, runs = (2000, 1) if args.smoke else (20000, 5)
    for name, fn in [("revproxy (llhttp)", ours), ("h11", withH11), ("twisted HTTPChannel", withTwisted)]:
        figures = [fn(n) * 1e6 for _ in range(runs)]
        print(f"{name:22} {statistics.median(figures):6.1f} us per head")
    verdicts()


if __name__ == "__main__":
    main()
