# -*- test-case-name: tests.ops.test_workers -*-
"""
C{--workers N}: one parent process that owns the listening sockets and N
worker processes that serve them, each a full revproxy (its own reactor,
upstream pool, health state and etcd follow loop).

The parent binds every C{--listen} once (before twistd drops privileges)
and hands the bound, listening sockets to each worker as inherited file
descriptors (3, 4, ...); a worker adopts them (C{adoptStreamPort}) instead
of listening itself.  The kernel queues connections on the one socket
whichever worker is there to accept them, so a worker that restarts or is
replaced refuses nothing: the others (or the queue) take its share.
(C{SO_REUSEPORT}, one socket per worker, was measured too: see the README
and C{bench/workers.py}; C{REVPROXY_WORKER_SOCKETS=reuseport} selects it.)

The parent does no request work: it supervises the workers
(L{revproxy.ops.supervisor}), copies their log lines into its own log
(one stream), runs the
embedded etcd if asked, and serves the admin endpoint over every worker
(L{revproxy.ops.workeradmin}).

A worker is the same C{twistd -n revproxy ARGS} with C{REVPROXY_WORKER}
and a few more variables in its environment (L{WorkerEnvironment}): its
number, the descriptors of its listeners, the Unix socket of its own admin
endpoint (which the parent reads) and the parent's pid.  It logs in the
parent's format, each line naming it (L{workerLogObserver}), to its
standard output: the parent's own (inherited), or, when the parent logs to
a C{--logfile}, a pipe whose lines the parent copies into it unparsed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python import usage

from revproxy._compat import acceptOneAtATime

__all__ = [
    "AdoptedListener",
    "BoundSocket",
    "WorkerEnvironment",
    "parentService",
    "parseListen",
    "parseWorkers",
    "workerEnvironment",
]

log = Logger()

ENV_WORKER = "REVPROXY_WORKER"
ENV_FDS = "REVPROXY_LISTEN_FDS"
ENV_ADMIN = "REVPROXY_WORKER_ADMIN"
ENV_PARENT = "REVPROXY_PARENT_PID"
ENV_SOCKETS = "REVPROXY_WORKER_SOCKETS"
ENV_LOG_FORMAT = "REVPROXY_WORKER_LOG_FORMAT"
SOCKET_MODES = ("shared", "reuseport")


def cpuCount() -> int:
    """
    The CPUs this process may run on (its affinity, as C{taskset} or a
    cgroup cpuset sets it), at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def parseWorkers(text: str) -> int:
    """
    The value of C{--workers}: a whole number from 1 to 256, or C{auto}
    for the number of CPUs.

    @raise usage.UsageError: naming the option.
    """
    if text == "auto":
        return cpuCount()
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise usage.UsageError(
            f"--workers: {text!r} is not a number of workers from 1 to 256, or auto"
        )
    return int(text)


def checkWorkerOptions(options: Any) -> None:
    """
    Check C{--workers} (a number, or C{auto}) and, above 1, that every
    listener can be shared.

    @raise usage.UsageError: in one line.
    """
    options["workers"] = parseWorkers(str(options["workers"]))
    if options["workers"] > 1:
        for description in options["listen"]:
            parseListen(description)


@dataclass(frozen=True)
class BoundSocket:
    """
    What a C{--listen} description asks to bind: address family, interface,
    port and backlog.
    """

    description: str
    family: int
    interface: str
    port: int
    backlog: int

    def bind(self, reusePort: bool = False) -> socket.socket:
        """
        A socket bound to this address (listening unless C{reusePort}: then
        it only reserves the port for the workers' own sockets).
        """
        s = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reusePort:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((self.interface, self.port))
            if not reusePort:
                s.listen(self.backlog)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s


def _splitDescription(description: str) -> list[str]:
    # strports: ':' separates, '\' escapes (tcp6:80:interface=\:\:1).
    return [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]


def parseListen(description: str) -> BoundSocket:
    """
    The socket a C{tcp:} or C{tcp6:} listen description asks for.

    @raise usage.UsageError: for any other kind of endpoint (workers share
        only TCP sockets) or a bad port.
    """
    parts = _splitDescription(description)
    kind = parts[0]
    if kind not in ("tcp", "tcp6") or len(parts) < 2:
        raise usage.UsageError(
            f"--workers: --listen {description!r}: workers can share only "
            "tcp: and tcp6: listeners"
        )
    args = [p for p in parts[1:] if "=" not in p]
    kwargs = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = kwargs.pop("port", args[0] if args else "")
    backlog = kwargs.pop("backlog", "50")
    interface = kwargs.pop("interface", "::" if kind == "tcp6" else "")
    if kwargs or len(args) > 1 or not port.isdigit() or not backlog.isdigit():
        raise usage.UsageError(f"--workers: --listen {description!r}: cannot share it")
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    return BoundSocket(description, family, interface, int(port), int(backlog))


