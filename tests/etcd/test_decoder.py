"""
Tests for L{revproxy.etcd.decoder}: the watch stream decoder.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.decoder import WatchStreamDecoder
from revproxy.etcd.types import (
    WatchCanceled,
    WatchError,
    WatchEvents,
    WatchProgress,
)
from tests.etcd.gateway import (
    DELETE_6,
    EXPECTED,
    PUT_5,
    STREAM,
    events_line,
    header,
    line,
    put_event,
)


class WatchStreamDecoderTests(SynchronousTestCase):
    """
    Tests for L{WatchStreamDecoder}.
    """

    def test_whole(self) -> None:
        """
        A stream in one read decodes into its messages, in order.
        """
        self.assertEqual(WatchStreamDecoder().feed(STREAM), EXPECTED)

    def test_every_split(self) -> None:
        """
        A stream cut into two reads at any byte decodes into the same messages.
        """
        for cut in range(len(STREAM) + 1):
            decoder = WatchStreamDecoder()
            got = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
            self.assertEqual(got, EXPECTED, f"cut at {cut}")
            self.assertEqual(decoder.finish(), [])

    def test_byte_by_byte(self) -> None:
        """
        A stream fed one byte at a time decodes into the same messages.
        """
        decoder = WatchStreamDecoder()
        got = []
        for i in range(len(STREAM)):
            got.extend(decoder.feed(STREAM[i : i + 1]))
        self.assertEqual(got, EXPECTED)

    def test_txaioetcd_loses_split_message(self) -> None:
        """
        txaioetcd's receiver drops an event split across two reads, which ours
        delivers (the regression that made us write our own).
        """
        from txaioetcd._client_tx import _StreamingReceiver

        cut = len(PUT_5) // 2
        theirs: list[Any] = []
        receiver = _StreamingReceiver(theirs.append)
        receiver.dataReceived(PUT_5[:cut])
        receiver.dataReceived(PUT_5[cut:])
        self.assertEqual(theirs, [])

        decoder = WatchStreamDecoder()
        ours = decoder.feed(PUT_5[:cut]) + decoder.feed(PUT_5[cut:])
        self.assertEqual(ours, [EXPECTED[1]])

    def test_delete_is_delete(self) -> None:
        """
        A DELETE decodes as a DELETE of its key with an empty value, not as a
        value of None (which is all txaioetcd's receiver reports).
        """
        from txaioetcd._client_tx import _StreamingReceiver

        theirs: list[Any] = []
        _StreamingReceiver(theirs.append).dataReceived(DELETE_6)
        self.assertEqual([(kv.key, kv.value) for kv in theirs], [(b"/hosts/a/1", None)])

        [message] = WatchStreamDecoder().feed(DELETE_6)
        self.assertEqual(message, EXPECTED[2])

    def test_empty_value(self) -> None:
        """
        A PUT of an empty value (which the gateway omits) has the value C{b""}.
        """
        [message] = WatchStreamDecoder().feed(events_line(7, put_event(b"k", b"", 7)))
        assert isinstance(message, WatchEvents)
        self.assertEqual(message.events[0].value, b"")

    def test_no_trailing_newline(self) -> None:
        """
        A message without its newline waits for more data, or for the end.
        """
        decoder = WatchStreamDecoder()
        self.assertEqual(decoder.feed(PUT_5.rstrip(b"\n")), [])
        self.assertEqual(decoder.feed(b"\n"), [EXPECTED[1]])
        self.assertEqual(decoder.feed(PUT_5.rstrip(b"\n")), [])
        self.assertEqual(decoder.finish(), [EXPECTED[1]])
        self.assertEqual(decoder.finish(), [])

    def test_compacted(self) -> None:
        """
        A cancellation for compaction reports the compaction revision.
        """
        data = line(
            {
                "result": {
                    "header": {"raft_term": "2"},
                    "canceled": True,
                    "compact_revision": "19",
                }
            }
        )
        self.assertEqual(WatchStreamDecoder().feed(data), [WatchCanceled(0, 19, "")])

    def test_canceled(self) -> None:
        """
        A cancellation without compaction reports etcd's reason.
        """
        data = line(
            {"result": {"header": header(9), "canceled": True, "cancel_reason": "gone"}}
        )
        self.assertEqual(
            WatchStreamDecoder().feed(data), [WatchCanceled(9, None, "gone")]
        )

    def test_error(self) -> None:
        """
        An error object in the stream is reported with its code and message.
        """
        data = line(
            {
                "error": {
                    "grpc_code": 14,
                    "http_code": 503,
                    "message": "etcdserver: no leader",
                    "http_status": "Service Unavailable",
                }
            }
        )
        self.assertEqual(
            WatchStreamDecoder().feed(data), [WatchError(14, "etcdserver: no leader")]
        )

    def test_progress(self) -> None:
        """
        A message with only a header is a progress notification.
        """
        data = line({"result": {"header": header(42)}})
        self.assertEqual(WatchStreamDecoder().feed(data), [WatchProgress(42)])

    def test_bad_json(self) -> None:
        """
        Undecodable messages become errors, and the messages after them decode.
        """
        for bad in [
            b"{nope\n",
            b"[1]\n",
            b'{"other": 1}\n',
            line({"result": {"events": [{"kv": {"key": "!!"}}]}}),
            line({"result": {"events": [{"type": "MOVE", "kv": {"key": ""}}]}}),
        ]:
            messages = WatchStreamDecoder().feed(bad + PUT_5)
            self.assertEqual(len(messages), 2, bad)
            assert isinstance(messages[0], WatchError)
            self.assertIsNone(messages[0].code)
            self.assertEqual(messages[1], EXPECTED[1])

    def test_oversized(self) -> None:
        """
        A message growing beyond the limit without a newline is an error.
        """
        decoder = WatchStreamDecoder(maxMessageSize=10)
        self.assertEqual(decoder.feed(b'{"result":'), [])
        [message] = decoder.feed(b" {}")
        assert isinstance(message, WatchError)
