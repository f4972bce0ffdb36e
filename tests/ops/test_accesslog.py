"""
Tests for L{revproxy.ops.accesslog}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.ops.accesslog import AccessLogger
from revproxy.routing import Upstream


class AccessLogTests(SynchronousTestCase):
    def test_combinedFormat(self) -> None:
        """
        The event renders as a combined-log-format line with the upstream
        and duration, and carries each part as a field.
        """
        events: list[dict[str, object]] = []
        clock = Clock()
        clock.advance(86400 * 365)
        logger = AccessLogger(clock, Logger(observer=events.append))
        request = DummyRequest([b"a"])
        request.uri = b'/a?"q"'
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.requestHeaders.setRawHeaders(b"user-agent", [b"curl/8"])
        request.sentLength = 5
        request.client = IPv4Address("TCP", "192.0.2.7", 5555)
        logger(request, 200, Upstream("http", "10.0.0.1", 80), 0.0125)
        [event] = events
        self.assertEqual(
            formatEvent(event),
            '192.0.2.7 - - [01/Jan/1971:00:00:00 +0000] "GET /a?\\"q\\" HTTP/1.1" '
            '200 5 "-" "curl/8" upstream=10.0.0.1:80 duration=0.012500',
        )
        self.assertEqual(event["status"], 200)
        self.assertEqual(event["upstream"], "10.0.0.1:80")

    def test_bracesInRequest(self) -> None:
        """
        Braces a client puts in the URI or headers are logged as sent, not
        read as format fields.
        """
        events: list[dict[str, object]] = []
        logger = AccessLogger(Clock(), Logger(observer=events.append))
        request = DummyRequest([b"a"])
        request.uri = b"/{status}{}?q={0}"
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.requestHeaders.setRawHeaders(b"user-agent", [b"{user_agent}"])
        request.sentLength = 0
        request.client = IPv4Address("TCP", "192.0.2.7", 5555)
        logger(request, 404, None, 0.0)
        [event] = events
        self.assertEqual(
            formatEvent(event),
            '192.0.2.7 - - [01/Jan/1970:00:00:00 +0000] "GET /{status}{}?q={0} '
            'HTTP/1.1" 404 0 "-" "{user_agent}" upstream=- duration=0.000000',
        )
        self.assertEqual(event["uri"], "/{status}{}?q={0}")
    def test_tunnelEnded(self) -> None:
        """
        A tunnel's end renders as its upgrade request's line with status
        101, the bytes sent to the client as size, its duration and the
        bytes each way, also as fields.
        """
        events: list[dict[str, object]] = []
        clock = Clock()
        clock.advance(86400 * 365)
        logger = AccessLogger(clock, Logger(observer=events.append))
        request = DummyRequest([b"chat"])
        request.uri = b"/chat"
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.client = IPv4Address("TCP", "192.0.2.7", 5555)
        logger.tunnelEnded(request, Upstream("http", "10.0.0.1", 80), 61.5, 120, 3400)
        [event] = events
        self.assertEqual(
            formatEvent(event),
            '192.0.2.7 - - [01/Jan/1971:00:00:00 +0000] "GET /chat HTTP/1.1" '
            '101 3400 "-" "-" upstream=10.0.0.1:80 duration=61.500000 '
            "tunnel_bytes_in=120 tunnel_bytes_out=3400",
        )
        self.assertEqual((event["bytes_in"], event["bytes_out"]), (120, 3400))
