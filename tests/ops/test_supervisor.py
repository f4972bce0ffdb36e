"""
Tests for L{revproxy.ops.supervisor}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from revproxy.ops.supervisor import WorkerSupervisor, relayLine


class FakeProcess:
    """
    The transport of a spawned process: records signals.
    """

    def __init__(self, pid: int, protocol: Any, args: list[str], env: dict[str, str],
                 childFDs: dict[int, Any]) -> None:
        self.pid = pid
        self.protocol = protocol
        self.args = args
        self.env = env
        self.childFDs = childFDs
        self.signals: list[str] = []

    def closeStdin(self) -> None:
        pass

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        reason = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(code, signal)
        self.protocol.processEnded(Failure(reason))


class ProcessClock(Clock):
    """
    A clock that spawns fake processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str],
                     childFDs: dict[int, Any]) -> FakeProcess:
        process = FakeProcess(1000 + len(self.processes), protocol, args, env, childFDs)
        self.processes.append(process)
        protocol.makeConnection(process)
        return process


def supervisor(clock: ProcessClock, count: int = 2) -> WorkerSupervisor:
    s = WorkerSupervisor(
        clock, ["python", "worker"], {"X": "1"}, count=count,
        sockets=lambda: [7, 8], drainTimeout=10.0,
    )
    return s


