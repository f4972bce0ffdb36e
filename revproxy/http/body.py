# -*- test-case-name: tests.http.test_body -*-
"""
A request body as it arrives from the client: handed to the upstream while
it streams in, never spooled.

The channel feeds the body (L{RequestBody.dataReceived}, L{RequestBody.ended},
L{RequestBody.fail}); one consumer at a time (the upstream body sender) takes
it.  Between them runs flow control both ways: a consumer that cannot take
more (its upstream's socket is full) pauses the body, which pauses the
client's transport; bytes that arrive with no consumer attached (while the
upstream connection is being made) are held, and past L{PENDING_LIMIT} the
client is paused until a consumer takes them.

The first bytes, up to the retry buffer (C{--retry-buffer}), are also kept
after they were consumed, so that a request that failed on one upstream
before any answer can be sent again, whole, to another: L{RequestBody.replay}.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BodyConsumer", "BodyReader", "RequestBody", "PENDING_LIMIT"]

PENDING_LIMIT = 64 * 1024
"""Bytes held for no consumer before the client is paused."""


class BodyConsumer(Protocol):
    """
    Where a request body goes.
    """

    def bodyData(self, data: bytes) -> None:
        """
        Bytes of the body.
        """

    def bodyEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """
        The body is complete; C{trailers} are its trailer fields.
        """

    def spliceTarget(self) -> object | None:
        """
        The transport the consumer writes to, if bytes of a body of known
        length may go straight into its socket now, else L{None}.
        """

    def bodyFailed(self, status: int, message: bytes) -> None:
        """
        The body cannot be completed (it crossed C{--max-body-size}, its
        framing was bad, it stalled): the request must be abandoned, and
        answered with C{status} if the response has not begun.
        """


class BodyReader(Protocol):
    """
    Where a body comes from: the client's channel.
    """

    def pauseBody(self) -> None:
        """
        Stop reading the client.
        """

    def resumeBody(self) -> None:
        """
        Read the client again.
        """

    def continueBody(self) -> None:
        """
        Tell a client that waits (C{Expect: 100-continue}) to send the body.
        """


class RequestBody:
    """
    One request's body.

    @ivar length: its Content-Length, or C{-1} for a chunked body.
    @ivar received: the bytes received so far.
    @ivar complete: whether the whole body has been received.
    @ivar trailers: its trailer fields, once complete.
    @ivar failure: C{(status, message)} once it failed.
    """

    __slots__ = (
        "_reader",
        "length",
        "received",
        "complete",
        "trailers",
        "failure",
        "_expect",
        "_kept",
        "_keepLimit",
        "_pending",
        "_pendingSize",
        "_consumer",
        "_paused",
        "_readerPaused",
        "consumed",
        "_endDelivered",
    )

    def __init__(
        self, reader: BodyReader, length: int, keepLimit: int, expectContinue: bool = False
    ) -> None:
        self._reader = reader
        self.length = length
        self.received = 0
        self.complete = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.failure: tuple[int, bytes] | None = None
        self._expect = expectContinue
        self._kept: list[bytes] | None = []
        self._keepLimit = keepLimit
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._consumer: BodyConsumer | None = None
        self._paused = False
        self._readerPaused = False
        self.consumed = 0
        self._endDelivered = False

    # -- from the channel ----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes of the body, from the client.
        """
        self.received += len(data)
        kept = self._kept
        if kept is not None:
            if self.received <= self._keepLimit:
                kept.append(data)
            else:
                self._kept = None
        consumer = self._consumer
        if consumer is not None and not self._paused and not self._pending:
            self.consumed += len(data)
            consumer.bodyData(data)
            return
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._pendingSize > PENDING_LIMIT:
            self._pauseReader()

    def ended(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """
        The client sent the whole body.
        """
        self.complete = True
        self.trailers = trailers
        self._resumeReader()
        if self._consumer is not None and not self._pending and not self._paused:
            self._deliverEnd()

    def fail(self, status: int, message: bytes) -> None:
        """
        The body cannot be completed.
        """
        if self.complete or self.failure is not None:
            return
        self.failure = (status, message)
        self._pending = []
        self._pendingSize = 0
        consumer = self._consumer
        if consumer is not None:
            self._consumer = None
            consumer.bodyFailed(status, message)

    def spliceTarget(self) -> object | None:
        """
        The transport that takes the body's bytes now, if they may be moved
        there without passing through here (L{revproxy.http.splice}): the
        consumer is attached, not paused, nothing is held before it, and it
        offers one.
        """
        consumer = self._consumer
        if consumer is None or self._paused or self._pending:
            return None
        return consumer.spliceTarget()

    def spliced(self, size: int) -> None:
        """
        C{size} bytes of the body went from the client to the consumer's
        transport directly: they are received and consumed, and not kept
        for a retry.
        """
        self.received += size
        self.consumed += size
        self._kept = None

    # -- for the consumer ------------------------------------------------------

    def whole(self) -> bytes | None:
        """
        The whole body, if it is complete and all of it is still at hand
        (nothing consumed yet): it can go with the request head in one
        write.
        """
        if self.complete and not self.consumed:
            return b"".join(self._pending)
        return None

    @property
    def attached(self) -> bool:
        """
        Whether a consumer takes the body.
        """
        return self._consumer is not None

    @property
    def replayable(self) -> bool:
        """
        Whether the body can still be sent again from its first byte.
        """
        return self.failure is None and (not self.consumed or self._kept is not None)

    def attach(self, consumer: BodyConsumer) -> None:
        """
        Give the body to C{consumer}: what is held first, then the rest as
        it arrives.  (A client waiting on C{Expect: 100-continue} is told to
        send it now.)
        """
        self._consumer = consumer
        self._paused = False
        if self.failure is not None:
            self._consumer = None
            consumer.bodyFailed(*self.failure)
            return
        if self._expect:
            self._expect = False
            if not self.complete and not self.received:
                self._reader.continueBody()
        self._flush()

    def replay(self) -> bool:
        """
        Detach the consumer and make the body start over from its first
        byte for the next one; C{False} if that is no longer possible.
        """
        self._consumer = None
        if not self.replayable:
            return False
        if self.consumed:
            kept = self._kept or []
            self._pending = kept + self._pending if self._pending else list(kept)
            self._pendingSize = sum(len(d) for d in self._pending)
            self.consumed = 0
        self._endDelivered = False
        return True

    def detach(self) -> None:
        """
        The consumer is gone: hold what arrives from now on.
        """
        self._consumer = None

    # IPushProducer, as its consumer's transport sees it.

    def pauseProducing(self) -> None:
        self._paused = True
        if not self.complete:
            self._pauseReader()

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        self._consumer = None

    # -- internals -------------------------------------------------------------

    def _flush(self) -> None:
        consumer = self._consumer
        while consumer is not None and self._pending and not self._paused:
            data = self._pending.pop(0)
            self._pendingSize -= len(data)
            self.consumed += len(data)
            consumer.bodyData(data)
            consumer = self._consumer
        if consumer is None or self._paused:
            return
        if self.complete:
            self._deliverEnd()
        elif self._pendingSize <= PENDING_LIMIT:
            self._resumeReader()

    def _deliverEnd(self) -> None:
        consumer = self._consumer
        if consumer is not None and not self._endDelivered:
            self._endDelivered = True
            consumer.bodyEnded(self.trailers)

    def _pauseReader(self) -> None:
        if not self._readerPaused:
            self._readerPaused = True
            self._reader.pauseBody()

    def _resumeReader(self) -> None:
        if self._readerPaused:
            self._readerPaused = False
            self._reader.resumeBody()
