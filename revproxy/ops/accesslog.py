# -*- test-case-name: tests.ops.test_accesslog -*-
"""
The access log: one line per request, in combined log format with the
upstream, the duration and the request id, built once per request.

By default the line goes straight to a L{revproxy.ops.logwriter.LineWriter}
(buffered, written by size and time): as text, the request's fields are
kept as they are and the line formatted in a batch when the writer
flushes (L{renderLine}); with C{--log-format json}, as a JSON object with
the same keys as the JSON logs' events.
Without a writer it goes through L{twisted.logger} as an event (twistd's
C{--logfile}, C{--syslog}): its format is the line with its braces
escaped, so an observer renders it without formatting fields, and the
named fields are in the event.

Bytes a client sent (method, target, Referer, User-Agent) are logged as
printable ASCII: C{"} and C{\\} are escaped with a backslash, other bytes
outside 0x20-0x7E as C{\\xHH} (as nginx does), so a request cannot forge
or break a line.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from revproxy.ops.logwriter import THROUGH_LOGGING, LineWriter, openLineWriter
from revproxy.ops.signals import Reloader
from revproxy.routing import Upstream

__all__ = ["AccessLogger", "accessLoggerFor", "isoTime", "renderJSON", "renderLine"]

ACCESS_FORMAT = (
    '{client} - - [{timestamp}] "{method} {uri} {protocol}" {status} {size} '
    '"{referer}" "{user_agent}" upstream={upstream} duration={duration:.6f} '
    "request_id={request_id}"
)

TUNNEL_FORMAT = ACCESS_FORMAT + " tunnel_bytes_in={bytes_in} tunnel_bytes_out={bytes_out}"

_ENCODER = json.JSONEncoder(separators=(",", ":"))

_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


def _escape(value: bytes) -> str:
    out = []
    for c in value:
        if c == 0x22:
            out.append('\\"')
        elif c == 0x5C:
            out.append("\\\\")
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\x%02X" % (c,))
    return "".join(out)


def _quote(value: bytes | None) -> str:
    if not value:
        return "-"
    if value.translate(None, _PLAIN):
        return _escape(value)
    return value.decode("ascii")


def renderLine(
    item: tuple[Any, ...],
) -> str:
    """
    The text line, with its newline, of what L{AccessLogger} keeps of a
    request: the same line as L{ACCESS_FORMAT} renders.
    """
    (client, stamp, method, uri, protocol, status, size, referer, agent,
     upstream, duration, rid, now) = item
    return (
        f'{client} - - [{stamp}] "{_quote(method)} {_quote(uri)} '
        f'{_quote(protocol)}" {status} {size} "{_quote(referer)}" '
        f'"{_quote(agent)}" upstream={upstream.name if upstream is not None else "-"} '
        f"duration={duration:.6f} request_id={rid.decode('ascii') if rid else '-'}\n"
    )


_isoCache: list[Any] = [-1, ""]


def isoTime(now: float) -> str:
    """
    C{now} in ISO 8601 with microseconds, UTC, as the JSON logs write it;
    the date and time of day are formatted once a second.
    """
    second = int(now)
    if second != _isoCache[0]:
        _isoCache[0] = second
        _isoCache[1] = datetime.fromtimestamp(second, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
    micro = min(int(round((now - second) * 1e6)), 999999)
    return f"{_isoCache[1]}.{micro:06d}+00:00"


def _jsonLine(now: float, line: str, fields: dict[str, object]) -> str:
    record: dict[str, object] = {
        "time": isoTime(now),
        "level": "info",
        "namespace": "revproxy.access",
        "text": line,
    }
    record.update(fields)
    return _ENCODER.encode(record) + "\n"


def renderJSON(item: tuple[Any, ...]) -> str:
    """
    The JSON line of what L{AccessLogger} keeps of a request: C{time},
    C{level}, C{namespace}, C{text} (the text line) and the named fields,
    as L{revproxy.ops.logs.eventAsJSONLine} writes an access event.
    """
    (client, stamp, method, uri, protocol, status, size, referer, agent,
     upstream, duration, rid, now) = item
    fields: dict[str, object] = {
        "client": client,
        "timestamp": stamp,
        "method": _quote(method),
        "uri": _quote(uri),
        "protocol": _quote(protocol),
        "status": status,
        "size": size,
        "referer": _quote(referer),
        "user_agent": _quote(agent),
        "upstream": str(upstream) if upstream is not None else "-",
        "duration": duration,
        "request_id": rid.decode("ascii") if rid else "-",
    }
    return _jsonLine(now, ACCESS_FORMAT.format_map(fields), fields)


class AccessLogger:
    """
    Logs each finished request: an L{revproxy.forward.reporting.AccessLog};
    its L{tunnelEnded} is a L{revproxy.forward.reporting.TunnelLog}.

    @param writer: where the lines go; L{None} to log events to C{logger}.
    @param asJSON: write JSON objects rather than text lines to C{writer}
        (whose C{render} must then be L{renderJSON}, else L{renderLine}).
    """

    def __init__(
        self,
        clock: IReactorTime,
        logger: Logger | None = None,
        writer: LineWriter | None = None,
        asJSON: bool = False,
    ) -> None:
        self._clock = clock
        self._log = logger if logger is not None else Logger(namespace="revproxy.access")
        self._writer = writer
        self._json = asJSON
        self._second = -1
        self._stamp = ""

    def _timestamp(self, seconds: float | None = None) -> str:
        now = int(self._clock.seconds() if seconds is None else seconds)
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
        writer = self._writer
        if writer is not None:
            # What the line needs, kept as it is: the writer formats its
            # lines in a batch (L{renderLine}, L{renderJSON}), off the
            # per-request path.
            headers = request.requestHeaders
            referer = headers.getRawHeaders(b"referer")
            agent = headers.getRawHeaders(b"user-agent")
            now = self._clock.seconds()
            writer.write((
                getattr(request.getClientAddress(), "host", "-"),
                self._timestamp(now),
                request.method,
                request.uri,
                request.clientproto,
                status,
                request.sentLength,
                referer[-1] if referer else None,
                agent[-1] if agent else None,
                upstream,
                duration,
                getattr(request, "requestId", None),
                now,
            ))
            return
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
        rid = getattr(request, "requestId", None)
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
            "request_id": rid.decode("ascii") if rid else "-",
        }

    def _emit(self, format: str, fields: dict[str, object]) -> None:
        """
        Log one line built from C{fields}: to the writer (as text, or as a
        JSON object with the keys of L{revproxy.ops.logs.eventAsJSONLine}:
        C{time}, C{level}, C{namespace}, C{text} and the fields), or as a
        log event.  The event's format is the line with its braces escaped,
        so that an observer renders it without twisted.logger's
        pure-Python formatter walking every field.
        """
        line = format.format_map(fields)
        writer = self._writer
        if writer is None:
            self._log.info(line.replace("{", "{{").replace("}", "}}"), **fields)
        elif not self._json:
            writer.write(line + "\n")
        else:
            writer.write(_jsonLine(self._clock.seconds(), line, fields))

def accessLoggerFor(
    options: Mapping[str, Any],
    reactor: IReactorTime,
    root: MultiService,
    reloaders: list[Reloader],
) -> AccessLogger | None:
    """
    The access logger the checked C{options} ask for (C{--access-log},
    C{--no-access-log}, C{--log-format}), its writer a service of C{root}
    reopened by one of C{reloaders}; L{None} for no access log.  Options
    without C{access-log} (a library's) log through twistd's logging.
    """
    off = options.get("no-access-log")
    destination = options.get("access-log", None if off else THROUGH_LOGGING)
    if destination is None:
        return None
    if destination == THROUGH_LOGGING:
        return AccessLogger(reactor)
    asJSON = options.get("log-format") == "json"
    writer = openLineWriter(reactor, destination, renderJSON if asJSON else renderLine)
    writer.setServiceParent(root)
    reloaders.append(writer.reopen)
    return AccessLogger(reactor, writer=writer, asJSON=asJSON)
