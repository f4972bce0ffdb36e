# -*- test-case-name: tests.etcd.test_watch -*-
"""
Our watch on etcd's gateway, in place of txaioetcd's (see
L{revproxy.etcd.client} for what is wrong with that one): L{EtcdWatch}
feeds an unbuffered response body to the pure L{WatchStreamDecoder},
delivers each revision once, and reports how and why the stream ended
(L{WatchEnded}), or fails with the exception a callback raised.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from zope.interface import implementer

from revproxy.etcd.decoder import WatchStreamDecoder, parseUnaryAnswer
from revproxy.etcd.types import (
    EndReason,
    EtcdError,
    EtcdTimeout,
    EtcdUnavailable,
    IWatch,
    OnEvents,
    OnProgress,
    WatchCanceled,
    WatchCreated,
    WatchEnded,
    WatchError,
    WatchEvents,
    WatchMessage,
    WatchProgress,
)

__all__ = ["EtcdWatch"]

log = Logger()


class _WatchProtocol(Protocol):
    """
    Receives a watch response body and feeds it to the decoder.
    """

    def __init__(self, watch: EtcdWatch) -> None:
        self._watch = watch
        self._decoder = WatchStreamDecoder()

    def dataReceived(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            if self._watch._ending is not None:
                return
            self._watch._message(message)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        for message in self._decoder.finish():
            if self._watch._ending is not None:
                break
            self._watch._message(message)
        self._watch._connectionLost(reason)


def _stop(protocol: Protocol) -> None:
    """
    Close the connection under a response body protocol.
    """
    transport = protocol.transport
    if transport is not None:
        cast(IPushProducer, transport).stopProducing()


@implementer(IWatch)
class EtcdWatch:
    """
    A watch on etcd's gateway; made by L{EtcdClient.watch}.
    """

    def __init__(
        self,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None,
    ) -> None:
        self.ended: Deferred[WatchEnded] = Deferred()
        self._onEvents = onEvents
        self._onProgress = onProgress
        # The last revision delivered (or known complete): older etcd
        # releases may send an event twice; each revision is delivered once.
        self._applied = max(startRevision - 1, 0)
        self._ending: WatchEnded | Failure | None = None
        self._request: Deferred[Any] | None = None
        self._protocol: _WatchProtocol | None = None

    @property
    def nextRevision(self) -> int:
        return self._applied + 1

    def _start(self, coro: Any) -> None:
        self._request = Deferred.fromCoroutine(coro)
        self._request.addCallbacks(self._responded, self._notResponded)

    def _responded(self, result: tuple[IResponse, bytes | None]) -> None:
        self._request = None
        response, content = result
        if self._ending is not None:
            # Cancelled while the response was on its way: close it.
            self._protocol = _WatchProtocol(self)
            response.deliverBody(self._protocol)
            _stop(self._protocol)
            return
        if response.code != 200:
            try:
                parseUnaryAnswer(response.code, content or b"")
                error = WatchError(None, f"HTTP {response.code}")
            except EtcdError as e:
                error = WatchError(e.code, e.message)
            self._fire(self._ended(EndReason.ERROR, error=error, detail=error.message))
            return
        self._protocol = _WatchProtocol(self)
        response.deliverBody(self._protocol)

    def _notResponded(self, failure: Failure) -> None:
        self._request = None
        if self._ending is not None:
            self._fire(self._ending)
        elif failure.check(EtcdUnavailable, EtcdTimeout):
            self._fire(
                self._ended(EndReason.CONNECTION_LOST, detail=str(failure.value))
            )
        elif failure.check(EtcdError):
            e = cast(EtcdError, failure.value)
            error = WatchError(e.code, e.message)
            self._fire(self._ended(EndReason.ERROR, error=error, detail=e.message))
        else:
            log.failure("etcd watch could not start", failure)
            self._fire(failure)

    def _ended(
        self,
        reason: EndReason,
        compactRevision: int | None = None,
        error: WatchError | None = None,
        detail: str = "",
    ) -> WatchEnded:
        return WatchEnded(reason, self.nextRevision, compactRevision, error, detail)

    def _message(self, message: WatchMessage) -> None:
        try:
            if isinstance(message, WatchEvents):
                applied = self._applied
                fresh = tuple(e for e in message.events if e.modRevision > applied)
                if fresh:
                    self._applied = max(e.modRevision for e in fresh)
                    if len(fresh) != len(message.events):
                        message = WatchEvents(message.revision, fresh)
                    self._onEvents(message)
            elif isinstance(message, WatchProgress):
                self._applied = max(self._applied, message.revision)
                if self._onProgress is not None:
                    self._onProgress(message.revision)
            elif isinstance(message, WatchCreated):
                log.debug(
                    "etcd watch created at revision {revision}",
                    revision=message.revision,
                )
            elif isinstance(message, WatchCanceled):
                if message.compactRevision is not None:
                    reason = EndReason.COMPACTED
                    detail = f"revision {self.nextRevision} compacted"
                else:
                    reason = EndReason.SERVER_CANCELED
                    detail = message.reason or "canceled by etcd"
                self._end(self._ended(reason, message.compactRevision, detail=detail))
            else:
                self._end(
                    self._ended(EndReason.ERROR, error=message, detail=message.message)
                )
        except Exception:
            failure = Failure()
            log.failure("etcd watch callback failed; ending the watch", failure)
            self._end(failure)

    def _end(self, result: WatchEnded | Failure) -> None:
        """
        End the stream: close the connection; C{ended} fires once it is lost.
        """
        if self._ending is not None:
            return
        self._ending = result
        if self._protocol is not None:
            _stop(self._protocol)
        elif self._request is not None:
            self._request.cancel()

    def _connectionLost(self, reason: Failure) -> None:
        self._protocol = None
        if self._ending is None:
            if reason.check(ResponseDone, PotentialDataLoss):
                detail = "etcd closed the watch stream"
            else:
                detail = f"watch connection lost: {reason.getErrorMessage()}"
            self._ending = self._ended(EndReason.CONNECTION_LOST, detail=detail)
        self._fire(self._ending)

    def _fire(self, result: WatchEnded | Failure) -> None:
        if self.ended.called:
            return
        self._ending = result
        if isinstance(result, WatchEnded):
            log.info(
                "etcd watch ended ({reason}): {detail}; next revision {nextRevision}",
                reason=result.reason.value,
                detail=result.detail,
                nextRevision=result.nextRevision,
            )
            self.ended.callback(result)
        else:
            self.ended.errback(result)

    def cancel(self) -> None:
        self._end(self._ended(EndReason.CANCELLED, detail="cancelled"))
