"""
Tests for L{revproxy.deadline}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.deadline import Deadline


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[float] = []
        self.deadline = Deadline(self.clock, lambda: self.calls.append(self.clock.seconds()))

    def test_expires(self) -> None:
        """
        The callback is called once the deadline passes, once.
        """
        self.deadline.set(5)
        self.clock.advance(4.9)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.calls, [5.0])
        self.clock.advance(100)
        self.assertEqual(self.calls, [5.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_movedLaterByAssignment(self) -> None:
        """
        A deadline moved later keeps its one timer, which sleeps again
        when it fires early.
        """
        self.deadline.set(5)
        self.clock.advance(3)
        self.deadline.set(5)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertEqual(self.calls, [])
        self.clock.advance(3)
        self.assertEqual(self.calls, [8.0])

    def test_movedSooner(self) -> None:
        """
        A deadline moved sooner moves the timer.
        """
        self.deadline.set(10)
        self.deadline.set(2)
        self.clock.advance(2)
        self.assertEqual(self.calls, [2.0])

    def test_assignedThenArmed(self) -> None:
        """
        C{at} may be assigned; L{Deadline.arm} makes a sooner one count.
        """
        self.deadline.set(10)
        self.deadline.at = self.clock.seconds() + 1
        self.deadline.arm()
        self.clock.advance(1)
        self.assertEqual(self.calls, [1.0])

    def test_cancel(self) -> None:
        """
        A cancelled deadline calls nothing; the timer stops when it fires.
        """
        self.deadline.set(5)
        self.deadline.cancel()
        self.clock.advance(5)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_none(self) -> None:
        """
        A deadline of None is none.
        """
        self.deadline.set(None)
        self.clock.advance(1000)
        self.assertEqual(self.calls, [])

    def test_stop(self) -> None:
        """
        A stopped deadline leaves no timer behind.
        """
        self.deadline.set(5)
        self.deadline.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_expiredMaySetAgain(self) -> None:
        """
        The callback may set a new deadline.
        """
        def again() -> None:
            self.calls.append(self.clock.seconds())
            if len(self.calls) < 3:
                self.deadline.set(1)

        self.deadline.expired = again
        self.deadline.set(1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.calls, [1.0, 2.0, 3.0])
