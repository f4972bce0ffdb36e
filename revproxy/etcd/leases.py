# -*- test-case-name: tests.etcd.test_leases -*-
"""
etcd's leases on the gateway: L{EtcdLeases} implements L{ILeaseStore} over
an L{revproxy.etcd.client.EtcdClient}'s unary calls (and so its endpoints,
failover and timeouts).

Why not txaioetcd's C{Client.lease} and C{Lease.refresh}: they post through
C{Client._post} to literal C{/v3alpha/} paths (in C{txaioetcd/_lease.py}),
which etcd 3.4 and later answer with 404, on the global reactor and with no
look at the HTTP status (see L{revproxy.etcd.client}).  The gateway's own
calls are four small JSON bodies, so they are built here:

  - C{lease/grant} C{{"TTL": N}} answers C{{"ID": "...", "TTL": "..."}};
  - C{lease/keepalive} C{{"ID": "..."}} is a stream in gRPC; over the
    gateway one request body gives one answer C{{"result": {"TTL": ...}}},
    with no C{TTL} once the lease has expired;
  - C{lease/revoke} C{{"ID": "..."}};
  - C{kv/put} with C{"lease": "..."} attaches the key (an expired lease
    answers code 5, "requested lease not found").

(It is a module of its own because L{revproxy.etcd.client} is at the size
limit of a module.)
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from revproxy.etcd.decoder import int64Field
from revproxy.etcd.types import ILeaseStore

__all__ = ["EtcdLeases"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _int(obj: Any, field: str) -> int:
    value = obj.get(field) if isinstance(obj, dict) else None
    return 0 if value is None else int64Field(value)


@implementer(ILeaseStore)
class EtcdLeases:
    """
    Leases through C{client}, an C{EtcdClient} (anything with its C{call}).
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def grantLease(self, ttl: int) -> Deferred[int]:
        d: Deferred[Any] = self._client.call("lease/grant", {"TTL": str(ttl)})
        return d.addCallback(lambda obj: _int(obj, "ID"))

    def keepAliveLease(self, lease: int) -> Deferred[int]:
        d: Deferred[Any] = self._client.call("lease/keepalive", {"ID": str(lease)})
        return d.addCallback(lambda obj: _int(obj.get("result"), "TTL"))

    def revokeLease(self, lease: int) -> Deferred[None]:
        d: Deferred[Any] = self._client.call("lease/revoke", {"ID": str(lease)})
        return d.addCallback(lambda _: None)

    def putLeased(self, key: bytes, value: bytes, lease: int) -> Deferred[int]:
        body = {"key": _b64(key), "value": _b64(value), "lease": str(lease)}
        d: Deferred[Any] = self._client.call("kv/put", body)
        return d.addCallback(lambda obj: _int(obj.get("header"), "revision"))
