# -*- test-case-name: tests.ops.test_logs -*-
"""
Log formats: twistd's human-readable text (the default), or one JSON
object per line for log shippers (C{--log-format json}).

A JSON line holds C{time} (ISO 8601, UTC), C{level}, C{namespace} and
C{text} (the event rendered as the text log would show it), then every
named field of the event, so the access log's C{client}, C{method}, C{uri},
C{status}, C{size}, C{upstream}, C{duration}... are keys of their own::

    {"time":"2026-11-24T08:20:03.120114+00:00","level":"info",
     "namespace":"revproxy.access","text":"127.0.0.1 - - [...] ...",
     "client":"127.0.0.1","method":"GET","uri":"/a?q=1","status":200,...}

(one line in the output).  Values JSON cannot hold are written as text; an
event carrying a failure gets its C{traceback}.

twistd starts logging before the plugin's service runs, and
C{makeService} cannot reach the observer it installs (twistd builds its
logger from its own options before calling C{makeService}).  So
L{JSONLogging}, the first service of the tree, swaps observers when the
service starts: it adds the JSON observer and removes the observers that
were there (twistd's).  Everything logged from then on, including the drain
on shutdown and twistd's last line, is JSON; only twistd's own two start-up
lines (C{twistd ... starting up}, C{reactor class: ...}) come before it, as
text.  C{twistd --logger revproxy.ops.logs.jsonObserver} makes those JSON too.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.application.service import Service
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LoggingFile,
    LogPublisher,
    formatEvent,
    globalLogPublisher,
)

from revproxy._compat import publisherObservers

__all__ = [
    "LOG_FORMATS",
    "JSONLogging",
    "eventAsJSONLine",
    "jsonFileObserver",
    "jsonObserver",
    "realStdout",
]

LOG_FORMATS = ("text", "json")
"""The values of C{--log-format}; the first is the default."""

_OWN_KEYS = ("time", "level", "namespace", "text")

_LEGACY_KEYS = frozenset(
    # What twisted.python.log adds to its events: each is either in "text"
    # ("message", "format", "why", "failure") or in our own keys.
    ("message", "format", "why", "failure", "isError", "time")
)


def _jsonable(value: object) -> object:
    """
    A value JSON can hold for one it cannot: text for bytes and objects,
    a list for sets.
    """
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _isoTime(when: object) -> str | None:
    if not isinstance(when, (int, float)):
        return None
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="microseconds")


def eventAsJSONLine(event: LogEvent) -> str:
    """
    One JSON object ending in a newline, with no other newline: the event's
    time, level, namespace, rendered text and named fields.  Never raises:
    an event whose fields cannot be written keeps its own keys and the
    rendered text, with C{"unserializable": true}.
    """
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _isoTime(event.get("log_time")),
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    own = dict(record)
    for key, value in event.items():
        if (
            isinstance(key, str)
            and not key.startswith("log_")
            and key not in _LEGACY_KEYS
            and key not in record
        ):
            record[key] = value
    try:
        return json.dumps(record, default=_jsonable, separators=(",", ":")) + "\n"
    except Exception:  # a circular value, a __str__ that raises...
        own["unserializable"] = True
        return json.dumps(own, default=repr, separators=(",", ":")) + "\n"


def jsonFileObserver(outFile: IO[Any]) -> ILogObserver:
    """
    An observer writing each event to C{outFile} as one JSON line
    (L{eventAsJSONLine}), flushed at once.
    """
    return FileLogObserver(outFile, eventAsJSONLine)


def jsonObserver() -> ILogObserver:
    """
    JSON lines on standard output, for C{twistd --logger
    revproxy.ops.logs.jsonObserver} (twistd calls it before it redirects
    standard output into the log).
    """
    return jsonFileObserver(sys.stdout)


def realStdout() -> IO[Any]:
    """
    Standard output, even once twistd has replaced C{sys.stdout} with a
    file that logs what is written to it (writing the log there would loop).
    """
    out: IO[Any] | None = sys.stdout
    if out is None or isinstance(out, LoggingFile):
        out = sys.__stdout__
    if out is None:
        raise RuntimeError("--log-format json: the process has no standard output")
    return out


class JSONLogging(Service):
    """
    Makes the process log JSON lines: when started, it adds a JSON observer
    to the log publisher and removes the observers it found there (twistd's
    text observer).  Build it before twistd starts logging (in
    C{makeService}) and make it the first service of the tree, so that all
    the service tree logs is JSON.

    It leaves its observer in place when stopped, so the shutdown (the
    drain, twistd's C{Server Shut Down.}) is logged as JSON too.

    @ivar observer: the JSON observer.
    """

    name = "log-format"

    def __init__(
        self, outFile: IO[Any] | None = None, publisher: LogPublisher | None = None
    ) -> None:
        self.observer = jsonFileObserver(outFile if outFile is not None else realStdout())
        self._publisher = publisher if publisher is not None else globalLogPublisher
        self._installed = False

    def _install(self) -> None:
        if self._installed:
            return
        self._installed = True
        replaced = [
            o for o in publisherObservers(self._publisher) if o is not self.observer
        ]
        self._publisher.addObserver(self.observer)
        for observer in replaced:
            self._publisher.removeObserver(observer)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        super().startService()
        self._install()
