"""
Tests for L{revproxy._compat}: each private name of Twisted, treq or
txaioetcd that revproxy uses is still there and still behaves as relied on.
"""

from __future__ import annotations

import inspect
import signal
import socket
import struct
from typing import Any

from twisted.internet.base import ReactorBase
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogPublisher
from twisted.runner.test.test_procmon import DummyProcessReactor
from twisted.trial.unittest import SynchronousTestCase

from revproxy._compat import (
    acceptOneAtATime,
    clearExitSignal,
    directDispatch,
    logFilesOf,
    publisherObservers,
    quietHTTPConnectionPool,
    sendsNow,
    waitingProcessMonitor,
    writeThrough,
)


class OneAcceptTests(SynchronousTestCase):
    """
    C{tcp.Port.doRead} limits its consecutive accepts by C{numberAccepts}.
    """

    def test_acceptsOne(self) -> None:
        """
        With acceptOneAtATime, a port with three connections waiting accepts
        one per C{doRead}.
        """
        import socket

        from twisted.internet import tcp
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import MemoryReactorClock

        self.assertIn("numAccepts = self.numberAccepts", inspect.getsource(tcp.Port.doRead))
        accepted: list[Protocol] = []

        class Counting(Factory):
            noisy = False

            def buildProtocol(self, addr: object) -> Protocol:
                p = Protocol()
                accepted.append(p)
                return p

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(10)
        listening.setblocking(False)
        self.addCleanup(listening.close)
        reactor = MemoryReactorClock()
        port = tcp.Port._fromListeningDescriptor(
            reactor, listening.fileno(), socket.AF_INET, Counting()
        )
        port.startListening()
        self.addCleanup(port.socket.close)
        clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
        for c in clients:
            self.addCleanup(c.close)
        acceptOneAtATime(port)
        port.doRead()
        self.assertEqual(len(accepted), 1)
        port.doRead()
        self.assertEqual(len(accepted), 2)
        for p in accepted:
            p.transport.abortConnection()  # type: ignore[union-attr]
        reactor.advance(0)


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

    def test_logFilesOf(self) -> None:
        """
        A FileLogObserver keeps the file it writes to in C{_outFile}, and the
        log files among a publisher's observers are found.
        """
        import tempfile

        from twisted.logger import FileLogObserver, textFileLogObserver
        from twisted.python.logfile import LogFile

        directory = tempfile.mkdtemp(prefix="revproxy-test-")
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        logFile = LogFile("t.log", directory)
        self.addCleanup(logFile.close)
        observer = textFileLogObserver(logFile)
        self.assertIsInstance(observer, FileLogObserver)
        self.assertIs(observer._outFile, logFile)
        publisher = LogPublisher([].append, observer)
        self.assertEqual(logFilesOf(publisher), [logFile])
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

    def test_quietConnectionPool(self) -> None:
        """
        The HTTP connection pool makes its connections with the factory
        class in C{_factory}, which quietHTTPConnectionPool replaces with a
        quiet one; the pool is persistent.
        """
        from twisted.internet.protocol import Factory
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import HTTPConnectionPool

        self.assertTrue(issubclass(HTTPConnectionPool._factory, Factory))
        self.assertIn("self._factory", inspect.getsource(HTTPConnectionPool._newConnection))
        pool = quietHTTPConnectionPool(MemoryReactorClock())
        self.assertIsInstance(pool, HTTPConnectionPool)
        self.assertTrue(pool.persistent)
        self.assertFalse(pool._factory.noisy)
        self.assertTrue(issubclass(pool._factory, HTTPConnectionPool._factory))


def serverConnection(case: SynchronousTestCase, reactor: Any) -> tuple[Any, socket.socket]:
    """
    A Twisted server transport on C{reactor} over a real loopback
    connection, and the client's socket, closed when C{case} ends.
    """
    from twisted.internet import tcp

    listening = socket.socket()
    case.addCleanup(listening.close)
    listening.bind(("127.0.0.1", 0))
    listening.listen(1)
    client = socket.create_connection(listening.getsockname())
    case.addCleanup(client.close)
    client.settimeout(5)
    accepted, peer = listening.accept()
    case.addCleanup(accepted.close)
    accepted.setblocking(False)
    transport = tcp.Server(accepted, Protocol(), peer, None, 1, reactor)  # type: ignore[arg-type]
    return transport, client


