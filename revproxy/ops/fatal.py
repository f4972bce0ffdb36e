# -*- test-case-name: tests.ops.test_fatal -*-
"""
Ending the running proxy on an error it cannot serve through (an embedded
etcd that is not ours, or that keeps crashing): one line, a clean shutdown,
exit status 1.

twistd has no way to set the exit status of a process whose reactor
stopped; an C{atexit} handler, run once twistd has cleaned up (pid file
removed, logs flushed), makes it 1.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["exitOnError"]

log = Logger()


def exitOnError(
    reactor: Any,
    register: Callable[[Callable[[], None]], Any] = atexit.register,
    exit: Callable[[int], Any] = os._exit,
) -> Callable[[str], None]:
    """
    What ends the running proxy on an error it cannot serve through: log
    the message (one line), stop the reactor (a clean shutdown: the drain,
    the embedded etcd waited for) and make the process exit 1.  Only the
    first call counts.
    """
    called: list[str] = []

    def exit1() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        exit(1)

    def fatal(message: str) -> None:
        if called:
            return
        called.append(message)
        log.critical("{error}", error=message)
        register(exit1)
        try:
            reactor.stop()
        except Exception:  # not running (yet, or any more)
            reactor.callWhenRunning(reactor.stop)

    return fatal
