# -*- test-case-name: tests.test_compat -*-
"""
The private names of txaioetcd and treq that revproxy uses, in one place
(the rest of L{revproxy._compat} is Twisted's).

txaioetcd 18.10.2 is the etcd library the project is built on.  Its request
types and response parsers are sound, its client and watch are not (see
L{revproxy.etcd.client}); the private names it keeps its request assemblers
and parsers under are reached through the helpers below.

Each helper imports txaioetcd when called, not when this module is
imported: importing txaioetcd takes about a quarter of a second (it pulls
numpy), and L{revproxy.tap}, which twistd imports to list its plugins, must
stay quick to import.  Only L{revproxy.etcd.client} calls these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
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