class WriteThroughTests(SynchronousTestCase):
    """
    L{writeThrough} sends at once on a plain TCP transport with nothing
    buffered, and otherwise leaves the bytes to the transport, in order.
    """

    def connection(self) -> tuple[Any, Any, MemoryReactorClock]:
        """
        A Twisted server transport over a real loopback connection, on a
        memory reactor (which records its readers and writers), and the
        client's socket.
        """
        reactor = MemoryReactorClock()
        transport, client = serverConnection(self, reactor)
        return transport, client, reactor

    def test_privateNames(self) -> None:
        """
        The buffer and state that say a transport holds nothing are where
        writeThrough looks.
        """
        from twisted.internet import abstract, tcp

        transport, client, reactor = self.connection()
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(transport.dataBuffer, b"")
        self.assertFalse(transport._writeDisconnected)
        self.assertFalse(transport.TLS)
        self.assertIn("self._tempDataBuffer.append(data)", inspect.getsource(abstract.FileDescriptor.write))
        self.assertIn("self._writeDisconnected", inspect.getsource(abstract.FileDescriptor.write))
        self.assertIn("if self.TLS:", inspect.getsource(tcp.Connection.write))

    def test_sentAtOnce(self) -> None:
        """
        With nothing buffered, the bytes are on the socket when
        writeThrough returns, and the reactor is not asked to watch for
        writability.
        """
        transport, client, reactor = self.connection()
        writeThrough(transport, b"hello")
        self.assertEqual(client.recv(100), b"hello")
        self.assertNotIn(transport, reactor.getWriters())

    def test_afterBufferedBytes(self) -> None:
        """
        Behind bytes the transport holds, the bytes are buffered after them.
        """
        transport, client, reactor = self.connection()
        transport.write(b"first ")
        writeThrough(transport, b"second")
        self.assertIn(transport, reactor.getWriters())
        transport.doWrite()
        self.assertEqual(client.recv(100), b"first second")

    def test_partialSend(self) -> None:
        """
        What the socket does not take is buffered by the transport and
        written, in order, when the socket drains.
        """
        transport, client, reactor = self.connection()
        data = bytes(range(256)) * 40000  # more than any socket buffer
        writeThrough(transport, data)
        self.assertIn(transport, reactor.getWriters())
        received = b""
        while len(received) < len(data):
            transport.doWrite()
            received += client.recv(1 << 20)
        self.assertEqual(received, data)

    def test_sendError(self) -> None:
        """
        A send that fails leaves the bytes to the transport, whose own write
        meets the error and reports the connection lost.
        """
        transport, client, reactor = self.connection()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        lost = []
        transport.protocol.connectionLost = lost.append  # type: ignore[method-assign]
        for _ in range(3):  # the first send may still succeed (the RST is on its way)
            writeThrough(transport, b"x" * 1000)
            if transport in reactor.getWriters():
                break
        self.assertIn(transport, reactor.getWriters())
        reason = transport.doWrite()
        self.assertIsNotNone(reason)

    def test_otherTransports(self) -> None:
        """
        A transport that is not plain TCP (a test's, a TLS wrapper) gets an
        ordinary write.
        """
        transport = StringTransport()
        writeThrough(transport, b"hello")
        self.assertEqual(transport.value(), b"hello")


