"""
Tests for L{revproxy.forward.bodies}: what is sent of a request body.
"""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.forward.bodies import SMALL_BODY, planBody, replayable
from revproxy.http.body import RequestBody
from tests.http.test_body import Reader


class PlanTests(SynchronousTestCase):
    def test_spooled(self) -> None:
        """
        A plain twisted.web request's spooled body goes with its length.
        """
        request = DummyRequest([b""])
        request.content = io.BytesIO(b"abc")
        request.requestHeaders.setRawHeaders(b"content-length", [b"3"])
        headers: list[bytes] = []
        self.assertEqual(planBody(request, headers), (3, b"abc"))
        self.assertEqual(headers, [b"Content-Length: 3\r\n"])

    def test_replayable(self) -> None:
        """
        A spool is replayable up to the retry buffer; a stream while it
        holds its first byte.
        """
        self.assertTrue(replayable(None, 0, 0))
        self.assertTrue(replayable(b"abc", 3, 3))
        self.assertFalse(replayable(b"abcd", 4, 3))
        body = RequestBody(Reader(), SMALL_BODY * 2, 0)
        self.assertTrue(replayable(body, body.length, 0))
