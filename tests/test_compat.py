"""
Tests for L{revproxy._compat}: each private name of Twisted, treq or
txaioetcd that revproxy uses is still there and still behaves as relied on.
"""

from __future__ import annotations

import inspect
import signal

from twisted.internet.base import ReactorBase
from twisted.logger import LogPublisher
from twisted.runner.test.test_procmon import DummyProcessReactor
from twisted.trial.unittest import SynchronousTestCase

from revproxy._compat import clearExitSignal, publisherObservers, waitingProcessMonitor


class _Signalled:
    _exitSignal: int | None = None


class TwistedPrivatesTests(SynchronousTestCase):
    """
    The private names of Twisted that revproxy relies on.
    """

    def test_exitSignalRecordedAndRead(self) -> None:
        """
        Reactors record the stopping signal in C{_exitSignal} and twistd
        reads it to re-raise the signal.
        """
        from twisted.scripts import twistd

        self.assertIsNone(ReactorBase._exitSignal)
        self.assertIn("self._exitSignal = number", inspect.getsource(ReactorBase.sigTerm))
        self.assertIn("_exitSignal", inspect.getsource(twistd.runApp))

    def test_clearExitSignal(self) -> None:
        """
        A SIGTERM is cleared; another signal, or none, is left alone.
        """
        for recorded, expected in [
            (signal.SIGTERM, None),
            (signal.SIGINT, signal.SIGINT),
            (None, None),
        ]:
            reactor = _Signalled()
            reactor._exitSignal = recorded
            clearExitSignal(reactor)
            self.assertEqual(reactor._exitSignal, expected)
        clearExitSignal(object())  # a clock without the attribute

    def test_publisherObservers(self) -> None:
        """
        The observers of a publisher are listed in order, and follow
        additions and removals.
        """
        first, second = [].append, [].append
        publisher = LogPublisher(first)
        publisher.addObserver(second)
        self.assertEqual(publisherObservers(publisher), [first, second])
        publisher.removeObserver(first)
        self.assertEqual(publisherObservers(publisher), [second])

    def test_monitorLearnsOfExits(self) -> None:
        """
        The process monitor's exit hook is called when a child exits, so
        C{stopService} fires only once the child has exited.
        """
        reactor = DummyProcessReactor()
        monitor = waitingProcessMonitor()(reactor)
        exits: list[str] = []
        monitor.exitObservers.append(lambda name, reason: exits.append(name))
        monitor.addProcess("child", ["/bin/true"])
        monitor.startService()
        reactor.advance(1)
        reactor.spawnedProcesses[0].processEnded(1)
        self.assertEqual(exits, ["child"])
        d = monitor.stopService()
        self.successResultOf(d)
        monitor.startService()
        reactor.advance(monitor.minRestartDelay + 1)
        d = monitor.stopService()
        self.assertNoResult(d)
        reactor.advance(1)
        self.successResultOf(d)
        self.assertIs(waitingProcessMonitor(), waitingProcessMonitor())


class EtcdLibraryPrivatesTests(SynchronousTestCase):
    """
    The private names of txaioetcd and treq that revproxy relies on.
    """
