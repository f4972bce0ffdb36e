# -*- test-case-name: tests.forward.test_options -*-
"""
The options of the forwarding path: upstream health, retries and balancing (C{--max-fails},
C{--health-path}, C{--retries}, C{--hash-key}, ...): declared and checked
here, composed into C{twistd revproxy}'s options by L{revproxy.tap}.
"""

from __future__ import annotations

from twisted.python import usage

from revproxy.config import parsePositiveCount
from revproxy.options import optionCount, optionSeconds, optionSecondsOrZero, optionValue
from revproxy.forward.hashkey import parseHashKey

__all__ = [
    "HEALTH_FLAGS",
    "HEALTH_PARAMETERS",
    "checkHealthOptions",
]

HEALTH_FLAGS = [
    ["fail-on-5xx", None, "Count a 502, 503 or 504 from an upstream as its failure."],
    ["health-start-down", None, "With --health-path: a new upstream gets no traffic until its first passed check."],
]

HEALTH_PARAMETERS = [
    ["max-fails", None, "3", "Failures within --fail-window that eject an upstream (0: never eject)."],
    ["fail-window", None, "10", "Seconds within which --max-fails failures eject an upstream."],
    ["eject-time", None, "10", "Seconds an upstream stays ejected, doubling per consecutive ejection up to 300."],
    ["max-ejected-percent", None, "50", "Most of a host's upstreams, in percent, ejected at once."],
    ["health-path", None, None, "Check every upstream with GET PATH (active health checks)."],
    ["health-interval", None, "5", "Seconds between active checks of an upstream (with jitter)."],
    ["health-timeout", None, "2", "Seconds an active check may take."],
    ["health-rise", None, "2", "Passed checks in a row that mark a down upstream up."],
    ["health-fall", None, "3", "Failed checks in a row that mark an up upstream down."],
    ["retries", None, "2", "Times a failed request may be tried again on another upstream."],
    ["retry-buffer", None, "65536", "Largest request body, in bytes, that may be sent again."],
    ["retry-window", None, "0", "Seconds a request may wait for an upstream of its host to come back (0: off)."],
    ["hash-key", None, "client-ip", "Key of --balance hash: client-ip, header:NAME or cookie:NAME."],
]

def checkHealthOptions(options: usage.Options) -> None:
    """
    Check the options of passive and active health, retries and the hash
    key.
    """
    for name in ("fail-window", "eject-time", "health-interval", "health-timeout"):
        options[name] = optionSeconds(f"--{name}", options[name])
    options["retry-window"] = optionSecondsOrZero("--retry-window", options["retry-window"])
    for name in ("max-fails", "retries", "retry-buffer"):
        options[name] = optionCount(f"--{name}", options[name])
    for name in ("health-rise", "health-fall"):
        options[name] = optionValue(f"--{name}", parsePositiveCount, options[name])
    percent = options["max-ejected-percent"]
    try:
        value = float(percent)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise usage.UsageError(
            f"--max-ejected-percent: {percent!r} is not a percentage from 0 to 100"
        )
    options["max-ejected-percent"] = value
    path = options["health-path"]
    if path is not None and (
        not path.startswith("/") or any(c <= " " or c > "~" for c in path)
    ):
        raise usage.UsageError(
            f"--health-path: {path!r} is not an absolute, percent-encoded path"
        )
    try:
        options["hash-key-function"] = parseHashKey(options["hash-key"])
    except ValueError as e:
        raise usage.UsageError(f"--hash-key: {e}") from None
