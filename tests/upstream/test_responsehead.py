"""
Tests for L{revproxy.upstream.responsehead} and for the response head as
L{revproxy.upstream.connection} reads it: field values without their
surrounding whitespace, and a head that arrives before its body.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.upstream.receiver import MalformedResponse
from revproxy.upstream.responsehead import ResponseHead, parseResponseHead
from tests.upstream.test_connection import PoolHarness


class ParseResponseHeadTests(SynchronousTestCase):
    def test_framing(self) -> None:
        """
        The fields that frame the response are read whatever their case.
        """
        self.assertEqual(
            parseResponseHead(
                b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 12\r\nX: y\r\n"
            ),
            ResponseHead(200, b"OK", [(b"content-LENGTH", b"12"), (b"X", b"y")], 12, False, False, True),
        )
        head = parseResponseHead(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n")
        self.assertEqual((head.transferEncoding, head.chunked), (True, True))
        head = parseResponseHead(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n")
        self.assertEqual((head.transferEncoding, head.chunked), (True, False))

    def test_keepAlive(self) -> None:
        """
        HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes
        it unless told to keep it.
        """
        cases = [
            (b"HTTP/1.1 200 OK\r\n", True),
            (b"HTTP/1.1 200 OK\r\nConnection: Close\r\n", False),
            (b"HTTP/1.0 200 OK\r\n", False),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n", True),
        ]
        for head, keepAlive in cases:
            self.assertEqual(parseResponseHead(head).keepAlive, keepAlive, head)

    def test_refused(self) -> None:
        """
        A bad status line or field line is refused.
        """
        for head in [
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/2.0 200 OK\r\n",
            b"HTTP/1.1 099 Odd\r\n",
            b"HTTP/1.1 200 OK\r\nX : y\r\n",
            b"HTTP/1.1 200 OK\r\nX: y\r\n folded\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n",
        ]:
            self.assertRaises(MalformedResponse, parseResponseHead, head)


class ResponseHeadTests(SynchronousTestCase):
    def test_valueWhitespace(self) -> None:
        """
        Spaces and tabs around a field value are not part of it; those
        inside it are.
        """
        ex, _, _ = PoolHarness().exchange(
            b"HTTP/1.1 200 OK\r\nX-A:  a  b \t\r\nX-B:\tc\r\nX-C:\r\nX-D:d\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        assert ex.started is not None
        self.assertEqual(
            ex.started[2],
            [
                (b"X-A", b"a  b"),
                (b"X-B", b"c"),
                (b"X-C", b""),
                (b"X-D", b"d"),
                (b"Content-Length", b"0"),
            ],
        )

    def test_noFields(self) -> None:
        """
        A head with a status line and no fields is a response until the
        connection closes.
        """
        ex, _, _ = PoolHarness().exchange(b"HTTP/1.1 200 OK\r\n\r\nhi")
        self.assertEqual(ex.started, (200, b"OK", []))
        self.assertEqual(ex.body, [b"hi"])

    def test_headAlone(self) -> None:
        """
        A head that ends what was read, its body still to come, is
        announced; one whose body came with it, or an interim response, is
        not.
        """
        ex, _, _ = PoolHarness().exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        self.assertTrue(ex.awaited)
        ex, _, _ = PoolHarness().exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertFalse(ex.awaited)
        ex, _, _ = PoolHarness().exchange(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertFalse(ex.awaited)
        ex, _, _ = PoolHarness().exchange(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertFalse(ex.awaited)
