"""
Tests for L{revproxy.http.trustoptions}: C{--trusted-proxies},
C{--forwarded} and C{--allow-underscore-headers} as C{twistd revproxy}
options, and the policy the service tree gets.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from revproxy import tap
from revproxy.forward.resource import RoutingProxyResource
from revproxy.http.forwarding import ForwardingPolicy
from revproxy.tap import Options, makeService


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(["--route", "a=h:1", *argv])
    return options


class TrustOptionsTests(SynchronousTestCase):
    def _policy(self, *argv: str) -> ForwardingPolicy:
        made: list[RoutingProxyResource] = []

        class Recorded(RoutingProxyResource):
            def __init__(self, *a: object, **kw: object) -> None:
                super().__init__(*a, **kw)  # type: ignore[arg-type]
                made.append(self)

        self.patch(tap, "RoutingProxyResource", Recorded)
        makeService(_parse("--no-access-log", *argv), MemoryReactorClock())
        [resource] = made
        return resource.forwarding

    def test_defaults(self) -> None:
        """
        By default no peer is trusted, no Forwarded header is sent and
        header names with an underscore are dropped.
        """
        policy = self._policy()
        self.assertEqual(
            (policy.trusted, policy.trustUnix, policy.forwarded, policy.allowUnderscore),
            ((), False, False, False),
        )

    def test_given(self) -> None:
        """
        The options reach the resource's policy.
        """
        policy = self._policy(
            "--trusted-proxies", "10.0.0.0/8,::1,unix", "--forwarded",
            "--allow-underscore-headers",
        )
        self.assertEqual(
            policy.trusted,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )
        self.assertTrue(policy.trustUnix and policy.forwarded and policy.allowUnderscore)

    def test_bad(self) -> None:
        """
        A bad network is a one-line UsageError naming the option and value.
        """
        with self.assertRaises(UsageError) as cm:
            _parse("--trusted-proxies", "10.0.0.0/8,10.0.0.0/40")
        message = str(cm.exception)
        self.assertTrue(message.startswith("--trusted-proxies: '10.0.0.0/40'"), message)
        self.assertNotIn("\n", message)

    def test_documented(self) -> None:
        """
        Every forwarding option, and --access-log, is documented in the
        README.
        """
        from pathlib import Path

        from revproxy.http.trustoptions import TRUST_FLAGS, TRUST_PARAMETERS

        readme = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
        for option in [*TRUST_FLAGS, *TRUST_PARAMETERS, ["access-log"]]:
            self.assertIn(f"``--{option[0]}", readme)
