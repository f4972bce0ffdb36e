# -*- test-case-name: tests.ops.test_logwriter -*-
"""
Where the access log goes (C{--access-log FILE|-}), and the buffered writer
that puts it there.

Going through C{twisted.logger} costs an event, a publish, twistd's classic
text formatting and a flushed write for every request: about 75 us of a
request's CPU on this machine (C{bench/accesslog.py}), as much as the rest
of the request.  So by default the access log bypasses it: each request's
fields go to a L{LineWriter}, which formats them into lines in a batch and
writes them in one system call when it holds about 64 KiB, one second
after its first line (on the reactor's clock), on C{SIGHUP} (before
reopening its file) and when the service stops; a line written after that
goes out at once.  That adds 8 to 12 us to a request.

The destinations:

 - C{-}: the process's standard output, the one twistd's own observer
   writes to under C{twistd -n} (not the C{sys.stdout} twistd replaces with
   a file that logs).  The writer flushes that file's text layer before
   writing, and both write whole lines from the reactor thread, so their
   lines never interleave mid-line; an access line may come up to a
   second after a log line written later.
 - C{FILE}: appended to, and reopened on C{SIGHUP} (for logrotate).
 - the default: standard output when twistd logs there (C{twistd -n}
   without C{--logfile} or with C{--logfile -}, or C{--log-format json},
   which logs to standard output); otherwise (C{--logfile FILE},
   C{--syslog}, a daemon) through twistd's logging as before, one log
   event per request, at the old cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from revproxy.ops.logs import realStdout

__all__ = [
    "THROUGH_LOGGING",
    "LineWriter",
    "StandardOutput",
    "accessLogDestination",
    "openLineWriter",
]

log = Logger()

THROUGH_LOGGING = "twistd"
"""The destination that sends the access log through twistd's logging."""

FLUSH_SIZE = 64 * 1024
FLUSH_DELAY = 1.0
ITEM_SIZE = 200
"""The characters an item to render is counted as, about an access line."""


class StandardOutput:
    """
    The process's real standard output as a binary file, shared with
    twistd's text observer: its text layer (where that observer writes) is
    flushed before each write.
    """

    def __init__(self, text: IO[Any] | None = None) -> None:
        self._text = text if text is not None else realStdout()
        self._binary: Any = getattr(self._text, "buffer", None)

    def write(self, data: bytes) -> None:
        text = self._text
        text.flush()
        binary = self._binary
        if binary is None:  # a text-only stream (in tests)
            text.write(data.decode("utf-8"))
        else:
            binary.write(data)

    def flush(self) -> None:
        target = self._binary if self._binary is not None else self._text
        target.flush()

    def close(self) -> None:
        """
        Nothing: standard output stays open.
        """


class LineWriter(Service):
    """
    Lines to a file, buffered: rendered (see L{write}) and written in one
    go when C{flushSize} characters are held, C{flushDelay} seconds after the first line held,
    on L{reopen} and when the service stops; once stopped, at once.

    @ivar path: the file, or C{"-"} for standard output.
    """

    name = "access-log"

    def __init__(
        self,
        clock: IReactorTime,
        opener: Callable[[], Any],
        path: str,
        flushSize: int = FLUSH_SIZE,
        flushDelay: float = FLUSH_DELAY,
        render: Callable[[Any], str] | None = None,
    ) -> None:
        self._clock = clock
        self._opener = opener
        self.path = path
        self.flushSize = flushSize
        self.flushDelay = flushDelay
        self._out = opener()
        self.render = render
        self._lines: list[Any] = []
        self._size = 0
        self._timer: IDelayedCall | None = None
        self._lastError = ""
        self._stopped = False

    def write(self, line: Any) -> None:
        """
        Hold C{line} for the next flush: a line ending with a newline, or
        anything else that L{render} makes into one when the lines are
        written (so that the work of formatting is done in a batch, off
        the per-request path; counted as L{ITEM_SIZE} characters).
        """
        self._lines.append(line)
        self._size += len(line) if line.__class__ is str else ITEM_SIZE
        if self._size >= self.flushSize or self._stopped:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self.flushDelay, self._timedFlush)

    def _timedFlush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """
        Write every line held.  A failed write (a full disk, a closed pipe)
        drops them and is logged once until writing works again.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        self._size = 0
        render = self.render
        try:
            if render is not None:
                lines = [x if x.__class__ is str else render(x) for x in lines]
            data = "".join(lines).encode("utf-8")
            self._out.write(data)
            self._out.flush()
        except Exception as e:  # OSError, ValueError on a closed file...
            error = f"{type(e).__name__}: {e}"
            if error != self._lastError:
                self._lastError = error
                log.error(
                    "access log: cannot write to {path}: {error}",
                    path=self.path,
                    error=error,
                )
        else:
            self._lastError = ""

    def reopen(self) -> str:
        """
        Flush, then reopen the file (after logrotate moved it), for
        C{SIGHUP}; say what was done.
        """
        self.flush()
        if self.path == "-":
            return ""
        old = self._out
        self._out = self._opener()
        old.close()
        return f"reopened access log {self.path}"

    def startService(self) -> None:
        super().startService()
        self._stopped = False

    def stopService(self) -> None:
        super().stopService()
        self._stopped = True
        self.flush()


def openLineWriter(
    clock: IReactorTime, destination: str, render: Callable[[Any], str] | None = None
) -> LineWriter:
    """
    A L{LineWriter} to C{destination} (C{"-"} for standard output, else the
    path of a file to append to), its items rendered by C{render}.
    """
    if destination == "-":
        out = StandardOutput()
        return LineWriter(clock, lambda: out, "-", render=render)
    return LineWriter(
        clock, lambda: open(destination, "ab"), destination, render=render  # noqa: SIM115
    )


def _twistdLogsToStdout(parent: Any) -> bool:
    """
    Whether the twistd whose options are C{parent} logs to standard output.
    """
    logfile = parent.get("logfile")
    return (
        bool(parent.get("nodaemon"))
        and logfile in (None, "", "-")
        and not parent.get("syslog")
        and parent.get("logger") is None
    )


def accessLogDestination(options: usage.Options) -> str | None:
    """
    Check C{--access-log} and C{--no-access-log}: where the access log
    goes, C{"-"}, an absolute path, L{THROUGH_LOGGING}, or L{None} for
    nowhere.

    @raise usage.UsageError: for both options at once, or a file that
        cannot be opened for appending.
    """
    given = options.get("access-log")
    if options.get("no-access-log"):
        if given is not None:
            raise usage.UsageError("--access-log cannot be combined with --no-access-log")
        return None
    if given == "-":
        return "-"
    if given is not None:
        path = Path(given).absolute()
        try:
            with open(path, "ab"):
                pass
        except OSError as e:
            raise usage.UsageError(
                f"--access-log: cannot open {str(path)!r} for appending: "
                f"{e.strerror or e}"
            ) from None
        return os.fspath(path)
    parent = getattr(options, "parent", None)
    if parent is None or options.get("log-format") == "json" or _twistdLogsToStdout(parent):
        return "-"
    return THROUGH_LOGGING