def captured(test: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class SupervisorTests(SynchronousTestCase):
    def test_startsWorkersWithSocketsAndEnvironment(self) -> None:
        """
        Each worker gets the listening sockets as descriptors 3, 4... and
        its number, descriptors and admin socket in its environment.
        """
        clock = ProcessClock()
        s = supervisor(clock)
        s.startService()
        self.addCleanup(s.stopService)
        self.assertEqual(len(clock.processes), 2)
        first, second = clock.processes
        self.assertEqual(first.childFDs, {0: "w", 1: "r", 2: "r", 3: 7, 4: 8})
        self.assertEqual(first.env["REVPROXY_WORKER"], "1")
        self.assertEqual(second.env["REVPROXY_WORKER"], "2")
        self.assertEqual(first.env["REVPROXY_LISTEN_FDS"], "3,4")
        self.assertEqual(first.env["X"], "1")
        self.assertNotEqual(first.env["REVPROXY_WORKER_ADMIN"], second.env["REVPROXY_WORKER_ADMIN"])

    def test_inheritedLogOutput(self) -> None:
        """
        When the parent logs to its standard output, the workers inherit it
        as theirs.
        """
        clock = ProcessClock()
        s = WorkerSupervisor(clock, ["w"], {}, count=1, sockets=lambda: [7],
                             drainTimeout=1.0, logOutput=lambda: 1)
        s.startService()
        self.assertEqual(clock.processes[0].childFDs, {0: "w", 1: 1, 2: "r", 3: 7})
        d = s.stopService()
        clock.processes[0].exit()
        self.successResultOf(d)

    def test_deadWorkerRestartsWithBackoff(self) -> None:
        """
        A worker that dies soon after its start is restarted after a delay
        that doubles; one that ran long is restarted at once; each death is
        logged with how it ended.
        """
        events = captured(self)
        clock = ProcessClock()
        s = supervisor(clock, count=1)
        s.startService()
        clock.processes[0].exit(signal=9)
        self.assertEqual(len(clock.processes), 1)
        clock.advance(0.5)
        self.assertEqual(len(clock.processes), 2)
        clock.processes[1].exit(code=1)
        clock.advance(0.9)
        self.assertEqual(len(clock.processes), 2)
        clock.advance(0.1)
        self.assertEqual(len(clock.processes), 3)
        clock.advance(60)
        clock.processes[2].exit(signal=9)
        clock.advance(0)
        self.assertEqual(len(clock.processes), 4)  # at once
        self.assertEqual(s.restarts, {1: 3})
        deaths = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(
            [e["reason"] for e in deaths],
            ["killed by signal 9", "exit status 1", "killed by signal 9"],
        )
        self.assertEqual(deaths[0]["worker"], 1)
        s.stopService()

    def test_stopDrainsEveryWorker(self) -> None:
        """
        Stopping sends every worker SIGTERM and fires once all have exited;
        none is restarted.
        """
        clock = ProcessClock()
        s = supervisor(clock)
        s.startService()
        d = s.stopService()
        self.assertEqual([p.signals for p in clock.processes], [["TERM"], ["TERM"]])
        self.assertNoResult(d)
        clock.processes[0].exit()
        self.assertNoResult(d)
        clock.processes[1].exit()
        self.successResultOf(d)
        clock.advance(100)
        self.assertEqual(len(clock.processes), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopKillsAfterDrainTimeout(self) -> None:
        """
        A worker still running after the drain timeout and a margin is
        killed.
        """
        clock = ProcessClock()
        s = supervisor(clock, count=1)
        s.startService()
        d = s.stopService()
        clock.advance(14.9)
        self.assertEqual(clock.processes[0].signals, ["TERM"])
        clock.advance(0.1)
        self.assertEqual(clock.processes[0].signals, ["TERM", "KILL"])
        clock.processes[0].exit(signal=9)
        self.successResultOf(d)

    def test_replaceAllOneAtATime(self) -> None:
        """
        SIGHUP's replacement starts a new worker, and only once it answers
        sends the old one SIGTERM, then goes on to the next; the old ones
        are not restarted when they exit.
        """
        clock = ProcessClock()
        s = supervisor(clock)
        answers: list[Deferred[tuple[int, bytes]]] = []

        def probe(reactor: Any, path: str, url: str, timeout: float) -> Deferred[tuple[int, bytes]]:
            d: Deferred[tuple[int, bytes]] = Deferred()
            answers.append(d)
            return d

        s.probe = probe
        s.startService()
        old1, old2 = clock.processes
        self.assertIn("replacing 2 workers", s.replaceAll())
        self.assertIn("already", s.replaceAll())
        self.assertEqual(len(clock.processes), 3)
        self.assertEqual(old1.signals, [])
        self.assertIs(s.workers[1].transport, old1)  # until the new one answers
        answers[-1].callback((200, b"ok"))
        self.assertEqual(old1.signals, ["TERM"])
        self.assertEqual(old2.signals, [])
        self.assertEqual(len(clock.processes), 4)
        answers[-1].callback((200, b"ok"))
        self.assertEqual(old2.signals, ["TERM"])
        old1.exit()
        old2.exit()
        clock.advance(1)
        self.assertEqual(len(clock.processes), 4)
        self.assertEqual(s.workers[1].pid, clock.processes[2].pid)
        self.assertEqual(s.restarts, {1: 0, 2: 0})
        self.assertIn("replacing", s.replaceAll())  # again, once done
        d = s.stopService()
        for p in clock.processes:
            if not p.protocol.exited:
                p.exit()
        self.successResultOf(d)

    def test_replacementThatFailsKeepsOld(self) -> None:
        """
        A new worker that exits before it answers leaves the old one
        serving.
        """
        clock = ProcessClock()
        s = supervisor(clock, count=1)
        s.probe = lambda *a: succeed((503, b""))
        s.startService()
        old = clock.processes[0]
        s.replaceAll()
        clock.processes[1].exit(code=1)
        clock.advance(60)
        self.assertEqual(old.signals, [])
        self.assertIs(s.workers[1].transport, old)
        self.assertEqual(len(clock.processes), 2)  # the failed one is not restarted
        self.assertEqual(s.restarts, {1: 0})
        d = s.stopService()
        old.exit()
        self.successResultOf(d)


class RelayTests(SynchronousTestCase):
    def test_jsonLineKeepsFieldsAndNamesWorker(self) -> None:
        """
        A worker's JSON log line becomes an event of the parent with its
        level, namespace, fields, and the worker's number.
        """
        events = captured(self)
        relayLine(3, b'{"time":"x","level":"warn","namespace":"revproxy.access",'
                     b'"text":"GET /","status":200,"log_format":"no"}')
        (event,) = events
        self.assertEqual(event["worker"], 3)
        self.assertEqual(event["status"], 200)
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["log_namespace"], "revproxy.access")
        from twisted.logger import formatEvent

        self.assertEqual(formatEvent(event), "[worker 3] GET /")

    def test_otherLine(self) -> None:
        """
        A line that is not JSON is logged as it is, naming the worker;
        standard error at warn.
        """
        events = captured(self)
        relayLine(2, b"Traceback (most recent call last):", "stderr")
        relayLine(2, b"   ")
        (event,) = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["worker"], 2)
        self.assertEqual(event["line"], "Traceback (most recent call last):")


class PassThroughTests(SynchronousTestCase):
    def test_completeLinesCopied(self) -> None:
        """
        A worker's standard output reaches the parent's log output as it
        is, complete lines only; standard error is logged line by line.
        """
        from revproxy.ops.supervisor import WorkerProcess

        written: list[bytes] = []
        events = captured(self)
        worker = WorkerProcess(1, 1, "/x", 0.0, written.append)
        worker.ended.addErrback(lambda f: None)
        worker.childDataReceived(1, b'{"a":1}\n{"b"')
        worker.childDataReceived(1, b':2}\n')
        worker.childDataReceived(2, b"boom\n")
        self.assertEqual(written, [b'{"a":1}\n', b'{"b":2}\n'])
        self.assertEqual([e["line"] for e in events], ["boom"])
        worker.childDataReceived(1, b"last")
        worker.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(written[-1], b"last\n")
