"""
Tests for L{revproxy.forward.options}: the options of health, retries and
balancing, as C{twistd revproxy} parses them.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from revproxy.tap import Options

ROUTE = ["--route", "a.com=127.0.0.1:4000"]


def _parse(*args: str) -> Options:
    options = Options()
    options.parseOptions([*ROUTE, *args])
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        The defaults are those of the README.
        """
        o = _parse()
        self.assertEqual(
            (o["max-fails"], o["fail-window"], o["eject-time"], o["max-ejected-percent"]),
            (3, 10.0, 10.0, 50.0),
        )
        self.assertEqual(
            (o["health-path"], o["health-interval"], o["health-timeout"],
             o["health-rise"], o["health-fall"]),
            (None, 5.0, 2.0, 2, 3),
        )
        self.assertEqual(
            (o["retries"], o["retry-buffer"], o["retry-window"], o["hash-key"]),
            (2, 65536, 0.0, "client-ip"),
        )
        self.assertFalse(o["fail-on-5xx"])
        self.assertFalse(o["health-start-down"])

    def test_values(self) -> None:
        """
        Every option takes its value.
        """
        o = _parse(
            "--max-fails", "5", "--fail-window", "2.5", "--eject-time", "1",
            "--max-ejected-percent", "100", "--health-path", "/ready",
            "--health-interval", "0.5", "--health-timeout", "0.2",
            "--health-rise", "1", "--health-fall", "1", "--retries", "0",
            "--retry-buffer", "0", "--retry-window", "5", "--hash-key",
            "header:X-User", "--fail-on-5xx", "--health-start-down",
            "--balance", "hash",
        )
        self.assertEqual(o["max-fails"], 5)
        self.assertEqual(o["retry-window"], 5.0)
        self.assertEqual(o["health-path"], "/ready")
        self.assertTrue(o["fail-on-5xx"])

    def test_bad(self) -> None:
        """
        A bad value is a one-line UsageError naming its option.
        """
        for args, option in [
            (["--max-fails", "-1"], "--max-fails"),
            (["--fail-window", "0"], "--fail-window"),
            (["--max-ejected-percent", "150"], "--max-ejected-percent"),
            (["--health-path", "ready"], "--health-path"),
            (["--health-rise", "0"], "--health-rise"),
            (["--retry-window", "-1"], "--retry-window"),
            (["--hash-key", "ip"], "--hash-key"),
            (["--balance", "fastest"], "--balance"),
        ]:
            with self.assertRaises(usage.UsageError) as cm:
                _parse(*args)
            self.assertIn(option, str(cm.exception))
            self.assertNotIn("\n", str(cm.exception))

    def test_policies(self) -> None:
        """
        --balance takes every policy.
        """
        for name in ("round-robin", "random", "weighted", "least-requests", "hash"):
            self.assertEqual(_parse("--balance", name)["balance"], name)

    def test_documented(self) -> None:
        """
        Every option of health, retries and balancing is documented in the
        README.
        """
        from pathlib import Path

        from revproxy.forward.options import HEALTH_FLAGS, HEALTH_PARAMETERS

        readme = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
        for option in [*HEALTH_FLAGS, *HEALTH_PARAMETERS]:
            self.assertIn(f"``--{option[0]}", readme)