@dataclass(frozen=True)
class WorkerEnvironment:
    """
    What a worker learns from its parent, through its environment.
    """

    number: int
    fds: tuple[int, ...]
    adminSocket: str
    parentPid: int
    reusePort: bool


def workerEnvironment(environ: Mapping[str, str] = os.environ) -> WorkerEnvironment | None:
    """
    The worker's environment, or L{None} when this process is not a worker.
    """
    number = environ.get(ENV_WORKER)
    if not number:
        return None
    fds = tuple(int(fd) for fd in environ.get(ENV_FDS, "").split(",") if fd)
    return WorkerEnvironment(
        number=int(number),
        fds=fds,
        adminSocket=environ[ENV_ADMIN],
        parentPid=int(environ.get(ENV_PARENT, "0")),
        reusePort=environ.get(ENV_SOCKETS) == "reuseport",
    )


def workerOptions(options: Mapping[str, Any], worker: WorkerEnvironment) -> dict[str, Any]:
    """
    A worker's options: the parent's, with its admin endpoint on its Unix
    socket, no embedded etcd (the parent runs it; the worker follows it
    like any etcd), and its log format left to L{workerLogObserver}.
    """
    _dieWithParent(worker.parentPid)
    nodeId = options.get("node-id")
    access = options.get("access-log")
    if access == "-":
        # The batched writer's 64 KiB writes to a shared standard output
        # could mix with other workers' lines and would not name the
        # worker: through the log, one tagged line per write.
        from revproxy.ops.logwriter import THROUGH_LOGGING

        access = THROUGH_LOGGING
    return {
        **options,
        "access-log": access,
        # Each worker is a node of the fleet (it applies routes on its own).
        "node-id": None if nodeId is None else f"{nodeId}-w{worker.number}",
        "log-format": "text",
        "admin": f"unix:{worker.adminSocket}:mode=600",
        "embedded-etcd": None,
    }


def _dieWithParent(parentPid: int) -> None:
    """
    Ask Linux to send this worker C{SIGTERM} (a drain) when its parent
    dies, so that no worker outlives a parent killed with C{SIGKILL}.
    """
    if not sys.platform.startswith("linux") or not parentPid:
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parentPid:  # the parent died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


class AdoptedListener(Service):
    """
    A worker's listener on a socket its parent bound: adopted when the
    service starts; with C{reusePort}, a socket of its own bound with
    C{SO_REUSEPORT} to the same address instead.
    """

    def __init__(self, fd: int, factory: Any, reactor: Any, reusePort: bool = False,
                 description: str | None = None) -> None:
        # Named as a Listener of the same description is (the fleet's
        # registration finds the first listener by that name).
        self.setName(f"listen {description if description is not None else f'fd {fd}'}")
        self._fd = fd
        self._serverFactory = factory
        self._reactor = reactor
        self._reusePort = reusePort
        self._port: Any = None

    def startService(self) -> None:
        super().startService()
        inherited = socket.socket(fileno=self._fd)
        family = inherited.family
        own = None
        if self._reusePort:
            address = inherited.getsockname()
            own = socket.socket(family, socket.SOCK_STREAM)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own.bind(address[:2])
            own.listen(socket.SOMAXCONN)
            own.setblocking(False)
        listening = own if own is not None else inherited
        self._port = self._reactor.adoptStreamPort(listening.fileno(), family, self._serverFactory)
        if own is None:  # shared with the other workers: take turns
            acceptOneAtATime(self._port)
        inherited.close()  # the port holds its own duplicate
        if own is not None:
            own.close()

    def whenListening(self) -> Deferred[Any]:
        """
        A Deferred that fires with the listening port (adopted at start).
        """
        return succeed(self._port)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


def workerListeners(
    worker: WorkerEnvironment, options: Mapping[str, Any], factory: Any, reactor: Any
) -> list[Service]:
    """
    The listeners of a worker: one per descriptor its parent passed, in
    the order of C{--listen}.
    """
    return [
        AdoptedListener(fd, factory, reactor, worker.reusePort, description)
        for fd, description in zip(worker.fds, options["listen"])
    ]


def socketMode(environ: Mapping[str, str] = os.environ) -> str:
    """
    How workers share a port: C{shared} (the default: one socket, bound by
    the parent) or C{reuseport} (one socket per worker, C{SO_REUSEPORT}).
    """
    mode = environ.get(ENV_SOCKETS, "shared")
    return mode if mode in SOCKET_MODES else "shared"


class ListeningSockets(Service):
    """
    The parent's sockets, one per C{--listen}: bound before twistd drops
    privileges; a failed bind stops start-up with one line.

    @ivar sockets: the bound sockets, in the order of the descriptions.
    """

    name = "listening-sockets"

    def __init__(self, wanted: list[BoundSocket], reusePort: bool) -> None:
        self._wanted = wanted
        self._reusePort = reusePort
        self.sockets: list[socket.socket] = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        super().startService()
        self._bind()

    def _bind(self) -> None:
        if self.sockets:
            return
        for wanted in self._wanted:
            try:
                s = wanted.bind(self._reusePort)
            except OSError as e:
                for bound in self.sockets:
                    bound.close()
                self.sockets = []
                raise SystemExit(
                    f"revproxy: cannot listen on {wanted.description}: {e.strerror}"
                ) from None
            self.sockets.append(s)
            host, port = s.getsockname()[:2]
            log.info(
                "{description}: bound {host}:{port}, shared by the workers",
                description=wanted.description, host=host, port=port,
            )

    def stopService(self) -> None:
        super().stopService()
        for s in self.sockets:
            s.close()
        self.sockets = []


