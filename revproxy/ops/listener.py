# -*- test-case-name: tests.test_tap -*-
"""
The listening ports of the proxy and of its admin endpoint: a failed bind
stops start-up with one line, before privileges are dropped.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure

__all__ = ["Listener"]


class Listener(Service):
    """
    A listening port that, when it cannot be bound, stops start-up with a
    one-line message and exit status 1 instead of a traceback.

    It binds in C{privilegedStartService} (before twistd drops privileges),
    as C{strports.service} does, and reports a failed bind at once rather
    than logging it after start-up has gone on.
    """

    def __init__(self, description: str, factory: Any, reactor: Any) -> None:
        self.description = description
        self.setName(f"listen {description}")
        self._endpoint = serverFromString(reactor, description)
        self._factory = factory
        self._listening: Deferred[Any] | None = None
        self._port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self._listening is not None:
            return
        failed: list[Failure] = []

        def listening(port: Any) -> Any:
            self._port = port
            return port

        self._listening = self._endpoint.listen(self._factory)
        self._listening.addCallback(listening)
        self._listening.addErrback(lambda f: failed.append(f))
        if failed:
            raise SystemExit(
                f"revproxy: cannot listen on {self.description}: "
                f"{failed[0].getErrorMessage()}"
            )

    def whenListening(self) -> Deferred[Any]:
        """
        A Deferred that fires with the listening port once it is bound.
        """
        d: Deferred[Any] = Deferred()
        if self._port is not None:
            d.callback(self._port)
        elif self._listening is not None:

            def listening(port: Any) -> Any:
                d.callback(port)
                return port

            self._listening.addCallback(listening)
        return d

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self._listening = self._listening, None
        port, self._port = self._port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        if listening is not None:
            listening.cancel()
        return None
