"""
Tests for L{revproxy.ops.logwriter}: the buffered line writer, standard
output shared with twistd's observer, and where C{--access-log} sends the
access log.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops import logwriter
from revproxy.ops.logwriter import (
    THROUGH_LOGGING,
    LineWriter,
    StandardOutput,
    accessLogDestination,
    openLineWriter,
)
from revproxy.tap import Options
from tests.ops.tempdirs import temporary


class _File(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


class LineWriterTests(SynchronousTestCase):
    def _writer(self, **kw: Any) -> tuple[LineWriter, Clock, _File]:
        clock = Clock()
        out = _File()
        writer = LineWriter(clock, lambda: out, "f", **kw)
        writer.startService()
        return writer, clock, out

    def test_byTime(self) -> None:
        """
        Lines are held until a second after the first, then written in one
        write; no timer is left.
        """
        writer, clock, out = self._writer()
        writer.write("a\n")
        clock.advance(0.5)
        writer.write("b\n")
        self.assertEqual(out.getvalue(), b"")
        clock.advance(0.5)
        self.assertEqual((out.getvalue(), out.writes), (b"a\nb\n", 1))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_bySize(self) -> None:
        """
        Lines are written as soon as the size is reached, and the timer is
        cancelled.
        """
        writer, clock, out = self._writer(flushSize=10)
        writer.write("12345\n")
        writer.write("67890\n")
        self.assertEqual(out.getvalue(), b"12345\n67890\n")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_onStop(self) -> None:
        """
        Stopping writes what is held; afterwards lines are written at once.
        """
        writer, clock, out = self._writer()
        writer.write("a\n")
        writer.stopService()
        self.assertEqual(out.getvalue(), b"a\n")
        writer.write("b\n")
        self.assertEqual(out.getvalue(), b"a\nb\n")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failureLoggedOnce(self) -> None:
        """
        A failing write drops the lines and is logged once until writing
        works again.
        """
        events: list[dict[str, Any]] = []
        self.patch(logwriter, "log", Logger(observer=LogPublisher(events.append)))

        class Full:
            fail = True

            def write(self, data: bytes) -> None:
                if self.fail:
                    raise OSError(28, "No space left on device")

            def flush(self) -> None:
                pass

        full = Full()
        writer = LineWriter(Clock(), lambda: full, "/var/log/x")
        for _ in range(3):
            writer.write("a\n")
            writer.flush()
        self.assertEqual(len(events), 1)
        self.assertIn("No space left", events[0]["error"])
        full.fail = False
        writer.write("a\n")
        writer.flush()
        full.fail = True
        writer.write("a\n")
        writer.flush()
        self.assertEqual(len(events), 2)

    def test_rendered(self) -> None:
        """
        Items other than lines are rendered when written, in order with
        the lines, each counted as an access line's size.
        """
        writer, clock, out = self._writer(render=lambda x: f"item {x}\n", flushSize=1000)
        writer.write(("a", 1))
        writer.write("line\n")
        writer.write(7)
        self.assertEqual(out.getvalue(), b"")
        writer.flush()
        self.assertEqual(out.getvalue(), b"item ('a', 1)\nline\nitem 7\n")
        for i in range(5):
            writer.write(i)
        self.assertEqual(out.getvalue().count(b"\n"), 3 + 5)

    def test_reopen(self) -> None:
        """
        Reopening writes what is held to the old file, then appends to the
        path anew (after logrotate moved the old one).
        """
        path = Path(temporary(self))
        writer = openLineWriter(Clock(), str(path))
        writer.startService()
        writer.write("one\n")
        path.rename(str(path) + ".1")
        self.assertEqual(writer.reopen(), f"reopened access log {path}")
        writer.write("two\n")
        writer.stopService()
        self.assertEqual(Path(str(path) + ".1").read_text(), "one\n")
        self.assertEqual(path.read_text(), "two\n")

    def test_standardOutput(self) -> None:
        """
        Standard output flushes the text layer (where twistd's observer
        writes) before writing bytes, so lines never interleave.
        """
        raw = io.BytesIO()
        text = io.TextIOWrapper(raw, encoding="utf-8", write_through=False)
        out = StandardOutput(text)
        writer = LineWriter(Clock(), lambda: out, "-")
        writer.write("access 1\n")
        text.write("twistd line\n")  # not flushed by its writer
        writer.flush()
        self.assertEqual(raw.getvalue(), b"twistd line\naccess 1\n")
        self.assertEqual(writer.reopen(), "")


def _options(*argv: str, parent: dict[str, Any] | None = None) -> Options:
    options = Options()
    if parent is not None:
        options.parent = parent  # type: ignore[attr-defined]
    options.parseOptions(["--route", "a=h:1", *argv])
    return options


TWISTD_N = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}


class DestinationTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        By default the access log goes to standard output when twistd logs
        there (-n, -n -l -, or JSON logs), else through twistd's logging
        (--logfile FILE, --syslog, a daemon).
        """
        self.assertEqual(_options(parent=TWISTD_N)["access-log"], "-")
        self.assertEqual(_options(parent={**TWISTD_N, "logfile": "-"})["access-log"], "-")
        self.assertEqual(_options()["access-log"], "-")
        for twistd in ({**TWISTD_N, "logfile": "/var/log/r.log"},
                       {**TWISTD_N, "syslog": True},
                       {**TWISTD_N, "nodaemon": False}):
            self.assertEqual(_options(parent=twistd)["access-log"], THROUGH_LOGGING)
        self.assertEqual(
            _options("--log-format", "json", parent={**TWISTD_N, "syslog": True})["access-log"],
            "-",
        )

    def test_given(self) -> None:
        """
        --access-log - is standard output; a FILE is made absolute;
        --no-access-log is nowhere.
        """
        self.assertEqual(_options("--access-log", "-")["access-log"], "-")
        path = Path(temporary(self)).absolute()
        self.assertEqual(_options("--access-log", str(path))["access-log"], str(path))
        self.assertIsNone(_options("--no-access-log")["access-log"])

    def test_bad(self) -> None:
        """
        A file that cannot be opened, or both options, are one-line errors.
        """
        with self.assertRaises(UsageError) as cm:
            _options("--access-log", "/nonexistent/dir/access.log")
        self.assertIn("--access-log: cannot open '/nonexistent/dir/access.log'", str(cm.exception))
        with self.assertRaises(UsageError) as cm:
            _options("--access-log", "-", "--no-access-log")
        self.assertIn("cannot be combined", str(cm.exception))
        self.assertEqual(accessLogDestination({"no-access-log": True}), None)  # type: ignore[arg-type]
