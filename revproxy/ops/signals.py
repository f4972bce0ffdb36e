# -*- test-case-name: tests.ops.test_signals -*-
"""
C{SIGHUP}: reload what can be reloaded, never stop.

Twisted's reactor handles C{SIGINT} and C{SIGTERM} (the drain) but not
C{SIGHUP}, whose default action kills the process at once: closing the
terminal of a foreground C{twistd -n} sends it, and nginx's users send it to
mean "reload".  L{HangupService} installs a handler while it runs (and puts
the previous one back when it stops).  The handler only schedules the
reload on the reactor; the reload calls each reloader (the routes file, a
re-list from etcd, reopening C{--logfile}) and logs one line saying what
was done.  Connections are not touched: every one keeps being served.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["HangupService", "Reloader", "reopenLogFiles"]

log = Logger()

#: Reloads one thing and says what it did, in a few words (or nothing, if
#: there was nothing to do).
Reloader = Callable[[], str]


class HangupService(Service):
    """
    Reloads on C{SIGHUP} while running.

    @ivar reloads: how many C{SIGHUP}s were handled.
    """

    name = "sighup"

    def __init__(
        self,
        reactor: Any,
        reloaders: Sequence[Reloader],
        installSignal: Callable[[int, Any], Any] = signal.signal,
    ) -> None:
        self._reactor = reactor
        self.reloaders = list(reloaders)
        self._installSignal = installSignal
        self._previous: Any = None
        self.reloads = 0

    def startService(self) -> None:
        super().startService()
        self._previous = self._installSignal(signal.SIGHUP, self._received)

    def stopService(self) -> None:
        super().stopService()
        previous, self._previous = self._previous, None
        self._installSignal(
            signal.SIGHUP, signal.SIG_DFL if previous is None else previous
        )

    def _received(self, signum: int, frame: object) -> None:
        # In a signal handler: only hand the work to the reactor.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Call every reloader and log one line with what they did; a reloader
        that fails is logged and the others still run.
        """
        self.reloads += 1
        done: list[str] = []
        for reloader in self.reloaders:
            try:
                what = reloader()
                if what:  # a reloader with nothing to do says nothing
                    done.append(what)
            except Exception:
                log.failure("SIGHUP: a reload failed")
                done.append("a reload failed (logged above)")
        log.info(
            "SIGHUP: {done}; still serving every connection",
            done="; ".join(done) if done else "nothing to reload",
        )


def reopenLogFiles(files: Callable[[], Sequence[Any]]) -> Reloader:
    """
    A reloader that reopens the log files C{files()} returns (twistd's
    C{--logfile}, after an external rotation).
    """

    def reopen() -> str:
        reopened = []
        for logFile in files():
            logFile.reopen()
            reopened.append(str(getattr(logFile, "path", logFile)))
        if not reopened:
            return ""
        return f"reopened log file {', '.join(reopened)}"

    return reopen
