"""
Tests for L{revproxy.http.body}: a request body between the client's
channel and its consumer.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.body import PENDING_LIMIT, RequestBody


class Reader:
    def __init__(self) -> None:
        self.paused = False
        self.continued = 0

    def pauseBody(self) -> None:
        self.paused = True

    def resumeBody(self) -> None:
        self.paused = False

    def continueBody(self) -> None:
        self.continued += 1


class Consumer:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended: list[list[tuple[bytes, bytes]]] = []
        self.failed: list[tuple[int, bytes]] = []

    def bodyData(self, data: bytes) -> None:
        self.data.append(data)

    def bodyEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.ended.append(trailers)

    def bodyFailed(self, status: int, message: bytes) -> None:
        self.failed.append((status, message))

    target: object | None = None

    def spliceTarget(self) -> object | None:
        return self.target


class RequestBodyTests(SynchronousTestCase):
    def test_heldUntilAttached(self) -> None:
        """
        Bytes that come before a consumer are held and handed over, in
        order, when it attaches; the end follows once.
        """
        body = RequestBody(Reader(), 6, 1024)
        body.dataReceived(b"abc")
        c = Consumer()
        body.attach(c)
        body.dataReceived(b"def")
        body.ended([])
        body.resumeProducing()
        self.assertEqual((b"".join(c.data), c.ended), (b"abcdef", [[]]))

    def test_whole(self) -> None:
        """
        A body complete before anyone consumed it is at hand whole.
        """
        body = RequestBody(Reader(), 3, 1024)
        self.assertIsNone(body.whole())
        body.dataReceived(b"abc")
        body.ended([])
        self.assertEqual(body.whole(), b"abc")
        body.attach(Consumer())
        self.assertIsNone(body.whole())

    def test_pendingLimitPausesReader(self) -> None:
        """
        Past PENDING_LIMIT held bytes, the client is paused, and resumed
        once a consumer takes them.
        """
        reader = Reader()
        body = RequestBody(reader, -1, 1024)
        body.dataReceived(b"x" * (PENDING_LIMIT + 1))
        self.assertTrue(reader.paused)
        body.attach(Consumer())
        self.assertFalse(reader.paused)

    def test_consumerPauses(self) -> None:
        """
        A paused consumer pauses the client and gets nothing until it
        resumes.
        """
        reader = Reader()
        body = RequestBody(reader, 10, 1024)
        c = Consumer()
        body.attach(c)
        body.pauseProducing()
        self.assertTrue(reader.paused)
        body.dataReceived(b"abc")
        self.assertEqual(c.data, [])
        body.resumeProducing()
        self.assertEqual(c.data, [b"abc"])
        self.assertFalse(reader.paused)

    def test_replayWithinKeepLimit(self) -> None:
        """
        A body consumed within the keep limit can start over for a new
        consumer; past it, it cannot.
        """
        body = RequestBody(Reader(), 6, 4)
        first = Consumer()
        body.attach(first)
        body.dataReceived(b"abc")
        self.assertTrue(body.replay())
        second = Consumer()
        body.attach(second)
        body.dataReceived(b"def")
        self.assertEqual(b"".join(second.data), b"abcdef")
        self.assertFalse(body.replay())

    def test_replayBeforeConsumed(self) -> None:
        """
        A body nobody consumed yet can always start over.
        """
        body = RequestBody(Reader(), 10, 0)
        body.dataReceived(b"abc")
        self.assertTrue(body.replayable)

    def test_continueOnAttach(self) -> None:
        """
        A client that expects 100-continue is told to go on when a consumer
        attaches, once, and not if it sent the body anyway.
        """
        reader = Reader()
        body = RequestBody(reader, 3, 1024, expectContinue=True)
        body.attach(Consumer())
        body.replay()
        body.attach(Consumer())
        self.assertEqual(reader.continued, 1)
        reader = Reader()
        body = RequestBody(reader, 3, 1024, expectContinue=True)
        body.dataReceived(b"a")
        body.attach(Consumer())
        self.assertEqual(reader.continued, 0)

    def test_failure(self) -> None:
        """
        A failure reaches the consumer, or the next one to attach.
        """
        body = RequestBody(Reader(), 10, 1024)
        c = Consumer()
        body.attach(c)
        body.fail(413, b"too large")
        self.assertEqual(c.failed, [(413, b"too large")])
        late = Consumer()
        body.attach(late)
        self.assertEqual(late.failed, [(413, b"too large")])
        self.assertFalse(body.replayable)


class SpliceTests(SynchronousTestCase):
    """
    L{RequestBody.spliceTarget} and L{RequestBody.spliced}.
    """

    def test_targetOnlyWhenTakenNow(self) -> None:
        """
        The consumer's target is offered only while it takes bytes at once:
        attached, not paused, nothing held before it.
        """
        body = RequestBody(Reader(), 100, 10)
        c = Consumer()
        c.target = sink = object()
        self.assertIsNone(body.spliceTarget())  # no consumer
        body.attach(c)
        self.assertIs(body.spliceTarget(), sink)
        body.pauseProducing()
        self.assertIsNone(body.spliceTarget())  # paused
        body.dataReceived(b"held")
        body._paused = False  # as if resumed, with the held bytes not yet flushed
        self.assertIsNone(body.spliceTarget())  # bytes held before it
        body.resumeProducing()
        self.assertEqual(c.data, [b"held"])
        self.assertIs(body.spliceTarget(), sink)
        c.target = None
        self.assertIsNone(body.spliceTarget())  # the consumer has none now

    def test_splicedCounted(self) -> None:
        """
        Spliced bytes are received and consumed, and the body can no longer
        be sent again.
        """
        body = RequestBody(Reader(), 100, 1000)
        body.attach(Consumer())
        body.dataReceived(b"abc")
        self.assertTrue(body.replayable)
        body.spliced(50)
        self.assertEqual((body.received, body.consumed), (53, 53))
        self.assertFalse(body.replayable)
