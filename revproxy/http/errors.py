# -*- test-case-name: tests.http.test_errors -*-
"""
Error responses: the short plain-text answer the proxy gives when it cannot
forward a request, and the Date header value, made once a second.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.server import Request

__all__ = ["DateCache", "errorResponse", "respondWithError"]


class DateCache:
    """
    The value of a Date header for now, on an injected clock, formatted
    once a second.
    """

    __slots__ = ("_clock", "_second", "_date")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._second = -1
        self._date = b""

    def now(self) -> bytes:
        """
        The Date header value for the current second.
        """
        now = int(self._clock.seconds())
        if now != self._second:
            self._second = now
            self._date = datetimeToString(now)
        return self._date


def respondWithError(request: Request, code: int, message: bytes, date: bytes) -> None:
    """
    Answer C{request} with a short plain-text error: C{message} and a
    newline, with no Server header and the given Date.
    """
    request.setResponseCode(code)
    headers = request.responseHeaders
    headers.removeHeader(b"server")
    headers.setRawHeaders(b"date", [date])
    headers.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"x-content-type-options", [b"nosniff"])
    headers.setRawHeaders(b"content-length", [b"%d" % (len(message) + 1,)])
    request.write(message + b"\n")
    request.finish()


def errorResponse(
    status: int, message: str, now: float, requestId: bytes | None = None
) -> bytes:
    """
    A complete plain-text error response that closes the connection, with
    the request's id as X-Request-Id if it has one.
    """
    body = message.encode("latin-1", "replace") + b"\n"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, RESPONSES.get(status, b"Error")),
            b"X-Request-Id: " + requestId + b"\r\n" if requestId else b"",
            b"Date: ",
            datetimeToString(int(now)),
            b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body),),
            body,
        )
    )
