"""
Tests for L{revproxy.etcd.watch}: the watch on an in-memory gateway.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from revproxy.etcd.types import (
    EndReason,
    IWatch,
    WatchEnded,
    WatchError,
    WatchEvent,
    WatchEvents,
)
from tests.etcd.gateway import (
    DELETE_6,
    EXPECTED,
    PUT_5,
    ClientTestsMixin,
    b64,
    events_line,
    header,
    line,
    put_event,
)


class EtcdWatchTests(ClientTestsMixin, SynchronousTestCase):
    """
    Tests for L{EtcdClient.watch}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.batches: list[WatchEvents] = []
        self.progress: list[int] = []

    def start(self, revision: int = 5) -> Any:
        watch = self.client.watch(
            b"/hosts/", revision, self.batches.append, self.progress.append
        )
        self.traversal.flush()
        return watch

    def send(self, data: bytes) -> None:
        self.gateway.watches[-1].write(data)
        self.traversal.flush()

    def events(self) -> list[WatchEvent]:
        return [e for b in self.batches for e in b.events]

    def test_interface(self) -> None:
        """
        The watch provides L{IWatch}.
        """
        verifyObject(IWatch, self.start())

    def test_request(self) -> None:
        """
        The watch asks for the prefix's range from the start revision, with
        progress notifications, and requires a leader.
        """
        self.start(5)
        host, path, body = self.gateway.requests[-1]
        self.assertEqual(path, "/v3/watch")
        self.assertEqual(
            body,
            {
                "create_request": {
                    "key": b64(b"/hosts/"),
                    "range_end": b64(b"/hosts0"),
                    "start_revision": "5",
                    "progress_notify": True,
                }
            },
        )
        self.assertEqual(
            self.gateway.headers[-1][b"Grpc-Metadata-Hasleader"], [b"true"]
        )

    def test_split_events(self) -> None:
        """
        Events arrive in order even when the stream splits their messages.
        """
        watch = self.start()
        data = PUT_5 + DELETE_6
        self.send(data[:7])
        self.send(data[7 : len(PUT_5) + 3])
        self.send(data[len(PUT_5) + 3 :])
        self.assertEqual(
            [b.events[0] for b in self.batches], [e.events[0] for e in EXPECTED[1:]]
        )  # type: ignore[union-attr]
        self.assertEqual(watch.nextRevision, 7)

    def test_duplicates_dropped(self) -> None:
        """
        Events at or below a revision already delivered are not delivered
        again, nor events from before the start revision.
        """
        self.start(5)
        self.send(events_line(4, put_event(b"/hosts/old", b"x", 4)))
        self.send(PUT_5 + PUT_5 + DELETE_6)
        self.assertEqual([e.modRevision for e in self.events()], [5, 6])

    def test_progress(self) -> None:
        """
        A progress notification reaches C{onProgress} and advances
        C{nextRevision}.
        """
        watch = self.start(5)
        self.send(line({"result": {"header": header(40)}}))
        self.assertEqual(self.progress, [40])
        self.assertEqual(watch.nextRevision, 41)

    def test_compacted(self) -> None:
        """
        A cancellation for compaction ends the watch as COMPACTED with the
        compaction revision, and closes the stream etcd leaves open.
        """
        watch = self.start(2)
        lost: list[Failure] = []
        self.gateway.watches[-1].notifyFinish().addErrback(lost.append)
        self.send(
            line({"result": {"header": {}, "canceled": True, "compact_revision": "19"}})
        )
        ended = self.successResultOf(watch.ended)
        self.assertEqual(
            ended, WatchEnded(EndReason.COMPACTED, 2, 19, None, "revision 2 compacted")
        )
        self.assertEqual(len(lost), 1)

    def test_error(self) -> None:
        """
        An error in the stream ends the watch as ERROR, with etcd's error.
        """
        watch = self.start()
        self.send(
            line(
                {
                    "error": {
                        "grpc_code": 14,
                        "http_code": 503,
                        "message": "etcdserver: no leader",
                    }
                }
            )
        )
        ended = self.successResultOf(watch.ended)
        self.assertEqual(ended.reason, EndReason.ERROR)
        self.assertEqual(ended.error, WatchError(14, "etcdserver: no leader"))

    def test_bad_message(self) -> None:
        """
        An undecodable message ends the watch as ERROR; nothing after it is
        delivered.
        """
        watch = self.start()
        self.send(b"{garbage\n" + PUT_5)
        ended = self.successResultOf(watch.ended)
        self.assertEqual(ended.reason, EndReason.ERROR)
        self.assertEqual(self.batches, [])

    def test_callback_exception(self) -> None:
        """
        An exception from the callback is logged, not swallowed: the watch
        ends failing with it, and its connection is closed.
        """

        def explode(batch: WatchEvents) -> None:
            raise ZeroDivisionError("boom")

        watch = self.client.watch(b"/hosts/", 5, explode)
        self.traversal.flush()
        lost: list[Failure] = []
        self.gateway.watches[-1].notifyFinish().addErrback(lost.append)
        self.send(PUT_5 + DELETE_6)
        self.failureResultOf(watch.ended, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(lost), 1)

    def test_stream_closed(self) -> None:
        """
        A stream that etcd ends is reported as CONNECTION_LOST, with the
        revision to resume from.
        """
        watch = self.start(5)
        self.send(PUT_5)
        self.gateway.watches[-1].finish()
        self.traversal.flush()
        ended = self.successResultOf(watch.ended)
        self.assertEqual(
            (ended.reason, ended.nextRevision), (EndReason.CONNECTION_LOST, 6)
        )

    def test_cancel_streaming(self) -> None:
        """
        Cancelling a running watch closes its connection, then ends it as
        CANCELLED; no timer is left.
        """
        watch = self.start()
        lost: list[Failure] = []
        self.gateway.watches[-1].notifyFinish().addErrback(lost.append)
        watch.cancel()
        self.traversal.flush()
        self.assertEqual(self.successResultOf(watch.ended).reason, EndReason.CANCELLED)
        self.assertEqual(len(lost), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_cancel_before_response(self) -> None:
        """
        Cancelling a watch before etcd answers cancels the request.
        """
        self.gateway.hold.add("watch")
        watch = self.start()
        self.assertNoResult(watch.ended)
        watch.cancel()
        self.assertEqual(self.successResultOf(watch.ended).reason, EndReason.CANCELLED)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """
        A watch that etcd refuses with an HTTP error ends as ERROR.
        """
        self.gateway.answers["watch"] = (
            503,
            {"error": "no leader", "code": 14, "message": "no leader"},
        )
        ended = self.successResultOf(self.start().ended)
        self.assertEqual(
            (ended.reason, ended.error), (EndReason.ERROR, WatchError(14, "no leader"))
        )

    def test_unreachable(self) -> None:
        """
        A watch with no reachable endpoint ends as CONNECTION_LOST.
        """
        self.agent.down.update({b"etcd1", b"etcd2"})
        ended = self.successResultOf(self.start(3).ended)
        self.assertEqual(
            (ended.reason, ended.nextRevision), (EndReason.CONNECTION_LOST, 3)
        )
