"""
Tests for L{revproxy.ops.logs}: the JSON line format, the service that switches
the process to it, and C{--log-format}.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    ILogObserver,
    Logger,
    LoggingFile,
    LogLevel,
    LogPublisher,
)
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from revproxy.ops.accesslog import AccessLogger
from revproxy.ops.logs import (
    JSONLogging,
    eventAsJSONLine,
    jsonFileObserver,
    jsonObserver,
)
from revproxy.routing import Upstream
from revproxy.tap import Options, makeService


def _event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "log_time": 1795510815.25,
        "log_level": LogLevel.info,
        "log_namespace": "revproxy.test",
        "log_format": "route {host} -> {upstream}",
        "log_logger": Logger(),
        "log_source": None,
    }
    event.update(fields)
    return event


def _line(event: dict[str, Any]) -> dict[str, Any]:
    text = eventAsJSONLine(event)
    assert text.endswith("\n") and "\n" not in text[:-1], text
    decoded: dict[str, Any] = json.loads(text)
    return decoded


class EventAsJSONLineTests(SynchronousTestCase):
    def test_ownKeys(self) -> None:
        """
        A line holds the time in ISO 8601 UTC, the level's name, the namespace
        and the rendered text.
        """
        record = _line(_event(host="a.com", upstream="h:1"))
        self.assertEqual(record["time"], "2026-11-24T09:00:15.250000+00:00")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "revproxy.test")
        self.assertEqual(record["text"], "route a.com -> h:1")

    def test_fields(self) -> None:
        """
        Named fields become keys of their own; twisted's log_* keys do not.
        """
        record = _line(_event(host="a.com", upstream="h:1", count=3, ratio=0.5))
        self.assertEqual(
            {k: record[k] for k in ("host", "upstream", "count", "ratio")},
            {"host": "a.com", "upstream": "h:1", "count": 3, "ratio": 0.5},
        )
        self.assertEqual([k for k in record if k.startswith("log_")], [])

    def test_oneLine(self) -> None:
        """
        Newlines in the text or the fields are escaped: one event, one line.
        """
        record = _line(_event(log_format="a\nb {x}", x="c\r\nd"))
        self.assertEqual(record["text"], "a\nb c\r\nd")
        self.assertEqual(record["x"], "c\r\nd")

    def test_notJSONValues(self) -> None:
        """
        Bytes are decoded as latin-1, sets become lists and other objects
        their text.
        """
        record = _line(
            _event(raw=b"caf\xe9", hosts={"b", "a"}, upstream=Upstream("http", "h", 1))
        )
        self.assertEqual(record["raw"], "caf\xe9")
        self.assertEqual(record["hosts"], ["a", "b"])
        self.assertEqual(record["upstream"], str(Upstream("http", "h", 1)))

    def test_ownKeysWin(self) -> None:
        """
        A field named like one of the line's own keys does not replace it.
        """
        record = _line(_event(log_format="x", text="field", level="field"))
        self.assertEqual((record["text"], record["level"]), ("x", "info"))

    def test_failure(self) -> None:
        """
        An event with a failure gets its traceback.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        record = _line(_event(log_format="oops", log_failure=failure))
        self.assertIn("ZeroDivisionError", record["traceback"])
        self.assertEqual(record["text"], "oops")

    def test_legacyEvent(self) -> None:
        """
        An event from twisted.python.log keeps its text and system, not the
        legacy keys the text already holds.
        """
        record = _line(
            {
                "message": ("ProxySite starting on 3000",),
                "system": "-",
                "time": 1.0,
                "isError": 0,
                "log_text": "ProxySite starting on 3000",
                "log_format": "{log_text}",
                "log_time": 1.0,
                "log_level": LogLevel.info,
                "log_namespace": "log_legacy",
            }
        )
        self.assertEqual(
            record,
            {
                "time": "1970-01-01T00:00:01.000000+00:00",
                "level": "info",
                "namespace": "log_legacy",
                "text": "ProxySite starting on 3000",
                "system": "-",
            },
        )

    def test_unserializable(self) -> None:
        """
        An event whose fields cannot be written still gives a line, with its
        own keys.
        """
        loop: list[object] = []
        loop.append(loop)
        record = _line(_event(log_format="x", loop=loop))
        self.assertEqual(record["text"], "x")
        self.assertIs(record["unserializable"], True)
        self.assertNotIn("loop", record)

    def test_bareEvent(self) -> None:
        """
        An event without time, level or namespace still gives a line.
        """
        record = _line({"log_format": "hello"})
        self.assertEqual(record["text"], "hello")
        self.assertIsNone(record["time"])

    def test_accessLog(self) -> None:
        """
        An access log event carries client, method, uri, status, size,
        upstream and duration as fields, and the combined log line as text.
        """
        events: list[dict[str, Any]] = []
        publisher = LogPublisher(events.append)
        clock = MemoryReactorClock()
        log = AccessLogger(clock, Logger(namespace="revproxy.access", observer=publisher))
        request = DummyRequest([b"a"])
        request.uri = b"/a?q=1"
        request.sentLength = 61
        log(request, 200, Upstream("http", "127.0.0.1", 4000), 0.25)
        record = _line(events[0])
        self.assertEqual(
            {k: record[k] for k in ("client", "method", "uri", "status", "size",
                                    "upstream", "duration")},
            {
                "client": "-",
                "method": "GET",
                "uri": "/a?q=1",
                "status": 200,
                "size": 61,
                "upstream": "127.0.0.1:4000",
                "duration": 0.25,
            },
        )
        self.assertIn('"GET /a?q=1 HTTP/1.0" 200 61', record["text"])
        self.assertEqual(record["namespace"], "revproxy.access")


