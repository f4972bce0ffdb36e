# -*- test-case-name: tests.http.test_writes -*-
"""
The upstream's response head, relayed to the client's request: its status,
the fields that reach the client, and a Date where the upstream sent none.
"""

from __future__ import annotations

from twisted.web.server import Request

from revproxy.http.channel import ProxyChannel
from revproxy.http.headers import relayedFieldLines, relayResponseHeaders
from revproxy.http.server import ProxyRequest

__all__ = ["relayHead", "sendHeadNow"]


def relayHead(
    request: Request, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], date: bytes
) -> None:
    """
    Give C{request} the upstream's status and C{headers}, less the
    hop-by-hop ones, and C{date} if the upstream sent no Date.  A
    L{ProxyRequest} takes the fields as lines its channel writes as they
    are (L{relayedFieldLines}); twisted.web's own L{Request} (a resource
    tree's) takes them in its C{responseHeaders}, less its own Server and
    Date.
    """
    request.setResponseCode(code, reason or None)
    out = request.responseHeaders
    if isinstance(request, ProxyRequest):
        fields, length, hasDate = relayedFieldLines(headers)
        request.relayedFields = fields
        if length is not None:
            out.setRawHeaders(b"content-length", [length])
    else:
        out.removeHeader(b"server")
        out.removeHeader(b"date")
        hasDate = relayResponseHeaders(out, headers)
    if not hasDate:
        out.setRawHeaders(b"date", [date])


def sendHeadNow(request: Request) -> None:
    """
    Send the client C{request}'s response head now, its body to come later:
    twisted.web's L{Request} writes the head with the first body bytes, and
    a L{ProxyChannel} holds it for them.
    """
    if not request.startedWriting:
        request.write(b"")
        channel = request.channel
        if isinstance(channel, ProxyChannel):
            channel.flushHead()