class DirectDispatchTests(SynchronousTestCase):
    """
    L{directDispatch} replaces an epoll reactor's poll with one that calls
    the handler of each ready descriptor directly.
    """

    def test_privateNames(self) -> None:
        """
        C{EPollReactor.doPoll} still polls C{_poller} and hands each ready
        descriptor of C{_selectables} to C{_doReadOrWrite}, through
        C{log.callWithLogger}: what the replacement does without the last.
        """
        from twisted.internet.epollreactor import EPollReactor

        source = inspect.getsource(EPollReactor.doPoll)
        self.assertIn("l = self._poller.poll(timeout, len(self._selectables))", source)
        self.assertIn("selectable = self._selectables[fd]", source)
        self.assertIn("log.callWithLogger(selectable, _drdw, selectable, fd, event)", source)
        self.assertIn("doIteration = doPoll", inspect.getsource(EPollReactor))

    def test_dispatches(self) -> None:
        """
        Data on a connection reaches its reader through the replaced poll,
        outside any logging context of its own.
        """
        from twisted.internet.epollreactor import EPollReactor
        from twisted.python import context, log

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertTrue(directDispatch(reactor))
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        seen: list[object] = []

        class Reader:
            def fileno(self) -> int:
                return ours.fileno()

            def doRead(self) -> None:
                seen.append(ours.recv(100))
                seen.append(context.get(log.ILogContext)["system"])

            def logPrefix(self) -> str:
                return "Reader"

            def connectionLost(self, reason: object) -> None:
                pass

        reader = Reader()
        reactor.addReader(reader)  # type: ignore[arg-type]
        theirs.send(b"hello")
        reactor.doIteration(1)
        reactor.removeReader(reader)  # type: ignore[arg-type]
        self.assertEqual(seen, [b"hello", "-"])

    def test_otherReactors(self) -> None:
        """
        Any other reactor is left alone.
        """
        clock = MemoryReactorClock()
        self.assertFalse(directDispatch(clock))
        self.assertNotIn("doIteration", vars(clock))


class BatchedWriteTests(SynchronousTestCase):
    """
    On a reactor that L{directDispatch} changed, L{writeThrough} queues the
    bytes of a transport that holds nothing, and the end of the reactor's
    turn sends them, in order with anything written to the transport since.
    """

    def connection(self) -> tuple[Any, Any, Any]:
        """
        A Twisted server transport over a real loopback connection, on an
        epoll reactor that batches writes (not running), and the client's
        socket.
        """
        from twisted.internet.epollreactor import EPollReactor

        import revproxy._compat as compat

        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.patch(compat, "_batching", reactor)
        self.addCleanup(compat._queued.clear)
        transport, client = serverConnection(self, reactor)
        return transport, client, reactor

    def _pending(self, client: socket.socket) -> bytes:
        client.setblocking(False)
        try:
            return client.recv(1 << 20)
        except BlockingIOError:
            return b""
        finally:
            client.settimeout(5)

    def test_queuedUntilTheTurnEnds(self) -> None:
        """
        Nothing is sent before the end of the turn, then every write of the
        turn, in order, without the reactor watching for writability.
        """
        from revproxy._compat import _flushWrites

        transport, client, reactor = self.connection()
        writeThrough(transport, b"one ")
        writeThrough(transport, b"two")
        self.assertEqual(self._pending(client), b"")
        _flushWrites()
        self.assertEqual(client.recv(100), b"one two")
        self.assertNotIn(transport, reactor.getWriters())

    def test_directWriteAfterwards(self) -> None:
        """
        Bytes written to the transport itself after queued ones go after
        them.
        """
        from revproxy._compat import _flushWrites

        transport, client, reactor = self.connection()
        writeThrough(transport, b"first ")
        transport.write(b"second ")
        writeThrough(transport, b"third")
        _flushWrites()
        self.assertIn(transport, reactor.getWriters())
        transport.doWrite()
        self.assertEqual(client.recv(100), b"first second third")

    def test_restBuffered(self) -> None:
        """
        What the socket does not take goes to the transport's buffer, in
        order, and the reactor watches for writability.
        """
        from revproxy._compat import _flushWrites

        transport, client, reactor = self.connection()
        data = bytes(range(256)) * 40_000
        writeThrough(transport, data)
        _flushWrites()
        self.assertIn(transport, reactor.getWriters())
        got = b""
        while len(got) < len(data):
            got += client.recv(1 << 20)
            transport.doWrite()
        self.assertEqual(got, data)

    def test_notSendsNowWhileQueued(self) -> None:
        """
        A transport with queued bytes does not take bytes into its socket
        directly (a spliced body): they would overtake the queued ones.
        """
        from revproxy._compat import _flushWrites

        transport, client, reactor = self.connection()
        self.assertTrue(sendsNow(transport))
        writeThrough(transport, b"head")
        self.assertFalse(sendsNow(transport))
        _flushWrites()
        self.assertTrue(sendsNow(transport))

    def test_lostConnectionDropped(self) -> None:
        """
        The queued bytes of a connection lost before the end of the turn
        are dropped.
        """
        from revproxy._compat import _flushWrites

        transport, client, reactor = self.connection()
        writeThrough(transport, b"late")
        transport.connected = False
        _flushWrites()
        self.assertEqual(self._pending(client), b"")

    def test_abortedDropped(self) -> None:
        """
        An aborted connection's queued bytes are dropped, as its buffer is;
        and it takes no more at once.
        """
        from twisted.internet import tcp

        from revproxy._compat import _flushWrites

        transport, client, reactor = self.connection()
        writeThrough(transport, b"late")
        transport.abortConnection()
        self.assertIn("self._aborting = True", inspect.getsource(tcp.Connection.abortConnection))
        self.assertFalse(sendsNow(transport))
        _flushWrites()
        self.assertEqual(self._pending(client), b"")

    def test_turnSends(self) -> None:
        """
        The replaced poll sends what was queued, at the end of its turn.
        """
        import revproxy._compat as compat

        transport, client, reactor = self.connection()
        self.assertTrue(directDispatch(reactor))
        self.addCleanup(setattr, compat, "_batching", compat._batching)
        writeThrough(transport, b"hello")
        reactor.doIteration(0)
        self.assertEqual(client.recv(100), b"hello")

    def test_privateNames(self) -> None:
        """
        A transport's own write appends to C{_tempDataBuffer} and counts in
        C{_tempDataLen}, what the queued bytes are put in front of.
        """
        from twisted.internet import abstract

        source = inspect.getsource(abstract.FileDescriptor.write)
        self.assertIn("self._tempDataBuffer.append(data)", source)
        self.assertIn("self._tempDataLen += len(data)", source)
        transport, _, _ = self.connection()
        self.assertEqual(transport._tempDataLen, 0)


