# -*- test-case-name: tests.etcd.test_types -*-
"""
The vocabulary of revproxy's etcd side, with no I/O and no txaioetcd: the
errors, the results of reads and writes, transaction operations and
comparisons, watch messages and how a watch ended, and the two interfaces
every other module programs against, L{IRouteStore} (implemented by
L{revproxy.etcd.client.EtcdClient} on etcd's gateway and by
L{revproxy.etcd.memory.MemoryRouteStore} in memory) and L{IWatch}.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Union

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

__all__ = [
    "Comparison",
    "Delete",
    "DeletePrefix",
    "DeleteResult",
    "EndReason",
    "Entry",
    "EtcdError",
    "EtcdStatus",
    "EtcdTimeout",
    "EtcdUnavailable",
    "EventType",
    "ILeaseStore",
    "IRouteStore",
    "IWatch",
    "ModRevisionIs",
    "OnEvents",
    "OnProgress",
    "Operation",
    "Put",
    "Snapshot",
    "TxnResult",
    "ValueIs",
    "WatchCanceled",
    "WatchCreated",
    "WatchEnded",
    "WatchError",
    "WatchEvent",
    "WatchEvents",
    "WatchMessage",
    "WatchProgress",
    "prefixRangeEnd",
]


# --------------------------------------------------------------------------
# Errors and results


class EtcdError(Exception):
    """
    etcd (or its gateway) answered with an error.

    @ivar code: the gRPC status code, if etcd gave one.
    @ivar message: etcd's message.
    @ivar http_code: the HTTP status of the answer, if it was one.
    """

    def __init__(
        self, code: int | None, message: str, httpCode: int | None = None
    ) -> None:
        super().__init__(code, message, httpCode)
        self.code = code
        self.message = message
        self.httpCode = httpCode

    def __str__(self) -> str:
        if self.code is None:  # not one of etcd's own errors
            return self.message
        return f"etcd error {self.code} (HTTP {self.httpCode}): {self.message}"


class EtcdUnavailable(Exception):
    """
    No endpoint could be reached, or the request may not be resent after its
    endpoint failed.  C{args[0]} lists what went wrong, endpoint by endpoint.
    """

    def __str__(self) -> str:
        problems = self.args[0] if self.args else ()
        if isinstance(problems, (list, tuple)):
            return "; ".join(str(p) for p in problems) or "etcd unavailable"
        return str(problems)


class EtcdTimeout(Exception):
    """
    An etcd request got no complete answer within the client's timeout.
    """


class EventType(enum.Enum):
    """
    The kind of a watch event.
    """

    PUT = "PUT"
    DELETE = "DELETE"


class Entry(NamedTuple):
    """
    One key as read from etcd.
    """

    key: bytes
    value: bytes
    modRevision: int


class Snapshot(NamedTuple):
    """
    The keys under a prefix as of C{revision}: watch from C{revision + 1} to
    follow them without a gap.
    """

    revision: int
    entries: list[Entry]


class DeleteResult(NamedTuple):
    """
    What a delete did: the store's revision afterwards and how many keys went.
    """

    revision: int
    deleted: int


class TxnResult(NamedTuple):
    """
    Whether a transaction's comparisons held (and its success operations were
    applied), and the store's revision afterwards.
    """

    succeeded: bool
    revision: int


class EtcdStatus(NamedTuple):
    """
    A member's status.
    """

    version: str
    revision: int
    leader: int
    memberId: int
    raftTerm: int


@dataclass(frozen=True)
class Put:
    """
    Transaction operation: set C{key} to C{value}.
    """

    key: bytes
    value: bytes


@dataclass(frozen=True)
class Delete:
    """
    Transaction operation: delete C{key}.
    """

    key: bytes


@dataclass(frozen=True)
class DeletePrefix:
    """
    Transaction operation: delete every key starting with C{prefix}.
    """

    prefix: bytes


@dataclass(frozen=True)
class ModRevisionIs:
    """
    Transaction comparison: C{key} was last modified at C{revision}; a
    revision of 0 means the key does not exist.
    """

    key: bytes
    revision: int


@dataclass(frozen=True)
class ValueIs:
    """
    Transaction comparison: C{key} exists and holds C{value}.
    """

    key: bytes
    value: bytes


Operation = Union[Put, Delete, DeletePrefix]
Comparison = Union[ModRevisionIs, ValueIs]


def prefixRangeEnd(prefix: bytes) -> bytes:
    """
    The end of the key range holding every key that starts with C{prefix}:
    the prefix with its last byte below 0xff incremented (what etcd's
    C{GetPrefixRangeEnd} computes).

    @raise ValueError: for an empty prefix, or one of only 0xff bytes.
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        del end[-1]
    raise ValueError(f"no key range for the prefix {prefix!r}")



# --------------------------------------------------------------------------
# Watch messages


@dataclass(frozen=True)
class WatchEvent:
    """
    One change of one key.  A DELETE has an empty C{value}.
    """

    type: EventType
    key: bytes
    value: bytes
    modRevision: int


