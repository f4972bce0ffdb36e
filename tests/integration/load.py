"""
A steady client load for the integration tests and the health figures
script: C{clients} keep-alive connections to a proxy, each sending requests
back to back (GET and POST in turn) until stopped, counting answers and
errors.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from tests.integration.upstreams import HTTPClient, request


@dataclass
class Load:
    """
    The load and what it saw.

    @ivar codes: responses by status code.
    @ivar errors: connection-level failures (no response), by message.
    """

    port: int
    host: bytes
    clients: int = 50
    post: bool = True
    codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _running: bool = False

    @property
    def requests(self) -> int:
        return sum(self.codes.values()) + sum(self.errors.values())

    @property
    def failed(self) -> int:
        """
        Every answer other than 200, and every request with no answer.
        """
        return self.requests - self.codes[200]

    async def _client(self, n: int) -> None:
        body = os.urandom(512)
        conn = None
        i = 0
        while self._running:
            if conn is None or conn.isClosed:
                conn = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), HTTPClient()
                )
            i += 1
            if self.post and i % 2:
                data = request(b"POST", b"/p/%d" % (n,), self.host, body=body)
            else:
                data = request(b"GET", b"/g/%d" % (n,), self.host)
            try:
                r = await conn.send(data)
            except Exception as e:  # noqa: BLE001 -- counted, not raised
                self.errors[type(e).__name__ + ": " + str(e)[:80]] += 1
                conn = None
                continue
            self.codes[r.code] += 1
        if conn is not None and not conn.isClosed:
            conn.transport.loseConnection()

    def start(self) -> DeferredList:
        """
        Start the clients; the result fires when they have stopped.
        """
        from twisted.internet.defer import ensureDeferred

        self._running = True
        return DeferredList(
            [ensureDeferred(self._client(n)) for n in range(self.clients)],
            consumeErrors=True,
        )

    def stop(self) -> None:
        self._running = False
