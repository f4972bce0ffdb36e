# -*- test-case-name: tests.test_compat -*-
"""
Every use of a private name of Twisted, treq or txaioetcd, in one place.

A private name can change in any release of the library that owns it.
Each one used here is used for a reason given beside it, where no public
API does the job, and each is pinned by a test in C{tests.test_compat}
that fails when the library changes it, so that an upgrade breaks one
named test instead of the proxy.  Nothing else in revproxy imports or
touches a private name of another project: C{tests.test_layout} checks.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver, Logger, LogPublisher
from twisted.python.failure import Failure

__all__ = [
    "acceptOneAtATime",
    "clearExitSignal",
    "directDispatch",
    "sendsNow",
    "writeThrough",
    "logFilesOf",
    "quietHTTPConnectionPool",
    "publisherObservers",
    "waitingProcessMonitor",
]


# --------------------------------------------------------------------------
# Twisted
#
# (Each helper below says which private name it touches and why.)


def clearExitSignal(reactor: Any) -> None:
    """
    Make twistd exit 0 after a drained C{SIGTERM} instead of re-raising the
    signal.

    Private name: C{_exitSignal}, where Twisted's reactors record the signal
    that stopped them (C{twisted.internet.base._ISupportsExitSignalCapturing})
    and which twistd's runner reads after the reactor stops, to kill itself
    with the same signal.  No public API says "this stop was clean"; a
    supervisor or systemd unit expects exit status 0 from a graceful stop.
    Reactors and clocks without the attribute are left alone.
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


def publisherObservers(publisher: LogPublisher) -> list[ILogObserver]:
    """
    The observers of C{publisher}, in order.

    Private name: C{LogPublisher._observers}.  L{LogPublisher} has no public
    way to list its observers, and twistd's own text observer is not
    reachable from a plugin; C{--log-format json} must remove it to replace
    it.
    """
    observers: list[ILogObserver] = list(publisher._observers)
    return observers


def logFilesOf(publisher: LogPublisher) -> list[Any]:
    """
    The log files (L{twisted.python.logfile.BaseLogFile}, which can be
    reopened) that the file observers of C{publisher} write to: twistd's
    C{--logfile}, for C{SIGHUP} to reopen after an external rotation.

    Private name: C{FileLogObserver._outFile}, the file a
    L{twisted.logger.FileLogObserver} writes to; twistd keeps no public
    reference to the L{LogFile} it opens for C{--logfile}.
    """
    from twisted.logger import FileLogObserver
    from twisted.python.logfile import BaseLogFile

    return [
        observer._outFile
        for observer in publisherObservers(publisher)
        if isinstance(observer, FileLogObserver)
        and isinstance(getattr(observer, "_outFile", None), BaseLogFile)
    ]


def acceptOneAtATime(port: Any) -> None:
    """
    Make a listening TCP port accept one connection each time the reactor
    finds it readable, instead of draining the queue (up to
    C{numberAccepts}, which grows by 20 while the queue is full).

    Several workers share one listening socket (C{--workers}); each is
    woken when a connection waits, and the first to call C{accept} gets
    it.  Draining lets whichever worker wakes first take a burst of new
    connections whole (measured: 50 keep-alive connections opened at once
    all went to one of two workers); one at a time, an idle worker gets
    its share because a busy one comes back to C{accept} later.

    Internal behaviour: C{tcp.Port.doRead} reads C{self.numberAccepts}
    (public by name, but Twisted's own tuning, not an API) as its limit
    of consecutive accepts, and resets it after each call.
    """
    doRead = port.doRead

    def doReadOne() -> Any:
        port.numberAccepts = 1
        return doRead()

    port.doRead = doReadOne


