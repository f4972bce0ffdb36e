# -*- test-case-name: tests.http.test_parser -*-
"""
The strict HTTP/1.1 request parser of the client side: llhttp (the parser of
Node.js, through C{httptools}) for the framing, and the checks RFC 9112
asks of a proxy on top of it.

llhttp, in its default strict mode, refuses what makes request smuggling
possible: a bare LF or CR as a line end anywhere (request line, header,
chunk size, chunk extension), obs-fold, whitespace before a colon, control
characters in names and values, Content-Length with Transfer-Encoding,
duplicate, list-form or signed Content-Length, a Transfer-Encoding whose
final coding is not chunked, and chunk sizes that overflow.  What it lets
through and a proxy must not is checked here when the head is complete:
HTTP/0.9 and versions above 1.1, a Content-Length past 2^63 or of more than
19 digits, a missing, repeated or malformed Host, request targets in the
wrong form, CONNECT, an unknown expectation, and the size limits
(C{--max-header-size}, C{--max-headers}, C{--max-uri-size}).

(h11, the pure-Python alternative, was measured against llhttp: see the
note on issue 10.  Twisted's own parser is lenient where this must be
strict, and parses line by line in Python.)

A parse error becomes a L{RequestError} with the status to answer: the
channel answers it and closes the connection, so that no byte of a rejected
request can be read as the next one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import httptools

__all__ = [
    "HeadLimits",
    "NO_BODY",
    "ParsedHead",
    "ParserReceiver",
    "RequestError",
    "RequestParser",
    "validHost",
]


@dataclass(frozen=True)
class HeadLimits:
    """
    The limits on a request head.

    @ivar maxHeaderSize: request line plus headers, in bytes (431).
    @ivar maxHeaders: the number of header fields (431).
    @ivar maxUriSize: the request target, in bytes (414).
    """

    maxHeaderSize: int = 16384
    maxHeaders: int = 100
    maxUriSize: int = 8192


class RequestError(Exception):
    """
    A request that must be refused with C{status}; the connection closes
    after the answer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class ParsedHead:
    """
    A request head, checked.

    @ivar target: the request target in origin-form (an absolute-form
        target's path and query, or C{*} for OPTIONS).
    @ivar host: the Host header's value (or an absolute-form target's
        authority), or C{b""} for an HTTP/1.0 request without one.
    @ivar length: the body's Content-Length, C{-1} for a chunked body, or
        L{NO_BODY} for a request without a body.
    @ivar headers: the fields in arrival order, names as sent.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    host: bytes
    length: int
    keepAlive: bool
    expectContinue: bool
    upgrade: bool


class ParserReceiver(Protocol):
    """
    What the parser tells its channel, in order, for each request.
    """

    def headReceived(self, head: ParsedHead) -> None:
        """
        A request head, checked.
        """

    def bodyReceived(self, data: bytes) -> None:
        """
        Bytes of the current request's body (de-chunked).
        """

    def messageEnded(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """
        The current request's body is complete.
        """


MAX_CONTENT_LENGTH = 2**63 - 1

NO_BODY = -2
"""The length of a request that frames no body at all."""

_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?\Z"
)
_ABSOLUTE = re.compile(rb"(?i)https?://([^/?#]*)([^#]*)\Z")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def validHost(value: bytes) -> bool:
    """
    Whether C{value} is a valid C{host[:port]} (RFC 9110 section 7.2): a
    reg-name, an IPv4 address or a bracketed IPv6 literal, and an optional
    port of at most five digits.
    """
    return _HOST.match(value) is not None


def _statusOf(error: Exception, data: bytes) -> RequestError:
    """
    The answer to an llhttp error.
    """
    message = str(error)
    low = message.lower()
    if isinstance(error, httptools.HttpParserInvalidMethodError):
        method = data.lstrip(b"\r\n").split(b" ", 1)[0]
        if _TOKEN.match(method):
            return RequestError(501, "method not implemented")
        return RequestError(400, "malformed request line")
    if "invalid http version" in low or "pause on pri" in low:
        return RequestError(505, "HTTP version not supported")
    if "request has invalid `transfer-encoding`" in low:
        return RequestError(501, "transfer coding not implemented")
    if "content-length overflow" in low:
        return RequestError(400, "Content-Length too large")
    return RequestError(400, message.rstrip(".") or "malformed request")


class RequestParser:
    """
    Parses the requests of one client connection, and checks them.

    L{feed} raises L{RequestError} for a request to refuse; after that the
    parser must not be fed again.  After an upgrade request (the only one
    llhttp stops at), L{feed} returns the bytes that followed it.
    """

    __slots__ = (
        "_receiver",
        "_limits",
        "_parser",
        "_url",
        "_headers",
        "_inHead",
        "_headBytes",
        "_headerCount",
        "_trailers",
        "_bodyLeft",
        "_raw",
        "upgraded",
    )

    def __init__(self, receiver: ParserReceiver, limits: HeadLimits) -> None:
        self._receiver = receiver
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._inHead = False
        self._headBytes = 0
        self._headerCount = 0
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._bodyLeft = 0
        self._raw = 0
        self.upgraded = False

    @property
    def inHead(self) -> bool:
        """
        Whether a request head has begun and is not complete.
        """
        return self._inHead

    @property
    def rawLeft(self) -> int:
        """
        The bytes of a Content-Length body still to come once a read has
        ended inside it (else C{0}): bytes that are only counted.
        """
        return self._raw

    def skip(self, size: int) -> None:
        """
        C{size} bytes of the body counted by L{rawLeft} went elsewhere
        without being read here (L{revproxy.http.splice}): count them, and
        end the message after its last byte.
        """
        raw = self._raw - size
        if raw < 0:
            raise ValueError("skipped past the body")
        self._raw = raw
        if not raw:
            self._parser = httptools.HttpRequestParser(self)
            self.on_message_complete()

    def feed(self, data: bytes) -> bytes:
        """
        Parse C{data}; return what follows an upgrade request, if the
        parser stopped at one, else C{b""}.

        The rest of a Content-Length body, once a read has ended inside it,
        is counted here and handed on as it was read: llhttp would copy each
        piece for its callback (a third copy of every body byte, after the
        kernel's two), for framing that is only a count.  llhttp, left in
        the body, starts afresh on the next request.
        """
        raw = self._raw
        if raw:
            if len(data) < raw:
                self._raw = raw - len(data)
                self._receiver.bodyReceived(data)
                return b""
            self._raw = 0
            self._receiver.bodyReceived(data[:raw])
            self._parser = httptools.HttpRequestParser(self)
            self.on_message_complete()
            data = data[raw:]
            if not data:
                return b""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.upgraded = True
            return data[e.args[0]:]
        except httptools.HttpParserCallbackError as e:
            # A check of ours, or the receiver's, refused the request.
            error = e.__context__
            if not isinstance(error, RequestError):
                raise
            raise error from None
        except httptools.HttpParserError as e:
            raise _statusOf(e, data) from None
        if self._inHead:
            # Every byte of this read belongs to the head, which is not yet
            # complete: that is the exact size so far.
            self._headBytes += len(data)
            if self._headBytes > self._limits.maxHeaderSize:
                raise RequestError(431, "request header fields too large")
        elif self._bodyLeft:
            self._raw = self._bodyLeft
            self._bodyLeft = 0
        return b""

    def _fail(self, status: int, message: str) -> None:
        raise RequestError(status, message)

    # -- llhttp's callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        self._inHead = True
        self._url = b""
        self._headers = []
        self._trailers = None
        self._headBytes = 0
        self._headerCount = 0

    def on_url(self, url: bytes) -> None:
        url = self._url + url if self._url else url
        if len(url) > self._limits.maxUriSize:
            self._fail(414, "URI too long")
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        trailers = self._trailers
        if trailers is not None:
            trailers.append((name, value))
            if len(trailers) > self._limits.maxHeaders:
                self._fail(431, "too many trailer fields")
            return
        self._headerCount += 1
        if self._headerCount > self._limits.maxHeaders:
            self._fail(431, "too many header fields")
        self._headBytes += len(name) + len(value) + 4
        if self._headBytes > self._limits.maxHeaderSize:
            self._fail(431, "request header fields too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._inHead = False
        parser = self._parser
        limits = self._limits
        if self._headBytes + len(self._url) > limits.maxHeaderSize:
            self._fail(431, "request header fields too large")
        version = parser.get_http_version()
        if version == "0.9":
            self._fail(400, "HTTP/0.9 is not supported")
        if version not in ("1.1", "1.0"):
            self._fail(505, "HTTP version not supported")
        method: bytes = parser.get_method()
        if method == b"CONNECT":
            self._fail(405, "CONNECT is not allowed")
        headers = self._headers
        host = b""
        hosts = 0
        length = NO_BODY
        chunked = False
        expect = False
        for name, value in headers:
            if len(name) == 4 and name.lower() == b"host":
                hosts += 1
                host = value
            elif len(name) == 14 and name.lower() == b"content-length":
                if len(value) > 19 or int(value) > MAX_CONTENT_LENGTH:
                    self._fail(400, "Content-Length too large")
                length = int(value)
            elif len(name) == 17 and name.lower() == b"transfer-encoding":
                if value.rsplit(b",", 1)[-1].strip().lower() != b"chunked":
                    self._fail(501, "transfer coding not implemented")
                chunked = True
            elif len(name) == 6 and name.lower() == b"expect":
                if value.lower() != b"100-continue":
                    self._fail(417, "expectation not supported")
                expect = True
        if chunked:
            if version == "1.0":
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            length = -1
        if hosts > 1:
            self._fail(400, "more than one Host header")
        if hosts == 0 and version == "1.1":
            self._fail(400, "missing Host header")
        if hosts and not validHost(host):
            self._fail(400, "invalid Host header")
        target = self._url
        if target[:1] != b"/":
            if target == b"*":
                if method != b"OPTIONS":
                    self._fail(400, "asterisk-form is for OPTIONS only")
            else:
                absolute = _ABSOLUTE.match(target)
                if absolute is None:
                    self._fail(400, "invalid request target")
                    return
                authority, rest = absolute.groups()
                if not validHost(authority):
                    self._fail(400, "invalid authority in the request target")
                if hosts and host.lower() != authority.lower():
                    self._fail(400, "the request target's authority is not the Host")
                host = authority
                target = rest if rest[:1] == b"/" else b"/" + rest
        self._bodyLeft = length if length > 0 else 0
        self._receiver.headReceived(
            ParsedHead(
                method,
                target,
                b"HTTP/1.1" if version == "1.1" else b"HTTP/1.0",
                headers,
                host,
                length,
                parser.should_keep_alive(),
                expect,
                parser.should_upgrade(),
            )
        )

    def on_body(self, body: bytes) -> None:
        if self._bodyLeft:
            self._bodyLeft -= len(body)
        self._receiver.bodyReceived(body)

    def on_chunk_header(self) -> None:
        # Fields after the last chunk's header are its trailers.
        self._trailers = []

    def on_chunk_complete(self) -> None:
        pass

    def on_message_complete(self) -> None:
        self._bodyLeft = 0
        trailers = self._trailers or []
        self._trailers = None
        self._receiver.messageEnded(trailers)
