# -*- test-case-name: tests.forward.test_bodies -*-
"""
What an exchange sends of a request body, and whether it can send it again.

A request from the proxy's own site (L{revproxy.http.server.ProxyRequest})
streams its body in while it is forwarded: a small body that is already
whole goes in the head's write, a larger or unfinished one streams
(L{revproxy.upstream.body.BodyStream}) with its Content-Length, or chunked.
A request from a plain twisted.web site has its body spooled in C{content}
(L{revproxy.upstream.body.spooledBody}).
"""

from __future__ import annotations

from typing import IO

from twisted.web.server import Request

from revproxy.http.body import RequestBody
from revproxy.http.server import ProxyRequest
from revproxy.upstream.body import spooledBody

__all__ = ["SMALL_BODY", "Body", "planBody", "replayable"]

SMALL_BODY = 64 * 1024
"""Request bodies up to this size are sent in the same write as the head;
response bodies up to this size are written to the client without flow
control."""

Body = bytes | IO[bytes] | RequestBody | None
"""What is sent after a request's head: nothing, bytes, a spool or a
stream."""


def planBody(request: Request, headers: list[bytes]) -> tuple[int, Body]:
    """
    The size of C{request}'s body (C{-1}: chunked) and what to send of it;
    the framing header line is appended to C{headers}.
    """
    if isinstance(request, ProxyRequest) and request.content is None:
        return _streamed(request.body, headers)
    requestHeaders = request.requestHeaders
    framed = requestHeaders.hasHeader(b"content-length") or requestHeaders.hasHeader(
        b"transfer-encoding"
    )
    size, spooled = spooledBody(request.content, framed, SMALL_BODY)
    if spooled is not None:
        headers.append(b"Content-Length: %d\r\n" % (size,))
    return size, spooled


def _streamed(body: RequestBody | None, headers: list[bytes]) -> tuple[int, Body]:
    if body is None:
        return 0, None
    whole = body.whole()
    if whole is not None and len(whole) <= SMALL_BODY and not body.trailers:
        headers.append(b"Content-Length: %d\r\n" % (len(whole),))
        return len(whole), whole
    if body.length < 0:
        headers.append(b"Transfer-Encoding: chunked\r\n")
    else:
        headers.append(b"Content-Length: %d\r\n" % (body.length,))
    return body.length, body


def replayable(body: Body, size: int, retryBuffer: int) -> bool:
    """
    Whether a request whose body is C{body} can be sent again, from its
    first byte: a stream that still holds it (and starts over), or a body
    of at most C{retryBuffer} bytes.
    """
    if isinstance(body, RequestBody):
        return body.replay()
    return body is None or size <= retryBuffer
