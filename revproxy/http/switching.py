# -*- test-case-name: tests.forward.test_tunnel -*-
"""
The part of a client connection (L{revproxy.http.channel.ProxyChannel}) that
hands it over to a tunnel once the upstream switched protocols (101): from
then on the client's bytes, its half-close and its close go to the tunnel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import alsoProvides

from revproxy.deadline import Deadline

if TYPE_CHECKING:
    from revproxy.http.server import ClientTunnel

__all__ = ["SwitchingProtocols"]


class SwitchingProtocols:
    """
    Mixin of a client connection that can become a tunnel.

    @ivar tunnel: after L{switchProtocols}, what the client's bytes go to.
    """

    tunnel: ClientTunnel | None = None
    transport: Any
    _deadline: Deadline
    _upgradeRest: bytes | None
    _pausedFor: int

    def flushHead(self) -> None:
        raise NotImplementedError()

    def switchProtocols(self, tunnel: ClientTunnel) -> bytes:
        """
        Hand the connection over to C{tunnel}, once the 101 is written: the
        client's bytes, its half-close and its close go to C{tunnel} from
        now on, and no deadline of the channel applies.  Return the bytes
        the client sent after its request.
        """
        self.flushHead()
        self.tunnel = tunnel
        self._deadline.stop()
        alsoProvides(self, IHalfCloseableProtocol)
        rest = self._upgradeRest or b""
        self._upgradeRest = None
        self._pausedFor = 0
        self.transport.resumeProducing()
        return rest

    # IHalfCloseableProtocol, once switched: the tunnel passes a half-close on.

    def readConnectionLost(self) -> None:
        if self.tunnel is not None:
            self.tunnel.clientReadClosed()
        elif self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass
