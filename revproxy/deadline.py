# -*- test-case-name: tests.test_deadline -*-
"""
A deadline that moves often, kept by one timer.

A connection's deadlines move with every request (the client's header,
body and idle deadlines; an upstream connection's response deadline).  A
Twisted C{DelayedCall} per deadline costs an allocation, a heap insertion
and a cancellation each time; here moving a deadline later costs an
assignment, and the one timer, when it fires before the deadline, sleeps
again until it (as nginx keeps one timer per connection event).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Deadline"]

NEVER = float("inf")


class Deadline:
    """
    A deadline: C{expired} is called once it has passed, unless it was moved
    or cancelled first.

    @ivar at: when the deadline is, in the clock's seconds (C{inf} for
        none).  Setting it later than it was needs nothing more; setting it
        sooner needs L{arm}.
    @ivar expired: what is called when the deadline passes.
    """

    def __init__(self, clock: IReactorTime, expired: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self.expired = expired
        self.at = NEVER
        self._timer: IDelayedCall | None = None

    def set(self, seconds: float | None) -> None:
        """
        Make the deadline C{seconds} from now; L{None} for none.
        """
        if seconds is None:
            self.at = NEVER
            return
        self.at = self._clock.seconds() + seconds
        self.arm()

    def arm(self) -> None:
        """
        Make the timer fire no later than the deadline.
        """
        at = self.at
        if at == NEVER:
            return
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(
                max(at - self._clock.seconds(), 0.0), self._fired
            )
        elif timer.getTime() > at:
            timer.reset(max(at - self._clock.seconds(), 0.0))

    def cancel(self) -> None:
        """
        No deadline for now.  The timer, if it runs, finds none when it
        fires, and stops.
        """
        self.at = NEVER

    def stop(self) -> None:
        """
        No deadline, and no timer left running (the owner is closing).
        """
        self.at = NEVER
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _fired(self) -> None:
        self._timer = None
        at = self.at
        if at == NEVER:
            return
        now = self._clock.seconds()
        if now < at:
            self._timer = self._clock.callLater(at - now, self._fired)
            return
        expired = self.expired
        self.at = NEVER
        if expired is not None:
            expired()