class ObserverTests(SynchronousTestCase):
    def test_jsonFileObserver(self) -> None:
        """
        The observer writes one JSON line per event to its file.
        """
        out = io.StringIO()
        observer = jsonFileObserver(out)
        self.assertTrue(ILogObserver.providedBy(observer))
        observer(_event(log_format="one"))
        observer(_event(log_format="two"))
        lines = out.getvalue().splitlines()
        self.assertEqual([json.loads(line)["text"] for line in lines], ["one", "two"])

    def test_jsonObserver(self) -> None:
        """
        The factory for twistd --logger writes to standard output.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        jsonObserver()(_event(log_format="hi"))
        self.assertEqual(json.loads(out.getvalue())["text"], "hi")


class JSONLoggingTests(SynchronousTestCase):
    def test_replacesObservers(self) -> None:
        """
        Once started, the service's JSON observer is the publisher's only
        observer: what was there before (twistd's) is removed.
        """
        before: list[dict[str, Any]] = []
        publisher = LogPublisher(before.append)
        out = io.StringIO()
        service = JSONLogging(out, publisher)
        service.privilegedStartService()
        Logger(observer=publisher).info("hello {who}", who="you")
        self.assertEqual(before, [])
        record = json.loads(out.getvalue())
        self.assertEqual((record["text"], record["who"]), ("hello you", "you"))

    def test_startOnce(self) -> None:
        """
        startService after privilegedStartService does not add the observer
        twice, nor remove it; startService alone installs it too.
        """
        for privileged in (True, False):
            publisher = LogPublisher()
            out = io.StringIO()
            service = JSONLogging(out, publisher)
            if privileged:
                service.privilegedStartService()
            service.startService()
            Logger(observer=publisher).info("once")
            self.assertEqual(len(out.getvalue().splitlines()), 1)

    def test_keptWhenStopped(self) -> None:
        """
        Stopping the service leaves the JSON observer in place, so that the
        shutdown is logged as JSON too.
        """
        publisher = LogPublisher()
        out = io.StringIO()
        service = JSONLogging(out, publisher)
        service.startService()
        service.stopService()
        Logger(observer=publisher).info("Server Shut Down.")
        self.assertEqual(json.loads(out.getvalue())["text"], "Server Shut Down.")

    def test_notIntoTheLog(self) -> None:
        """
        When sys.stdout already feeds the log (twistd redirected it), the
        service writes to the process's real standard output instead.
        """
        real = io.StringIO()
        self.patch(sys, "__stdout__", real)
        self.patch(sys, "stdout", LoggingFile(Logger(observer=LogPublisher())))
        publisher = LogPublisher()
        JSONLogging(publisher=publisher).startService()
        Logger(observer=publisher).info("here")
        self.assertEqual(json.loads(real.getvalue())["text"], "here")


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class LogFormatOptionTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        The log format is text unless --log-format says otherwise.
        """
        self.assertEqual(_parse("--route", "a=h:1")["log-format"], "text")
        self.assertEqual(
            _parse("--route", "a=h:1", "--log-format", "json")["log-format"], "json"
        )

    def test_bad(self) -> None:
        """
        An unknown format is a UsageError naming --log-format and the choices.
        """
        with self.assertRaises(UsageError) as cm:
            _parse("--route", "a=h:1", "--log-format", "yaml")
        self.assertIn("--log-format", str(cm.exception))
        self.assertIn("'yaml'", str(cm.exception))
        self.assertIn("text, json", str(cm.exception))

    def test_tree(self) -> None:
        """
        With --log-format json the first service of the tree is JSONLogging;
        with text there is none.
        """
        reactor = MemoryReactorClock()
        root = makeService(_parse("--route", "a=h:1", "--log-format", "json"), reactor)
        self.assertIsInstance(list(root)[0], JSONLogging)  # type: ignore[call-overload]
        root = makeService(_parse("--route", "a=h:1"), reactor)
        self.assertFalse(
            [s for s in root if isinstance(s, JSONLogging)]  # type: ignore[attr-defined]
        )