@dataclass(frozen=True)
class WatchEvents:
    """
    A batch of events; all events of one revision arrive in one batch.

    @ivar revision: the store's revision when etcd sent the batch (it may be
        above the events' own revisions).
    """

    revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True)
class WatchCreated:
    """
    etcd has created the watch; C{revision} is the store's revision then.
    """

    revision: int
    watchId: int


@dataclass(frozen=True)
class WatchProgress:
    """
    A progress notification: every event up to C{revision} has been sent.
    """

    revision: int


@dataclass(frozen=True)
class WatchCanceled:
    """
    etcd cancelled the watch.  With a C{compactRevision}, the start revision
    was compacted away: re-read the prefix and watch from the new revision.
    """

    revision: int
    compactRevision: int | None
    reason: str


@dataclass(frozen=True)
class WatchError:
    """
    The stream reported an error, or could not be decoded (C{code} L{None}).
    """

    code: int | None
    message: str


WatchMessage = Union[
    WatchEvents, WatchCreated, WatchProgress, WatchCanceled, WatchError
]


# --------------------------------------------------------------------------
# Watches and the store interface


class EndReason(enum.Enum):
    """
    Why a watch ended.
    """

    #: L{IWatch.cancel} was called.
    CANCELLED = "cancelled"
    #: The start revision has been compacted: re-read, then watch again.
    COMPACTED = "compacted"
    #: etcd cancelled the watch for another reason.
    SERVER_CANCELED = "server-canceled"
    #: The stream reported an error (e.g. "etcdserver: no leader"), could not
    #: be decoded, or etcd refused the watch.
    ERROR = "error"
    #: The connection was lost or closed, or no endpoint could be reached.
    CONNECTION_LOST = "connection-lost"


@dataclass(frozen=True)
class WatchEnded:
    """
    How a watch ended.

    @ivar next_revision: the first revision not yet delivered: watch again
        from here to continue without a gap (unless C{reason} is
        L{EndReason.COMPACTED}).
    @ivar compact_revision: for L{EndReason.COMPACTED}, etcd's compaction
        revision.
    @ivar error: for L{EndReason.ERROR}, what etcd said.
    @ivar detail: a human-readable account, for the log.
    """

    reason: EndReason
    nextRevision: int
    compactRevision: int | None = None
    error: WatchError | None = None
    detail: str = ""


OnEvents = Callable[[WatchEvents], object]
OnProgress = Callable[[int], object]


class IWatch(Interface):
    """
    A running watch of a key prefix.
    """

    ended = Attribute(
        "A Deferred that fires with a WatchEnded once the watch has ended "
        "and its connection is closed, or fails with the exception a "
        "callback raised."
    )
    nextRevision = Attribute("The first revision not yet delivered (int).")

    def cancel() -> None:
        """
        End the watch; C{ended} fires with L{EndReason.CANCELLED} unless it
        has ended already.
        """


class IRouteStore(Interface):
    """
    The operations on etcd that revproxy needs.  Keys and values are bytes;
    revisions are etcd's store revisions.
    """

    def getPrefix(prefix: bytes) -> Deferred[Snapshot]:
        """
        Read every key starting with C{prefix}, and the revision of the read.
        """

    def put(key: bytes, value: bytes) -> Deferred[int]:
        """
        Set C{key}; fire with the new revision.
        """

    def delete(key: bytes) -> Deferred[DeleteResult]:
        """
        Delete C{key}.
        """

    def deletePrefix(prefix: bytes) -> Deferred[DeleteResult]:
        """
        Delete every key starting with C{prefix}.
        """

    def txn(
        compare: Sequence[Comparison],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> Deferred[TxnResult]:
        """
        Apply C{success} atomically if every comparison holds, else
        C{failure}.  etcd limits the operations per transaction (128 by
        default, C{--max-txn-ops}).
        """

    def watch(
        prefix: bytes,
        startRevision: int,
        onEvents: OnEvents,
        onProgress: OnProgress | None = None,
    ) -> IWatch:
        """
        Watch every key starting with C{prefix} from C{startRevision}
        (inclusive; 0 means from now).  C{onEvents} gets each batch of
        events, in revision order, each revision once; C{onProgress} gets
        the revision of each progress notification.  An exception from
        either ends the watch: its C{ended} fails with it.
        """


class ILeaseStore(Interface):
    """
    etcd's leases, for keys that must vanish with the process that wrote
    them (the node records of L{revproxy.etcd.nodes}).
    """

    def grantLease(ttl: int) -> Deferred[int]:
        """
        Grant a lease of C{ttl} seconds; fire with its id.
        """

    def keepAliveLease(lease: int) -> Deferred[int]:
        """
        Renew C{lease}; fire with its new TTL, or 0 if it has expired (its
        keys are gone).
        """

    def revokeLease(lease: int) -> Deferred[None]:
        """
        Revoke C{lease}: its keys are deleted now.
        """

    def putLeased(key: bytes, value: bytes, lease: int) -> Deferred[int]:
        """
        Set C{key}, attached to C{lease}; fire with the new revision.  Fails
        with L{EtcdError} (code 5) if the lease has expired.
        """
