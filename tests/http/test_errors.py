"""
Tests for L{revproxy.http.errors}: the plain-text error response and the
Date cache.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.http.errors import DateCache, respondWithError


class DateCacheTests(SynchronousTestCase):
    def test_oncePerSecond(self) -> None:
        """
        The Date value follows the injected clock, to the second.
        """
        clock = Clock()
        dates = DateCache(clock)
        first = dates.now()
        self.assertEqual(first, b"Thu, 01 Jan 1970 00:00:00 GMT")
        clock.advance(0.9)
        self.assertIs(dates.now(), first)
        clock.advance(0.1)
        self.assertEqual(dates.now(), b"Thu, 01 Jan 1970 00:00:01 GMT")


class RespondWithErrorTests(SynchronousTestCase):
    def test_plainText(self) -> None:
        """
        The error is the message and a newline, in plain text, with its
        length, the given Date and no Server header.
        """
        request: Any = DummyRequest([b""])
        request.responseHeaders.setRawHeaders(b"server", [b"TwistedWeb"])
        respondWithError(request, 502, b"bad", b"the-date")
        self.assertEqual(request.responseCode, 502)
        self.assertEqual(b"".join(request.written), b"bad\n")
        self.assertEqual(request.finished, 1)
        headers = request.responseHeaders
        self.assertFalse(headers.hasHeader(b"server"))
        self.assertEqual(headers.getRawHeaders(b"date"), [b"the-date"])
        self.assertEqual(headers.getRawHeaders(b"content-length"), [b"4"])
        self.assertEqual(
            headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"]
        )
        self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
