"""
Tests for L{revproxy.etcd.leases}: the gateway bodies of lease calls and
the parsing of their answers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.leases import EtcdLeases


class Recorder:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, method: str, body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        self.calls.append((method, body))
        return succeed(self.answer)


class LeaseTests(SynchronousTestCase):
    def test_grant(self) -> None:
        """
        A grant posts the TTL to lease/grant and answers the lease id.
        """
        r = Recorder({"ID": "7587", "TTL": "10"})
        self.assertEqual(self.successResultOf(EtcdLeases(r).grantLease(10)), 7587)
        self.assertEqual(r.calls, [("lease/grant", {"TTL": "10"})])

    def test_keepAlive(self) -> None:
        """
        A keepalive answers the TTL in the stream's one result, 0 when the
        lease is gone (the gateway then omits the TTL).
        """
        r = Recorder({"result": {"ID": "5", "TTL": "9"}})
        self.assertEqual(self.successResultOf(EtcdLeases(r).keepAliveLease(5)), 9)
        self.assertEqual(r.calls, [("lease/keepalive", {"ID": "5"})])
        r.answer = {"result": {"ID": "5"}}
        self.assertEqual(self.successResultOf(EtcdLeases(r).keepAliveLease(5)), 0)

    def test_putLeasedAndRevoke(self) -> None:
        """
        A leased put sends the key, value and lease in base64 and decimal
        and answers the revision; a revoke posts the id.
        """
        r = Recorder({"header": {"revision": "12"}})
        leases = EtcdLeases(r)
        self.assertEqual(self.successResultOf(leases.putLeased(b"/n/a", b"{}", 5)), 12)
        self.successResultOf(leases.revokeLease(5))
        self.assertEqual(r.calls, [
            ("kv/put", {"key": "L24vYQ==", "value": "e30=", "lease": "5"}),
            ("lease/revoke", {"ID": "5"}),
        ])
