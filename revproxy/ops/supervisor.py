# -*- test-case-name: tests.ops.test_supervisor -*-
"""
The parent's supervision of its workers (C{--workers N}).

- Each worker is spawned with the parent's listening sockets as its file
  descriptors 3, 4, ... (C{childFDs}; L{twisted.runner.procmon} cannot pass
  descriptors, so this is its equivalent, with the same backoff rule).
- A worker that dies is logged (how it ended) and restarted: at once if it
  had run for C{threshold} seconds, else after a delay that doubles from
  C{minRestartDelay} up to C{maxRestartDelay}.
- L{WorkerSupervisor.replaceAll} (the parent's SIGHUP) replaces the workers
  one at a time: the new one is started, and only once its admin endpoint
  answers is the old one sent C{SIGTERM} (it drains); the shared socket
  keeps every connection queued for whichever worker accepts it.
- C{stopService} (the parent's SIGTERM) sends every worker C{SIGTERM} and
  fires once all have exited; a worker still running after the drain
  timeout and a margin is killed.
- Each worker logs its events on its standard output as lines of the
  parent's log format that name it (L{revproxy.ops.workers.workerLogObserver}):
  the parent's own standard output, inherited (a line per C{write}: lines
  do not mix), or a pipe whose complete lines the parent copies, unparsed,
  into its C{--logfile}.  Either way the access log costs the parent no
  formatting per request (relayed as events, it cost 110 us a request).  What a worker writes on its standard error (a traceback
  before logging began) is logged by the parent with the worker's number.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from revproxy.etcd.embedded import exitReason
from revproxy.ops.workeradmin import adminGet
from revproxy.ops.workers import ENV_ADMIN, ENV_FDS, ENV_WORKER

__all__ = ["WorkerProcess", "WorkerSupervisor", "relayLine"]

log = Logger()

_loggers: dict[str, Logger] = {}


def relayLine(number: int, line: bytes, stream: str = "stdout") -> None:
    """
    Log one line of worker C{number}'s output in the parent: a JSON log
    line as the event it was (its level, namespace and fields, and
    C{worker}); any other line as it is, at info (standard output) or warn
    (standard error).
    """
    text = line.decode("utf-8", "replace").rstrip("\r")
    if not text.strip():
        return
    record: Any = None
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            record = None
    if not isinstance(record, dict):
        level = LogLevel.info if stream == "stdout" else LogLevel.warn
        log.emit(level, "[worker {worker}] {line}", worker=number, line=text)
        return
    namespace = str(record.pop("namespace", None) or "revproxy.worker")
    logger = _loggers.get(namespace)
    if logger is None:
        logger = _loggers[namespace] = Logger(namespace=namespace)
    try:
        level = LogLevel.levelWithName(str(record.pop("level", "info")))
    except Exception:
        level = LogLevel.info
    record.pop("time", None)
    fields = {
        k: v for k, v in record.items()
        if not k.startswith("log_") and k not in ("format", "worker")
    }
    fields["text"] = str(fields.get("text", ""))
    logger.emit(level, "[worker {worker}] {text}", worker=number, **fields)


class WorkerProcess(ProcessProtocol):
    """
    One worker process: relays its output and tells when it ended.

    @ivar ended: fires with the exit reason (a L{Failure}) when it exits.
    """

    def __init__(self, number: int, generation: int, adminSocket: str, started: float,
                 output: Callable[[bytes], None] | None = None) -> None:
        self.number = number
        self.generation = generation
        self.adminSocket = adminSocket
        self.started = started
        self.pid: int | None = None
        self.ended: Deferred[Any] = Deferred()  # fires with a Failure: addBoth
        self.exited = False
        self.replaced = False
        self._buffers = {1: b"", 2: b""}
        self._output = output

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1 and self._output is not None:
            data = self._buffers[1] + data
            end = data.rfind(b"\n") + 1
            self._buffers[1] = data[end:]
            if end:
                self._output(data[:end])
            return
        lines = (self._buffers.get(childFD, b"") + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        stream = "stdout" if childFD == 1 else "stderr"
        for line in lines:
            relayLine(self.number, line, stream)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._buffers.items():
            if rest and fd == 1 and self._output is not None:
                self._output(rest + b"\n")
            elif rest:
                relayLine(self.number, rest, "stdout" if fd == 1 else "stderr")
        self._buffers = {}
        self.exited = True
        self.ended.callback(reason)

    def signal(self, name: str) -> None:
        """
        Send the worker a signal (C{"TERM"}, C{"KILL"}) if it still runs.
        """
        if not self.exited and self.transport is not None:
            try:
                self.transport.signalProcess(name)  # type: ignore[attr-defined]
            except Exception:  # it just exited
                pass


class WorkerSupervisor(Service):
    """
    Runs C{count} workers and keeps them running.

    @ivar workers: the current worker of each number (1 to C{count}).
    @ivar restarts: per worker number, how many times it was restarted
        after it died.
    """

    name = "workers"
    threshold = 5.0
    minRestartDelay = 0.5
    maxRestartDelay = 30.0
    killMargin = 5.0
    readyTimeout = 30.0

    def __init__(
        self,
        reactor: Any,
        command: list[str],
        environ: Mapping[str, str],
        count: int,
        sockets: Callable[[], list[int]],
        drainTimeout: float,
        clearExitSignal: Callable[[], None] = lambda: None,
        logOutput: Callable[[], Callable[[bytes], None] | int | None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self.command = command
        self._environ = dict(environ)
        self.count = count
        self._sockets = sockets
        self.drainTimeout = drainTimeout
        self._clearExitSignal = clearExitSignal
        self._logOutput = logOutput
        self._output: Callable[[bytes], None] | int | None = None
        self.workers: dict[int, WorkerProcess] = {}
        self.restarts: dict[int, int] = {n: 0 for n in range(1, count + 1)}
        self._delays: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}
        self._generation = 0
        self._everyone: set[WorkerProcess] = set()
        self._replacing: Deferred[None] | None = None
        self.socketDir: str | None = None
        #: How a worker's admin endpoint is asked (replaced in tests).
        self.probe: Callable[[Any, str, str, float], Deferred[tuple[int, bytes]]] = adminGet

    def startService(self) -> None:
        super().startService()
        self.socketDir = tempfile.mkdtemp(prefix="revproxy-workers-")
        self._output = self._logOutput()  # logging has begun by now
        log.info(
            "starting {count} workers (pid of the parent: {pid})",
            count=self.count, pid=os.getpid(),
        )
        for number in range(1, self.count + 1):
            self.spawn(number)

    def spawn(self, number: int, current: bool = True) -> WorkerProcess:
        """
        Start a worker with number C{number}; it becomes the current one
        of that number (restarted if it dies) unless not C{current}.
        """
        self._generation += 1
        assert self.socketDir is not None
        adminSocket = os.path.join(self.socketDir, f"w{number}.{self._generation}.sock")
        fds = self._sockets()
        output = self._output
        childFDs: dict[int, Any] = {0: "w", 1: output if isinstance(output, int) else "r", 2: "r"}
        for i, fd in enumerate(fds):
            childFDs[3 + i] = fd
        env = {
            **self._environ,
            ENV_WORKER: str(number),
            ENV_FDS: ",".join(str(3 + i) for i in range(len(fds))),
            ENV_ADMIN: adminSocket,
        }
        worker = WorkerProcess(
            number, self._generation, adminSocket, self._reactor.seconds(),
            None if isinstance(output, int) else output,
        )
        if current:
            self.workers[number] = worker
        self._everyone.add(worker)
        self._reactor.spawnProcess(
            worker, self.command[0], self.command, env=env, childFDs=childFDs
        )
        log.info("worker {worker} started, pid {pid}", worker=number, pid=worker.pid)
        worker.ended.addBoth(self._ended, worker)
        return worker

    def _ended(self, reason: Failure, worker: WorkerProcess) -> None:
        self._everyone.discard(worker)
        why = exitReason(reason)
        number = worker.number
        if worker.adminSocket and os.path.exists(worker.adminSocket):
            try:
                os.unlink(worker.adminSocket)
            except OSError:
                pass
        if not self.running or worker.replaced or self.workers.get(number) is not worker:
            log.info(
                "worker {worker} (pid {pid}) stopped: {reason}",
                worker=number, pid=worker.pid, reason=why,
            )
            return
        ran = self._reactor.seconds() - worker.started
        if ran >= self.threshold:
            delay = 0.0
            self._delays[number] = self.minRestartDelay
        else:
            delay = self._delays.get(number, self.minRestartDelay)
            self._delays[number] = min(delay * 2, self.maxRestartDelay)
        self.restarts[number] += 1
        log.warn(
            "worker {worker} (pid {pid}) died: {reason}; restarting it in {delay:.1f}s",
            worker=number, pid=worker.pid, reason=why, delay=delay,
        )
        self._pending[number] = self._reactor.callLater(delay, self._restart, number)

    def _restart(self, number: int) -> None:
        self._pending.pop(number, None)
        if self.running:
            self.spawn(number)

    def whenReady(self, worker: WorkerProcess, timeout: float) -> Deferred[bool]:
        """
        Fire with C{True} once C{worker}'s admin endpoint answers (it is
        listening), or C{False} if it exits first or C{timeout} passes.
        """
        deadline = self._reactor.seconds() + timeout
        result: Deferred[bool] = Deferred()

        def poll() -> None:
            if worker.exited or self._reactor.seconds() > deadline:
                result.callback(False)
                return
            d = self.probe(self._reactor, worker.adminSocket, "/healthz", 1.0)
            d.addCallbacks(answered, lambda _: again())

        def answered(response: tuple[int, bytes]) -> None:
            if response[0] == 200:
                result.callback(True)
            else:
                again()

        def again() -> None:
            self._reactor.callLater(0.05, poll)

        poll()
        return result

    def replaceAll(self) -> str:
        """
        Replace every worker, one at a time (a new one up before the old one
        drains).  A reloader of the parent's SIGHUP.
        """
        if self._replacing is not None:
            return "workers are being replaced already"
        self._replacing = self._replaceFrom(1)
        self._replacing.addBoth(self._replaced)
        return f"replacing {self.count} workers one at a time"

    def _replaced(self, _: object) -> None:
        self._replacing = None

    def _replaceFrom(self, number: int) -> Deferred[None]:
        if number > self.count or not self.running:
            log.info("all workers replaced")
            return succeed(None)
        old = self.workers.get(number)
        new = self.spawn(number, current=False)
        d = self.whenReady(new, self.readyTimeout)

        def ready(ok: bool) -> Deferred[None]:
            if not ok or not self.running:
                new.replaced = True  # never restarted: the old one serves on
                new.signal("KILL")
                log.error(
                    "worker {worker}: the new worker (pid {pid}) did not come up; "
                    "the replacement stops", worker=number, pid=new.pid,
                )
                return succeed(None)
            self.workers[number] = new
            if old is not None and not old.exited:
                old.replaced = True
                log.info(
                    "worker {worker} replaced: pid {new} serves, pid {old} drains",
                    worker=number, new=new.pid, old=old.pid,
                )
                old.signal("TERM")
                self._killLater(old)
            return self._replaceFrom(number + 1)

        return d.addCallback(ready)

    def _killLater(self, worker: WorkerProcess) -> None:
        call = self._reactor.callLater(
            self.drainTimeout + self.killMargin, self._kill, worker
        )
        worker.ended.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])

    def _kill(self, worker: WorkerProcess) -> None:
        if not worker.exited:
            log.warn(
                "worker {worker} (pid {pid}) did not exit within the drain timeout; killing it",
                worker=worker.number, pid=worker.pid,
            )
            worker.signal("KILL")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        running = [w for w in self._everyone if not w.exited]
        log.info("stopping {n} workers: each drains", n=len(running))
        for worker in running:
            worker.signal("TERM")
            self._killLater(worker)
        d = DeferredList([w.ended for w in running])

        def done(_: object) -> None:
            self._clearExitSignal()
            if self.socketDir is not None:
                shutil.rmtree(self.socketDir, ignore_errors=True)
            log.info("all workers stopped")

        d.addCallback(done)
        return d  # type: ignore[return-value]