def workerLogObserver() -> Any:
    """
    A worker's log observer (C{twistd --logger}): each event as one line of
    the parent's format on standard output (which the parent copies into
    its own log as it is): the JSON line with C{"worker": N}, or twistd's
    text line with C{[worker N]} after its C{[namespace#level]}.
    """
    from twisted.logger import FileLogObserver, formatEventAsClassicLogText

    from revproxy.ops.logs import eventAsJSONLine

    number = int(os.environ.get(ENV_WORKER, "0"))
    out = sys.stdout  # twistd calls this before it redirects standard output
    if os.environ.get(ENV_LOG_FORMAT) == "json":
        return FileLogObserver(out, lambda event: eventAsJSONLine({**event, "worker": number}))
    tag = f"[worker {number}] "

    def text(event: Any) -> str | None:
        line = formatEventAsClassicLogText(event)
        if line is None:
            return None
        head, sep, rest = line.partition("] ")
        return head + sep + tag + rest if sep else tag + line

    return FileLogObserver(out, text)


def parentLogOutput(logFormat: str) -> Any:
    """
    Where the workers' log lines go: when the parent logs text to a file
    (twistd's C{--logfile}), a function that copies lines into it; else
    the parent's standard output's descriptor, which the workers inherit
    and write to themselves, one line per C{write}, so that their lines
    cost the parent nothing.  Call once logging has begun (when services
    start).
    """
    from twisted.logger import globalLogPublisher

    from revproxy._compat import logFilesOf
    from revproxy.ops.logs import realStdout

    files = logFilesOf(globalLogPublisher) if logFormat != "json" else []
    if files:
        logFile = files[0]

        def toFile(lines: bytes) -> None:
            logFile.write(lines)
            logFile.flush()

        return toFile
    out = realStdout()
    out.flush()
    return out.fileno()


def workerCommand(options: Mapping[str, Any]) -> list[str]:
    """
    The command line of a worker: this interpreter running
    C{twistd -n --pidfile= revproxy} with the parent's revproxy arguments.
    """
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'twistd'; "
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "--logger",
        "revproxy.ops.workers.workerLogObserver",
        "revproxy",
        *options["argv"],
    ]


def parentService(options: Mapping[str, Any], reactor: Any) -> MultiService:
    """
    The parent's service tree: logs, the embedded etcd if any, the
    sockets, the workers' supervisor, SIGHUP (replace the workers one by
    one) and the admin endpoint over all workers.
    """
    from twisted.logger import globalLogPublisher

    from revproxy._compat import clearExitSignal, logFilesOf
    from revproxy.ops.logs import JSONLogging
    from revproxy.ops.signals import HangupService, reopenLogFiles
    from revproxy.ops.supervisor import WorkerSupervisor

    root = MultiService()
    if options.get("log-format") == "json":
        JSONLogging().setServiceParent(root)
    if options.get("embedded-etcd"):
        from revproxy.ops.fatal import exitOnError
        from revproxy.etcd.embedded import EmbeddedEtcd

        binary, dataDir, clientPort = options["embedded-etcd"]
        EmbeddedEtcd(
            reactor, binary, dataDir, clientPort, fatal=exitOnError(reactor)
        ).setServiceParent(root)
    mode = socketMode()
    sockets = ListeningSockets(
        [parseListen(d) for d in options["listen"]], reusePort=mode == "reuseport"
    )
    sockets.setServiceParent(root)
    logFormat = options.get("log-format") or "text"
    environ = {
        **os.environ, ENV_PARENT: str(os.getpid()), ENV_SOCKETS: mode, ENV_LOG_FORMAT: logFormat,
    }
    supervisor = WorkerSupervisor(
        reactor,
        workerCommand(options),
        environ,
        count=options["workers"],
        sockets=lambda: [s.fileno() for s in sockets.sockets],
        drainTimeout=options["drain-timeout"],
        clearExitSignal=lambda: clearExitSignal(reactor),
        logOutput=lambda: parentLogOutput(logFormat),
    )
    supervisor.setServiceParent(root)
    HangupService(
        reactor,
        [supervisor.replaceAll, reopenLogFiles(lambda: logFilesOf(globalLogPublisher))],
    ).setServiceParent(root)
    if options.get("admin"):
        from revproxy.ops.workeradmin import parentAdminListener

        parentAdminListener(options, supervisor, reactor).setServiceParent(root)
    return root
