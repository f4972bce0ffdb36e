# -*- test-case-name: tests.ops.test_accesslog -*-
"""
The access log: one event per request, in combined log format with the
upstream and the duration, through L{twisted.logger}.

The text is a format string over named fields, so a JSON observer gets the
fields and a text observer the familiar line; nothing is formatted unless an
observer renders it.
"""

from __future__ import annotations

import time

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from revproxy.routing import Upstream

__all__ = ["AccessLogger"]

ACCESS_FORMAT = (
    '{client} - - [{timestamp}] "{method} {uri} {protocol}" {status} {size} '
    '"{referer}" "{user_agent}" upstream={upstream} duration={duration:.6f}'
)


def _quote(value: bytes | None) -> str:
    if not value:
        return "-"
    return value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')


TUNNEL_FORMAT = ACCESS_FORMAT + " tunnel_bytes_in={bytes_in} tunnel_bytes_out={bytes_out}"


class AccessLogger:
    """
    Emits the access log event of a finished request: an
    L{revproxy.forward.reporting.AccessLog}; its L{tunnelEnded} is a
    L{revproxy.forward.reporting.TunnelLog}.
    """

    def __init__(self, clock: IReactorTime, logger: Logger | None = None) -> None:
        self._clock = clock
        self._log = logger if logger is not None else Logger(namespace="revproxy.access")
        self._second = -1
        self._stamp = ""

    def _timestamp(self) -> str:
        now = int(self._clock.seconds())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
        return self._stamp

    def __call__(
        self,
        request: Request,
        status: int,
        upstream: Upstream | None,
        duration: float,
    ) -> None:
        self._emit(
            ACCESS_FORMAT,
            self._fields(request, status, request.sentLength, upstream, duration),
        )

    def tunnelEnded(
        self,
        request: Request,
        upstream: Upstream,
        duration: float,
        bytesIn: int,
        bytesOut: int,
    ) -> None:
        """
        Log a tunnel as it ends: its upgrade request with status 101, the
        bytes sent to the client as the size, the time from the request to
        the end as the duration, and the bytes relayed each way
        (C{bytes_in} from the client, C{bytes_out} to it).
        """
        fields = self._fields(request, 101, bytesOut, upstream, duration)
        fields["bytes_in"] = bytesIn
        fields["bytes_out"] = bytesOut
        self._emit(TUNNEL_FORMAT, fields)

    def _fields(
        self,
        request: Request,
        status: int,
        size: int,
        upstream: Upstream | None,
        duration: float,
    ) -> dict[str, object]:
        """
        The named fields of a request's line.
        """
        client = request.getClientAddress()
        headers = request.requestHeaders
        return {
            "client": getattr(client, "host", "-"),
            "timestamp": self._timestamp(),
            "method": _quote(request.method),
            "uri": _quote(request.uri),
            "protocol": _quote(request.clientproto),
            "status": status,
            "size": size,
            "referer": _quote(headers.getRawHeaders(b"referer", [None])[-1]),
            "user_agent": _quote(headers.getRawHeaders(b"user-agent", [None])[-1]),
            "upstream": str(upstream) if upstream is not None else "-",
            "duration": duration,
        }

    def _emit(self, format: str, fields: dict[str, object]) -> None:
        """
        Log one line.  It is built once, by C{str.format} in C; the event's
        format is that line with its braces escaped, so that an observer
        renders it without twisted.logger's pure-Python formatter walking
        every field (most of the access log's cost).  The fields stay in the
        event for JSON logs.
        """
        line = format.format_map(fields)
        self._log.info(line.replace("{", "{{").replace("}", "}}"), **fields)