def writeThrough(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: into its socket, as far as the socket
    takes it, when the transport has nothing buffered (at once, or at the
    end of the reactor's turn on a reactor that L{directDispatch} changed:
    L{_flushWrites}); through the transport's own C{write} otherwise, and
    for whatever the socket did not take.

    A Twisted transport never writes in C{write}: it buffers, asks the
    reactor to watch the socket for writability (an C{epoll_ctl}), writes
    when the next poll says so, and stops watching (another C{epoll_ctl}).
    For a proxied request that is two such rounds, one per connection, with
    a reactor dispatch each: measured, about a fifth of the CPU of a small
    request.  asyncio's socket transports (and uvloop, and nginx) try the
    send first and only buffer what the socket refused; this does the same.
    The order of bytes is kept, as the transport's buffer must be empty for
    a direct send, and everything else goes through it.  A send error is
    left to the transport: the bytes go to its buffer, and its next write
    meets the error and closes the connection as it would have.

    Private names: C{FileDescriptor._tempDataBuffer} and
    C{FileDescriptor._writeDisconnected} (with C{dataBuffer}, public by
    name), which say whether the transport holds bytes or has shut its
    writing side; and C{Connection.TLS}, set once C{startTLS} is called.
    Only plain TCP connections (exactly L{tcp.Server} and L{tcp.Client},
    not a TLS wrapper or a UNIX socket) are written through; any other
    transport gets an ordinary C{write}.
    """
    queued = _queued.get(transport)
    if queued is not None:
        if transport._tempDataBuffer:
            # Written to directly since: these bytes go after those.
            transport.write(data)
        else:
            queued.append(data)
    elif not sendsNow(transport):
        transport.write(data)
    elif transport.reactor is _batching:
        _queued[transport] = [data]
    else:
        _send(transport, data)


_queued: dict[Any, list[bytes]] = {}
_log = Logger()
_batching: Any = None


def _flushWrites() -> None:
    """
    Send what L{writeThrough} queued in this turn of the reactor, each
    connection's bytes in one C{send}.

    Why: every send that makes a sleeping peer's socket readable wakes the
    peer, on another CPU an interrupt between processors (costly in a VM).
    Sent as each request is handled, a turn's sends each wake the peer
    anew; sent together, only the first does.  Measured on a 1 KiB GET:
    the kernel's share fell from about 26 to 15 µs a request.

    Order is kept: bytes are queued only for a transport that holds
    nothing, which is then not watched for writability and cannot write
    before this runs; what was written to it directly since came after,
    and the queued bytes go in front of it (C{_tempDataBuffer},
    C{_tempDataLen}).  A connection lost or aborted since (C{_aborting})
    has its bytes dropped, as its buffer would be.
    """
    while _queued:
        items = list(_queued.items())
        _queued.clear()
        for transport, chunks in items:
            try:
                _send(transport, chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:
                _log.failure("writing to {transport}", transport=transport)


def _send(transport: Any, data: bytes) -> None:
    if not transport.connected or transport._aborting:
        # Lost, or aborted (which drops what is buffered) since.
        return
    if transport._tempDataBuffer:
        transport._tempDataBuffer.insert(0, data)
        transport._tempDataLen += len(data)
        return
    try:
        sent = transport.getHandle().send(data)
    except OSError:
        # EAGAIN, or an error the transport's own write will meet.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:] if sent else data)


def sendsNow(transport: Any) -> bool:
    """
    Whether C{transport} is a plain TCP connection (exactly L{tcp.Server} or
    L{tcp.Client}, not TLS) that is open for writing and has nothing
    buffered or queued (L{writeThrough}): what is written to its socket now
    goes out in order.  See L{writeThrough} for the private names it reads.
    """
    return (
        type(transport) in _PLAIN_TCP
        and transport not in _queued
        and transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and not transport._writeDisconnected
        and not transport.TLS
    )


_PLAIN_TCP = (tcp.Server, tcp.Client)


def directDispatch(reactor: Any) -> bool:
    """
    Make an epoll reactor call each ready connection's handler directly,
    instead of through Twisted's legacy logging context; return whether it
    did (only Twisted's own L{EPollReactor} is changed).

    For every ready descriptor, C{EPollReactor.doPoll} calls
    C{log.callWithLogger}, which asks the connection for its log prefix and
    pushes it as the C{system} of a new context (a dict copy and update and
    four more calls) around the handler, so that a legacy C{log.msg} made
    during the call carries it.  Measured with callgrind, that is 8.6% of
    the instructions of a small proxied request, for a prefix that no line
    of revproxy's uses: its logs go through twisted.logger, whose events do
    not read the context.  What is lost: a legacy log line written while a
    connection's data is handled (a library's C{log.err}) shows C{-} instead
    of the connection's prefix as its system.

    The replacement also sends, at the start and end of each turn, what
    L{writeThrough} queued for the reactor's connections (L{_flushWrites}).

    Private names: C{EPollReactor._poller}, C{_selectables} and
    C{_doReadOrWrite}, which the replacement uses exactly as C{doPoll} does;
    C{doPoll} and C{doIteration} are set on the instance.
    """
    from twisted.internet.epollreactor import EPollReactor

    if type(reactor) is not EPollReactor:
        return False
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite

    def doPoll(timeout: float | None) -> None:
        if _queued:
            # Written by timed calls, which run just before.
            _flushWrites()
        try:
            events = reactor._poller.poll(-1 if timeout is None else timeout, len(selectables))
        except InterruptedError:
            return
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)
        if _queued:
            _flushWrites()

    global _batching
    reactor.doPoll = reactor.doIteration = doPoll  # type: ignore[method-assign]
    _batching = reactor
    return True


def quietHTTPConnectionPool(reactor: Any) -> Any:
    """
    A persistent L{HTTPConnectionPool} whose connection factories do not log
    "Starting factory" and "Stopping factory" for every connection, as the
    etcd client's would on each request.

    Private name: C{HTTPConnectionPool._factory}, the factory class the pool
    makes per connection; the pool offers no public way to make it quiet.
    """
    from twisted.web.client import HTTPConnectionPool

    class QuietFactory(HTTPConnectionPool._factory):  # type: ignore[name-defined,misc,valid-type]
        noisy = False

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = QuietFactory
    return pool


def waitingProcessMonitor() -> type[Any]:
    """
    A subclass of L{ProcessMonitor} whose C{stopService} fires once every
    child has exited (the stock one returns before they have), and which
    tells its C{exitObservers} of each exit.

    Private name: C{ProcessMonitor._monitoredProcessExited}, the method the
    monitor's process protocols call when a child exits.  It is the only
    place that learns of an exit; no public hook exists.

    Made on first use: importing C{twisted.runner.procmon} imports the
    global reactor (its constructor's default), which only the composition
    root may pick.
    """
    global _WaitingProcessMonitor
    if _WaitingProcessMonitor is not None:
        return _WaitingProcessMonitor
    from twisted.runner.procmon import ProcessMonitor

    class WaitingProcessMonitor(ProcessMonitor):  # type: ignore[misc]
        def __init__(self, reactor: Any) -> None:
            super().__init__(reactor)
            self._exitWaiters: list[Deferred[None]] = []
            self.exitObservers: list[Callable[[str, Failure | None], None]] = []

        def _monitoredProcessExited(
            self, name: str, reason: Failure | None = None
        ) -> None:
            super()._monitoredProcessExited(name, reason)
            for observer in list(self.exitObservers):
                observer(name, reason)
            if not self.protocols and self._exitWaiters:
                waiters, self._exitWaiters = self._exitWaiters, []
                for d in waiters:
                    d.callback(None)

        def stopService(self) -> Deferred[None]:  # type: ignore[override]
            super().stopService()
            if not self.protocols:
                return succeed(None)
            d: Deferred[None] = Deferred()
            self._exitWaiters.append(d)
            return d

    _WaitingProcessMonitor = WaitingProcessMonitor
    return WaitingProcessMonitor


_WaitingProcessMonitor: type[Any] | None = None

# --------------------------------------------------------------------------
# txaioetcd and treq
#
# txaioetcd 18.10.2 is the etcd library the project is built on.  Its
# request types and response parsers are sound, its client and watch are not
# (see revproxy.etcd.client); the private names it keeps its request
# assemblers and parsers under are reached through the helpers below.
#
# Each helper imports txaioetcd when called, not when this module is
# imported: importing txaioetcd takes about a quarter of a second (it pulls
# numpy), and revproxy.tap, which twistd imports to list its plugins, must
# stay quick to import.  Only revproxy.etcd.client calls these.


__all__ += [
    "etcdDeleteRequest",
    "etcdPutRequest",
    "etcdStatusRequest",
    "etcdTxnHeader",
    "etcdTxnRequest",
    "parseEtcdDeleted",
    "parseEtcdRange",
    "parseEtcdRevision",
    "parseEtcdStatus",
]

_EtcdJSON = dict[str, Any]

#: The base URL given to txaioetcd's request assemblers, which want one; we
#: send the bodies they build to URLs of our own (see revproxy.etcd.client).
_NO_URL = ""


def etcdStatusRequest() -> _EtcdJSON:
    """
    The body of a C{maintenance/status} call.

    Private: C{txaioetcd._client_commons.StatusRequestAssembler}.  txaioetcd's
    public C{Client.status} builds it and posts it itself, through the global
    reactor under C{/v3alpha/}; the assembler is the part of it that works.
    """
    from txaioetcd import _client_commons  # type: ignore[import-untyped]

    body: _EtcdJSON = _client_commons.StatusRequestAssembler(_NO_URL).data
    return body


def etcdPutRequest(key: bytes, value: bytes) -> _EtcdJSON:
    """
    The body of a C{kv/put} call setting C{key} to C{value}.

    Private: C{txaioetcd._client_commons.PutRequestAssembler}, for the same
    reason as L{etcdStatusRequest}.
    """
    from txaioetcd import _client_commons

    body: _EtcdJSON = _client_commons.PutRequestAssembler(_NO_URL, key, value).data
    return body


def etcdDeleteRequest(keySet: Any) -> _EtcdJSON:
    """
    The body of a C{kv/deleterange} call deleting a C{txaioetcd.KeySet}.

    Private: C{txaioetcd._client_commons.DeleteRequestAssembler}, for the
    same reason as L{etcdStatusRequest}.
    """
    from txaioetcd import _client_commons

    body: _EtcdJSON = _client_commons.DeleteRequestAssembler(_NO_URL, keySet).data
    return body


def etcdTxnRequest(transaction: Any) -> _EtcdJSON:
    """
    The body of a C{kv/txn} call applying a C{txaioetcd.Transaction}.

    Private: C{Transaction._marshal}, which C{Client.submit} uses to build
    the body before posting it (through the global reactor).
    """
    body: _EtcdJSON = transaction._marshal()
    return body


def etcdTxnHeader(answer: _EtcdJSON) -> Any:
    """
    The C{txaioetcd.Header} of a C{kv/txn} answer (L{None} if it has none),
    after txaioetcd's checks of the answer's responses.

    Private: C{txaioetcd._client_commons.validate_client_submit_response},
    the parser C{Client.submit} applies to the answer.
    """
    from txaioetcd import _client_commons

    header, _ = _client_commons.validate_client_submit_response(answer)
    return header


def parseEtcdStatus(answer: _EtcdJSON) -> Any:
    """
    A C{txaioetcd.Status} from a C{maintenance/status} answer: we use its
    C{version}, C{leader}, C{raft_term} and C{header}.

    Private: C{Status._parse}, the parser of C{Client.status}; txaioetcd has
    no public constructor from an answer.
    """
    import txaioetcd

    return txaioetcd.Status._parse(answer)


def parseEtcdRange(answer: _EtcdJSON) -> Any:
    """
    A C{txaioetcd.Range} from a C{kv/range} answer: we use its C{header} and
    its C{kvs} (each with C{key}, C{value}, L{None} when the gateway left an
    empty value out, and C{mod_revision}).

    Private: C{Range._parse}, the parser of C{Client.get}.
    """
    import txaioetcd

    return txaioetcd.Range._parse(answer)


def parseEtcdRevision(answer: _EtcdJSON) -> Any:
    """
    A C{txaioetcd.Revision} from a C{kv/put} answer: we use its C{header}.

    Private: C{Revision._parse}, the parser of C{Client.set}.
    """
    import txaioetcd

    return txaioetcd.Revision._parse(answer)


def parseEtcdDeleted(answer: _EtcdJSON) -> Any:
    """
    A C{txaioetcd.Deleted} from a C{kv/deleterange} answer: we use its
    C{header} and C{deleted}.

    Private: C{Deleted._parse}, the parser of C{Client.delete}.
    """
    import txaioetcd

    return txaioetcd.Deleted._parse(answer)