class EtcdLibraryPrivatesTests(SynchronousTestCase):
    """
    The private names of txaioetcd and treq that revproxy relies on.
    """

    def test_etcdImportedLazily(self) -> None:
        """
        Importing revproxy._compat or revproxy.tap does not import txaioetcd.
        """
        import subprocess
        import sys

        code = (
            "import sys, revproxy._compat, revproxy.tap; "
            "print('txaioetcd' in sys.modules)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        self.assertEqual(result.stdout.strip(), "False")

    def test_statusRequest(self) -> None:
        """
        txaioetcd's StatusRequestAssembler builds an empty status body.
        """
        from revproxy._compat import etcdStatusRequest

        self.assertEqual(etcdStatusRequest(), {})

    def test_putRequest(self) -> None:
        """
        txaioetcd's PutRequestAssembler builds a body of the base64 key and
        value, and nothing else.
        """
        from revproxy._compat import etcdPutRequest

        self.assertEqual(
            etcdPutRequest(b"/hosts/a/h:1", b'{"weight": 2}'),
            {"key": "L2hvc3RzL2EvaDox", "value": "eyJ3ZWlnaHQiOiAyfQ=="},
        )
        self.assertEqual(etcdPutRequest(b"k", b""), {"key": "aw==", "value": ""})

    def test_deleteRequest(self) -> None:
        """
        txaioetcd's DeleteRequestAssembler builds the body of a KeySet: the
        key alone, or the key and the range end.
        """
        import txaioetcd  # type: ignore[import-untyped]

        from revproxy._compat import etcdDeleteRequest

        self.assertEqual(etcdDeleteRequest(txaioetcd.KeySet(b"k")), {"key": "aw=="})
        self.assertEqual(
            etcdDeleteRequest(txaioetcd.KeySet(b"a/", range_end=b"a0")),
            {"key": "YS8=", "range_end": "YTA="},
        )

    def test_txnRequest(self) -> None:
        """
        Transaction._marshal builds the gateway's txn body from comparisons
        and operations, leaving out an empty failure list.
        """
        import txaioetcd

        from revproxy._compat import etcdTxnRequest

        transaction = txaioetcd.Transaction(
            compare=[
                txaioetcd.CompModified(b"k", "==", 3),
                txaioetcd.CompValue(b"k", "==", b"v"),
            ],
            success=[
                txaioetcd.OpSet(b"k", b"v"),
                txaioetcd.OpDel(b"k"),
                txaioetcd.OpDel(txaioetcd.KeySet(b"a/", range_end=b"a0")),
            ],
            failure=None,
        )
        self.assertEqual(
            etcdTxnRequest(transaction),
            {
                "compare": [
                    {"key": "aw==", "result": "EQUAL", "target": "MOD",
                     "mod_revision": 3},
                    {"key": "aw==", "result": "EQUAL", "target": "VALUE",
                     "value": "dg=="},
                ],
                "success": [
                    {"request_put": {"key": "aw==", "value": "dg=="}},
                    {"request_delete_range": {"key": "aw=="}},
                    {"request_delete_range": {"key": "YS8=", "range_end": "YTA="}},
                ],
            },
        )

    def test_txnHeader(self) -> None:
        """
        validate_client_submit_response gives a txn answer's header, with an
        int revision, or None when the answer has none.
        """
        from revproxy._compat import etcdTxnHeader

        answer = {
            "header": {"revision": "7", "member_id": "2"},
            "succeeded": True,
            "responses": [{"response_put": {"header": {"revision": "7"}}}],
        }
        self.assertEqual(etcdTxnHeader(answer).revision, 7)
        self.assertIsNone(etcdTxnHeader({"succeeded": False}))

    def test_parseStatus(self) -> None:
        """
        Status._parse gives the version, leader, raft term and the header's
        revision and member id, as ints where etcd sends decimal strings.
        """
        from revproxy._compat import parseEtcdStatus

        status = parseEtcdStatus(
            {
                "header": {"cluster_id": "1", "member_id": "2", "revision": "9",
                           "raft_term": "3"},
                "version": "3.5.1",
                "leader": "2",
                "raftTerm": "3",
            }
        )
        self.assertEqual(
            (status.version, status.leader, status.raft_term,
             status.header.revision, status.header.member_id),
            ("3.5.1", 2, 3, 9, 2),
        )

    def test_parseRange(self) -> None:
        """
        Range._parse gives the header's revision and each key's key, value
        (None when the gateway left an empty value out) and mod revision.
        """
        from revproxy._compat import parseEtcdRange

        result = parseEtcdRange(
            {
                "header": {"revision": "9"},
                "kvs": [
                    {"key": "YQ==", "value": "Yg==", "mod_revision": "4"},
                    {"key": "Yw==", "mod_revision": "5"},
                ],
                "count": "2",
            }
        )
        self.assertEqual(result.header.revision, 9)
        self.assertEqual(
            [(kv.key, kv.value, kv.mod_revision) for kv in result.kvs],
            [(b"a", b"b", 4), (b"c", None, 5)],
        )
        self.assertEqual(list(parseEtcdRange({"header": {"revision": "1"}}).kvs), [])

    def test_parseRevision(self) -> None:
        """
        Revision._parse gives a put answer's header and its revision.
        """
        from revproxy._compat import parseEtcdRevision

        self.assertEqual(parseEtcdRevision({"header": {"revision": "9"}}).header.revision, 9)

    def test_parseDeleted(self) -> None:
        """
        Deleted._parse gives a delete answer's header and how many keys went,
        0 when the gateway left the count out.
        """
        from revproxy._compat import parseEtcdDeleted

        deleted = parseEtcdDeleted({"header": {"revision": "9"}, "deleted": "2"})
        self.assertEqual((deleted.header.revision, deleted.deleted), (9, 2))
        self.assertEqual(parseEtcdDeleted({"header": {"revision": "9"}}).deleted, 0)


class SendsNowTests(SynchronousTestCase):
    """
    L{sendsNow} on a real Twisted transport.
    """

    connection = WriteThroughTests.connection

    def test_plainTCP(self) -> None:
        """
        An open plain TCP transport that holds nothing sends now; an
        in-memory one, or one that started TLS, does not.
        """
        transport, _, _ = self.connection()
        self.assertTrue(sendsNow(transport))
        self.assertFalse(sendsNow(StringTransport()))
        transport.TLS = True
        self.assertFalse(sendsNow(transport))

    def test_sendsNowOnlyWhenEmpty(self) -> None:
        """
        A transport that holds bytes, or is closing, does not send now.
        """
        transport, _, _ = self.connection()
        transport.write(b"held")
        self.assertFalse(sendsNow(transport))
        transport, _, _ = self.connection()
        transport.loseConnection()
        self.assertFalse(sendsNow(transport))
