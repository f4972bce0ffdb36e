# -*- test-case-name: tests.etcd.test_identity -*-
"""
Is the etcd on the embedded client port the one we started?

Before the route sync of C{--etcd embedded} starts, L{StartWhenOurs} waits
for the embedded etcd to answer and checks that it is ours: a single member
named C{revproxy} whose peer URL is the one recorded in our data directory.
Only then does it start the etcd services (so a clean start logs no warning
about an etcd that is not up yet).  Any other answer (another etcd, another
revproxy's etcd, something that is not etcd) ends the proxy with one line
before a single route of it is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["NotOurEtcd", "StartWhenOurs", "checkMembers", "agentFetch"]

log = Logger()

#: The gateway prefixes of etcd 3.4 and later, 3.3, and 3.2.
_GATEWAYS = ("/v3/", "/v3beta/", "/v3alpha/")

#: POST a JSON body to a URL; fires with the status code and body.
Fetch = Callable[[str, bytes], "Deferred[tuple[int, bytes]]"]


class NotOurEtcd(Exception):
    """
    The etcd that answered is not the one the proxy started.
    """


def checkMembers(code: int, body: bytes, name: str, peerUrl: str, clientUrl: str) -> None:
    """
    Check a C{cluster/member/list} answer: one member, C{name}, at
    C{peerUrl}.

    @raise NotOurEtcd: saying what answered instead.
    """
    try:
        members = json.loads(body)["members"]
        found = [(m.get("name", ""), m.get("peerURLs", [])) for m in members]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise NotOurEtcd(
            f"{clientUrl} is not etcd (it answered HTTP {code} to an etcd "
            "member list)"
        ) from None
    if found != [(name, [peerUrl])]:
        shown = ", ".join(f"{n or '?'} at {','.join(u)}" for n, u in found)
        raise NotOurEtcd(
            f"the etcd on {clientUrl} is not the one revproxy started (its "
            f"members: {shown}; ours is {name} at {peerUrl})"
        )


def agentFetch(reactor: Any, timeout: float = 2.0) -> Fetch:
    """
    A L{Fetch} over Twisted's L{Agent}, each request bounded by C{timeout}.
    """
    from twisted.web.client import Agent, readBody
    from twisted.web.http_headers import Headers

    from revproxy.etcd.http import BytesProducer

    from revproxy._compat import quietHTTPConnectionPool

    pool = quietHTTPConnectionPool(reactor)
    pool.persistent = False  # a few requests at start-up: nothing to keep
    agent = Agent(reactor, pool=pool)

    def fetch(url: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        d: Deferred[Any] = agent.request(
            b"POST",
            url.encode("ascii"),
            Headers({b"content-type": [b"application/json"]}),
            BytesProducer(body),
        )

        def read(response: Any) -> Deferred[tuple[int, bytes]]:
            return readBody(response).addCallback(lambda b: (response.code, b))

        d.addCallback(read)
        d.addTimeout(timeout, reactor)
        return d

    return fetch


class StartWhenOurs(Service):
    """
    Starts C{dependent} once the embedded etcd answers as ours; stops it
    with itself.  Until then the proxy serves 503 (no routes yet).
    """

    name = "embedded-etcd-check"

    def __init__(
        self,
        dependent: IService,
        clock: IReactorTime,
        fetch: Fetch,
        clientUrl: str,
        peerUrl: str,
        fatal: Callable[[str], None],
        memberName: str = "revproxy",
        interval: float = 0.2,
        deadline: float = 60.0,
    ) -> None:
        self.dependent = dependent
        self._clock = clock
        self._fetch = fetch
        self.clientUrl = clientUrl
        self.peerUrl = peerUrl
        self._fatal = fatal
        self.memberName = memberName
        self.interval = interval
        self.deadline = deadline
        self._pending: Deferred[Any] | None = None
        self._retry: Any = None
        self._since = 0.0
        self._prefix = _GATEWAYS[0]

    def startService(self) -> None:
        super().startService()
        self._since = self._clock.seconds()
        self._ask()

    def _ask(self, prefix: str = "/v3/") -> None:
        self._retry = None
        self._prefix = prefix
        url = f"{self.clientUrl}{prefix}cluster/member/list"
        d = self._pending = self._fetch(url, b"{}")
        d.addCallbacks(self._answered, self._noAnswer)
        d.addErrback(self._unexpected)

    def _answered(self, answer: tuple[int, bytes]) -> None:
        self._pending = None
        if not self.running:
            return
        code, body = answer
        later = _GATEWAYS[_GATEWAYS.index(self._prefix) + 1:]
        if code == 404 and later:  # an older etcd: its gateway's prefix
            self._ask(later[0])
            return
        try:
            checkMembers(code, body, self.memberName, self.peerUrl, self.clientUrl)
        except NotOurEtcd as e:
            self._fatal(f"revproxy: {e}; refusing to load its routes")
            return
        log.info("embedded etcd on {url} is up and ours", url=self.clientUrl)
        self.dependent.startService()

    def _noAnswer(self, reason: Failure) -> None:
        self._pending = None
        if not self.running:
            return
        if self._clock.seconds() - self._since >= self.deadline:
            self._fatal(
                f"revproxy: the embedded etcd did not answer on {self.clientUrl} "
                f"within {self.deadline:g}s ({reason.getErrorMessage()})"
            )
            return
        self._retry = self._clock.callLater(self.interval, self._ask)

    def _unexpected(self, reason: Failure) -> None:
        log.failure("checking the embedded etcd failed", reason)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if self.dependent.running:
            return maybeDeferred(self.dependent.stopService)
        return succeed(None)
