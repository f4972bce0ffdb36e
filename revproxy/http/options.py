# -*- test-case-name: tests.http.test_options -*-
"""
The options of the client side: the limits and deadlines of client
connections (C{--max-header-size}, C{--header-timeout}, ...), declared and
checked here, composed into C{twistd revproxy}'s options by L{revproxy.tap}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from revproxy.config import parsePositiveCount
from revproxy.options import optionCount, optionSeconds, optionValue
from revproxy.http.channel import ServerLimits
from revproxy.http.parser import HeadLimits

__all__ = ["SERVER_PARAMETERS", "checkServerOptions", "serverLimits"]

SERVER_PARAMETERS = [
    ["max-header-size", None, "16384", "Largest request head (request line and headers), in bytes; past it, 431."],
    ["max-headers", None, "100", "Most header fields in a request; past it, 431."],
    ["max-uri-size", None, "8192", "Longest request target, in bytes; past it, 414."],
    ["max-body-size", None, "0", "Largest request body, in bytes, checked as it arrives (0: no limit); past it, 413."],
    ["header-timeout", None, "10", "Seconds for a whole request head to arrive, from its first byte; then 408."],
    ["body-timeout", None, "60", "Longest gap, in seconds, between request body bytes; then 408."],
    ["max-connections", None, "10000", "Most open client connections; past it, new ones are closed at once."],
]

_POSITIVE = ("max-header-size", "max-headers", "max-uri-size", "max-connections")


def checkServerOptions(options: usage.Options) -> None:
    """
    Check and convert the client-side limits and deadlines.
    """
    for name in _POSITIVE:
        options[name] = optionValue(f"--{name}", parsePositiveCount, str(options[name]))
    options["max-body-size"] = optionCount("--max-body-size", str(options["max-body-size"]))
    for name in ("header-timeout", "body-timeout"):
        options[name] = optionSeconds(f"--{name}", str(options[name]))


def serverLimits(options: Mapping[str, Any]) -> ServerLimits:
    """
    The L{ServerLimits} that checked C{options} ask for (defaults for the
    ones they lack).
    """
    default = ServerLimits()
    head = default.head
    return ServerLimits(
        head=HeadLimits(
            maxHeaderSize=options.get("max-header-size", head.maxHeaderSize),
            maxHeaders=options.get("max-headers", head.maxHeaders),
            maxUriSize=options.get("max-uri-size", head.maxUriSize),
        ),
        maxBodySize=options.get("max-body-size", default.maxBodySize),
        headerTimeout=options.get("header-timeout", default.headerTimeout),
        bodyTimeout=options.get("body-timeout", default.bodyTimeout),
        maxConnections=options.get("max-connections", default.maxConnections),
        replayBuffer=options.get("retry-buffer", default.replayBuffer),
    )
