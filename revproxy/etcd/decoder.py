# -*- test-case-name: tests.etcd.test_decoder -*-
"""
Decoding what etcd's gRPC-JSON gateway sends, with no I/O: the messages of
a watch stream (L{decodeWatchMessage}, and L{WatchStreamDecoder}, which
buffers a stream cut into reads anywhere, where txaioetcd's receiver drops
a message split across two reads), and the answer to a unary call
(L{parseUnaryAnswer}, which raises L{EtcdError} for every error answer,
where txaioetcd parses one as an empty result).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from revproxy.etcd.types import (
    EtcdError,
    EventType,
    WatchCanceled,
    WatchCreated,
    WatchError,
    WatchEvent,
    WatchEvents,
    WatchMessage,
    WatchProgress,
)

__all__ = [
    "decodeWatchMessage",
    "isEtcdAnswer",
    "int64Field",
    "parseUnaryAnswer",
    "WatchStreamDecoder",
]

JSON = dict[str, Any]


def int64Field(value: object) -> int:
    """
    An int64 field of the gateway's JSON: a decimal string, or absent (0).
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _decodeEvent(event: JSON) -> WatchEvent:
    kv = event.get("kv")
    if not isinstance(kv, dict) or "key" not in kv:
        raise ValueError("event without a key")
    kind = event.get("type", "PUT")
    return WatchEvent(
        type=EventType(kind),
        key=base64.b64decode(kv["key"], validate=True),
        value=base64.b64decode(kv.get("value", ""), validate=True),
        modRevision=int64Field(kv.get("mod_revision")),
    )


def decodeWatchMessage(line: bytes) -> WatchMessage:
    """
    Decode one message of a gateway watch stream.  Never raises: what cannot
    be decoded becomes a L{WatchError} with a C{code} of L{None}.
    """
    try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        if "error" in obj:
            error = obj["error"]
            if not isinstance(error, dict):
                return WatchError(None, str(error))
            code = error.get("grpc_code", error.get("code"))
            return WatchError(
                None if code is None else int64Field(code), str(error.get("message", ""))
            )
        result = obj.get("result")
        if not isinstance(result, dict):
            raise ValueError("neither result nor error")
        header = result.get("header") or {}
        revision = int64Field(header.get("revision"))
        compactRevision = int64Field(result.get("compact_revision"))
        if result.get("canceled") or compactRevision:
            return WatchCanceled(
                revision=revision,
                compactRevision=compactRevision or None,
                reason=str(result.get("cancel_reason", "")),
            )
        if result.get("created"):
            return WatchCreated(revision, int64Field(result.get("watch_id")))
        events = result.get("events")
        if events:
            return WatchEvents(revision, tuple(_decodeEvent(e) for e in events))
        return WatchProgress(revision)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        shown = line[:200]
        return WatchError(None, f"undecodable watch message {shown!r}: {e}")


class WatchStreamDecoder:
    """
    A buffered decoder of a gateway watch stream: newline-delimited JSON
    objects, cut into reads anywhere.  No I/O: L{feed} it bytes, get messages.

    A message without its trailing newline waits in the buffer for more data,
    or for L{finish}.  A message that grows beyond C{maxMessageSize} bytes
    without a newline becomes a L{WatchError}, and the buffer is dropped.
    """

    def __init__(self, maxMessageSize: int = 64 * 1024 * 1024) -> None:
        self._max = maxMessageSize
        self._pending: list[bytes] = []
        self._pendingSize = 0

    def feed(self, data: bytes) -> list[WatchMessage]:
        """
        Add the bytes of one read; return the messages they complete.
        """
        messages: list[WatchMessage] = []
        start = 0
        newline = data.find(b"\n")
        while newline != -1:
            if self._pending:
                self._pending.append(data[start:newline])
                line = b"".join(self._pending)
                self._pending = []
                self._pendingSize = 0
            else:
                line = data[start:newline]
            if line.strip():
                messages.append(decodeWatchMessage(line))
            start = newline + 1
            newline = data.find(b"\n", start)
        if start < len(data):
            rest = data[start:]
            self._pending.append(rest)
            self._pendingSize += len(rest)
            if self._pendingSize > self._max:
                self._pending = []
                self._pendingSize = 0
                messages.append(
                    WatchError(
                        None,
                        f"watch message longer than {self._max} bytes",
                    )
                )
        return messages

    def finish(self) -> list[WatchMessage]:
        """
        The stream has ended: decode what is left in the buffer, if anything.
        """
        line = b"".join(self._pending)
        self._pending = []
        self._pendingSize = 0
        if line.strip():
            return [decodeWatchMessage(line)]
        return []


def parseUnaryAnswer(code: int, content: bytes) -> JSON:
    """
    The JSON object of a unary call's answer with HTTP status C{code}.

    @raise EtcdError: for any answer but a 200 with a JSON object.
    """
    try:
        obj = json.loads(content)
    except ValueError:
        obj = None
    if code == 200 and isinstance(obj, dict):
        return obj
    if isinstance(obj, dict):
        raw = obj.get("code")
        message = obj.get("message") or obj.get("error") or ""
        raise EtcdError(None if raw is None else int64Field(raw), str(message), code)
    # Not etcd's JSON: say so in one line, without the body (an HTML page
    # would fill the log on every retry).
    text = content[:200].decode("utf-8", "replace").strip()
    if not text or "\n" in text or text.lstrip().startswith("<"):
        raise EtcdError(
            None, f"not an etcd answer (HTTP {code}, {len(content)} bytes that are not JSON)", code
        )
    raise EtcdError(None, text, code)


def isEtcdAnswer(body: bytes) -> bool:
    """
    Whether an answer to C{maintenance/status} is etcd's: a JSON object with
    a C{header} (an answer) or C{code} (a gateway error).
    """
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and ("header" in obj or "code" in obj)
