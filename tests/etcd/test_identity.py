"""
Tests for L{revproxy.etcd.identity}: the routes are loaded only from the
etcd we started, once it answers.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from revproxy.etcd.identity import NotOurEtcd, StartWhenOurs, checkMembers

CLIENT = "http://127.0.0.1:2379"
PEER = "http://127.0.0.1:41000"


def members(*pairs: tuple[str, str]) -> bytes:
    return json.dumps(
        {"members": [{"name": n, "peerURLs": [u]} for n, u in pairs]}
    ).encode()


class CheckMembersTests(SynchronousTestCase):
    def test_ours(self) -> None:
        """One member named revproxy at our peer URL is ours."""
        checkMembers(200, members(("revproxy", PEER)), "revproxy", PEER, CLIENT)

    def test_other(self) -> None:
        """Another member, or another peer URL, is not ours, and the message says what answered."""
        for body in (members(("revproxy", "http://127.0.0.1:9")), members(("default", PEER))):
            e = self.assertRaises(NotOurEtcd, checkMembers, 200, body, "revproxy", PEER, CLIENT)
            self.assertIn("is not the one revproxy started", str(e))

    def test_notEtcd(self) -> None:
        """An HTML answer is reported as not etcd, without its body."""
        e = self.assertRaises(
            NotOurEtcd, checkMembers, 200, b"<html><body>hi</body></html>", "revproxy", PEER, CLIENT
        )
        self.assertEqual(str(e), f"{CLIENT} is not etcd (it answered HTTP 200 to an etcd member list)")


class StartWhenOursTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.answers: list[Any] = []
        self.urls: list[str] = []
        self.fatal: list[str] = []
        self.dependent = Service()
        self.gate = StartWhenOurs(
            self.dependent, self.clock, self.fetch, CLIENT, PEER, self.fatal.append
        )

    def fetch(self, url: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        self.urls.append(url)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def test_waitsThenStarts(self) -> None:
        """The dependent services start only once our etcd answers; stopping stops them."""
        self.answers = [ConnectionRefusedError(), (200, members(("revproxy", PEER)))]
        self.gate.startService()
        self.assertFalse(self.dependent.running)
        self.clock.advance(0.2)
        self.assertTrue(self.dependent.running)
        self.assertEqual(self.urls, [CLIENT + "/v3/cluster/member/list"] * 2)
        self.successResultOf(self.gate.stopService())
        self.assertFalse(self.dependent.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notOursIsFatal(self) -> None:
        """Another etcd ends the proxy with one line; nothing is loaded from it."""
        self.answers = [(200, members(("revproxy", "http://127.0.0.1:9")))]
        self.gate.startService()
        self.assertFalse(self.dependent.running)
        [message] = self.fatal
        self.assertTrue(message.startswith("revproxy: the etcd on http://127.0.0.1:2379 is not the one"))
        self.assertTrue(message.endswith("refusing to load its routes"))

    def test_deadline(self) -> None:
        """An etcd that never answers ends the proxy after the deadline."""
        self.answers = [ConnectionRefusedError()] * 400
        self.gate.startService()
        self.clock.pump([0.2] * 301)
        [message] = self.fatal
        self.assertIn("did not answer", message)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_olderGateway(self) -> None:
        """An etcd that serves its gateway under an older prefix is asked there."""
        self.answers = [(404, b"404 page not found"), (200, members(("revproxy", PEER)))]
        self.gate.startService()
        self.assertTrue(self.dependent.running)
        self.assertEqual(
            self.urls,
            [CLIENT + "/v3/cluster/member/list", CLIENT + "/v3beta/cluster/member/list"],
        )
        self.gate.stopService()
