"""
Tests for L{revproxy.ops.accesslog}.
"""

from __future__ import annotations

import io
import json

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.ops.accesslog import AccessLogger, renderJSON, renderLine
from revproxy.ops.logs import _isoTime as isoTime
from revproxy.ops.logwriter import LineWriter
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
            '200 5 "-" "curl/8" upstream=10.0.0.1:80 duration=0.012500 request_id=-',
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
            'HTTP/1.1" 404 0 "-" "{user_agent}" upstream=- duration=0.000000 request_id=-',
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
            '101 3400 "-" "-" upstream=10.0.0.1:80 duration=61.500000 request_id=- '
            "tunnel_bytes_in=120 tunnel_bytes_out=3400",
        )
        self.assertEqual((event["bytes_in"], event["bytes_out"]), (120, 3400))


def _request(uri: bytes = b"/a", agent: bytes = b"curl/8") -> DummyRequest:
    request = DummyRequest([b"a"])
    request.uri = uri
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.requestHeaders.setRawHeaders(b"user-agent", [agent])
    request.sentLength = 5
    request.client = IPv4Address("TCP", "192.0.2.7", 5555)
    request.requestId = b"00ff00ff00ff00ff"  # type: ignore[attr-defined]
    return request


class _Sink(io.BytesIO):
    pass


class WriterTests(SynchronousTestCase):
    def _logger(self, asJSON: bool = False) -> tuple[AccessLogger, Clock, _Sink, LineWriter]:
        clock = Clock()
        clock.advance(86400 * 365)
        sink = _Sink()
        writer = LineWriter(
            clock, lambda: sink, "test", render=renderJSON if asJSON else renderLine
        )
        writer.startService()
        return AccessLogger(clock, writer=writer, asJSON=asJSON), clock, sink, writer

    def test_sameLineAsEvent(self) -> None:
        """
        The line written to the writer is the line of the log event, with
        the request id, and a newline.
        """
        logger, clock, sink, writer = self._logger()
        events: list[dict[str, object]] = []
        eventLogger = AccessLogger(clock, Logger(observer=events.append))
        for request in (_request(), _request(b'/a?"q"\\', b"\x1b[31m\xff")):
            logger(request, 200, Upstream("http", "10.0.0.1", 80), 0.0125)
            eventLogger(request, 200, Upstream("http", "10.0.0.1", 80), 0.0125)
        writer.flush()
        self.assertEqual(
            sink.getvalue().decode("utf-8").splitlines(),
            [formatEvent(e) for e in events],
        )
        self.assertEqual(
            formatEvent(events[0]),
            '192.0.2.7 - - [01/Jan/1971:00:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" '
            '"curl/8" upstream=10.0.0.1:80 duration=0.012500 request_id=00ff00ff00ff00ff',
        )
        self.assertEqual(events[0]["request_id"], "00ff00ff00ff00ff")

    def test_escaped(self) -> None:
        """
        Quotes and backslashes are escaped with a backslash, control and
        non-ASCII bytes as \\xHH: a request cannot break or forge a line.
        """
        logger, clock, sink, writer = self._logger()
        logger(_request(b"/a\"b\\c", b"x\ty\x00\xe9"), 200, None, 0.0)
        writer.flush()
        line = sink.getvalue().decode("ascii")
        self.assertIn('"GET /a\\"b\\\\c HTTP/1.1"', line)
        self.assertIn('"x\\x09y\\x00\\xE9"', line)
        self.assertEqual(line.count("\n"), 1)

    def test_json(self) -> None:
        """
        With JSON, each line is an object with time, level, namespace,
        text and the named fields, request_id among them.
        """
        logger, clock, sink, writer = self._logger(asJSON=True)
        clock.advance(0.25)
        logger(_request(), 404, None, 0.5)
        clock.advance(0.5)  # the time is the request's, not the flush's
        logger.tunnelEnded(_request(), Upstream("http", "10.0.0.1", 80), 2.0, 3, 4)
        writer.flush()
        first, second = (json.loads(x) for x in sink.getvalue().splitlines())
        self.assertEqual(
            {k: first[k] for k in ("level", "namespace", "client", "method", "uri",
                                   "status", "size", "upstream", "duration", "request_id")},
            {"level": "info", "namespace": "revproxy.access", "client": "192.0.2.7",
             "method": "GET", "uri": "/a", "status": 404, "size": 5, "upstream": "-",
             "duration": 0.5, "request_id": "00ff00ff00ff00ff"},
        )
        # The time as the JSON logs write it.
        self.assertEqual(first["time"], "1971-01-01T00:00:00.250000+00:00")
        self.assertEqual(first["time"], isoTime(86400 * 365 + 0.25))
        self.assertIn('"GET /a HTTP/1.1" 404 5', first["text"])
        self.assertEqual((second["status"], second["bytes_in"], second["bytes_out"]), (101, 3, 4))
        self.assertEqual(second["time"], "1971-01-01T00:00:00.750000+00:00")
