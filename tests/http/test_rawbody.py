"""
Tests for L{revproxy.http.parser.RequestParser}'s reading of a
Content-Length body past llhttp, once a read has ended inside it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.parser import HeadLimits, RequestError, RequestParser
from tests.http.test_parser import H, Recorder

POST = b"POST /up HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n"


def _parser() -> tuple[RequestParser, Recorder]:
    r = Recorder()
    return RequestParser(r, HeadLimits()), r


class RawBodyTests(SynchronousTestCase):
    def test_everySplit(self) -> None:
        """
        However the reads fall, a body and the pipelined request after it
        arrive whole and in order.
        """
        body = bytes(range(256)) * 4
        stream = (POST % len(body)) + body + b"GET /next HTTP/1.1\r\n" + H + b"\r\n"
        for size in (1, 2, 7, 100, 1000, 1100, len(stream)):
            parser, r = _parser()
            for i in range(0, len(stream), size):
                parser.feed(stream[i : i + size])
            self.assertEqual(b"".join(r.body), body, size)
            self.assertEqual([h.target for h in r.heads], [b"/up", b"/next"], size)
            self.assertEqual(r.ended, [[], []], size)

    def test_piecesAsRead(self) -> None:
        """
        Past the read that held the head, each read of the body is handed on
        as it was read, not copied.
        """
        parser, r = _parser()
        parser.feed((POST % 10) + b"ab")
        piece = b"cdefg"
        parser.feed(piece)
        self.assertIs(r.body[-1], piece)
        parser.feed(b"hij")
        self.assertEqual(b"".join(r.body), b"abcdefghij")
        self.assertEqual(r.ended, [[]])

    def test_nextRequestStrict(self) -> None:
        """
        What follows the body is parsed strictly, as a new request.
        """
        parser, r = _parser()
        parser.feed((POST % 4) + b"ab")
        error = self.assertRaises(RequestError, parser.feed, b"cdGET / HTTP/1.1\n\n")
        self.assertEqual(error.status, 400)
        self.assertEqual(r.body, [b"ab", b"cd"])

    def test_chunkedLeftToLlhttp(self) -> None:
        """
        A chunked body is framed by llhttp, read by read.
        """
        parser, r = _parser()
        parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab")
        parser.feed(b"c\r\n0\r\n\r\n")
        self.assertEqual(b"".join(r.body), b"abc")
        self.assertEqual(r.ended, [[]])

    def test_upgradeLeftToLlhttp(self) -> None:
        """
        llhttp stops at an upgrade request's head: what follows is handed
        back whole, none of it read as a body.
        """
        parser, r = _parser()
        rest = parser.feed(
            b"POST / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\nUpgrade: x\r\n"
            b"Content-Length: 4\r\n\r\nabcdNEW"
        )
        self.assertTrue(parser.upgraded)
        self.assertEqual(rest, b"abcdNEW")
        self.assertEqual(r.body, [])


class SkipTests(SynchronousTestCase):
    """
    L{RequestParser.skip}: bytes of the counted rest of a body that went
    elsewhere (spliced) without being read.
    """

    def test_countedThenEnded(self) -> None:
        """
        Skipped bytes count against the rest of the body; the last one ends
        the request, and the next request is parsed afresh.
        """
        parser, r = _parser()
        parser.feed((POST % 10) + b"ab")
        self.assertEqual(parser.rawLeft, 8)
        parser.skip(5)
        self.assertEqual((parser.rawLeft, r.ended), (3, []))
        parser.skip(3)
        self.assertEqual((parser.rawLeft, r.ended), (0, [[]]))
        parser.feed(b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
        self.assertEqual([h.target for h in r.heads], [b"/up", b"/next"])
        self.assertEqual(r.body, [b"ab"])

    def test_notPastTheBody(self) -> None:
        """
        Skipping more than is left is a bug of the caller, not a request.
        """
        parser, _ = _parser()
        parser.feed((POST % 4) + b"ab")
        self.assertRaises(ValueError, parser.skip, 3)

    def test_onlyOnceReadEndedInBody(self) -> None:
        """
        A body not yet begun, or a chunked one, has nothing to skip.
        """
        parser, _ = _parser()
        parser.feed(POST % 4)
        self.assertEqual(parser.rawLeft, 4)
        parser, _ = _parser()
        parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab")
        self.assertEqual(parser.rawLeft, 0)
