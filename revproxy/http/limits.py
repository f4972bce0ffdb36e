# -*- test-case-name: tests.http.test_channel -*-
"""
The limits and deadlines of client connections, as the channel
(L{revproxy.http.channel}) enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from revproxy.http.parser import HeadLimits

__all__ = ["ServerLimits"]


@dataclass(frozen=True)
class ServerLimits:
    """
    The limits and deadlines of client connections.

    @ivar head: the request head's limits.
    @ivar maxBodySize: the largest request body, C{0} for no limit (413).
    @ivar headerTimeout: seconds for the whole head, from its first byte.
    @ivar bodyTimeout: the longest gap between body bytes, in seconds.
    @ivar maxConnections: open client connections, past which new ones are
        closed at once.
    @ivar replayBuffer: the request body bytes kept to send the request
        again to another upstream (C{--retry-buffer}).
    @ivar readSize: how much a client connection reads at once in a body
        that is not spliced (a chunked one, or over TLS) and in a tunnel,
        and buffers for writing before it pauses what feeds it (Twisted's
        C{bufferSize}, 64 KiB by default): a 1 MiB body takes 4 reads, not
        16, each of which costs a pass through parser, body and writer.
        Heads are read in smaller pieces (L{revproxy.http.splice.HEAD_READ}).
    """

    head: HeadLimits = field(default_factory=HeadLimits)
    maxBodySize: int = 0
    headerTimeout: float = 10.0
    bodyTimeout: float = 60.0
    maxConnections: int = 10000
    replayBuffer: int = 64 * 1024
    readSize: int = 256 * 1024
