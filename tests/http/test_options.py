"""
Tests for L{revproxy.http.options}: the client side's limits as options.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from revproxy.http.options import serverLimits
from revproxy.tap import Options


def _options(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--upstream", "http://127.0.0.1:8080", *args])
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        The defaults are those README.rst gives.
        """
        limits = serverLimits(_options())
        self.assertEqual(
            (limits.head.maxHeaderSize, limits.head.maxHeaders, limits.head.maxUriSize),
            (16384, 100, 8192),
        )
        self.assertEqual(
            (limits.maxBodySize, limits.headerTimeout, limits.bodyTimeout, limits.maxConnections),
            (0, 10.0, 60.0, 10000),
        )

    def test_values(self) -> None:
        """
        Each option sets its limit.
        """
        limits = serverLimits(
            _options(
                "--max-header-size", "1000", "--max-headers", "10", "--max-uri-size", "100",
                "--max-body-size", "5", "--header-timeout", "1.5", "--body-timeout", "2",
                "--max-connections", "3", "--retry-buffer", "7",
            )
        )
        self.assertEqual(
            (limits.head.maxHeaderSize, limits.head.maxHeaders, limits.head.maxUriSize),
            (1000, 10, 100),
        )
        self.assertEqual(
            (limits.maxBodySize, limits.headerTimeout, limits.bodyTimeout,
             limits.maxConnections, limits.replayBuffer),
            (5, 1.5, 2.0, 3, 7),
        )

    def test_bad(self) -> None:
        """
        A bad value is a usage error naming its option.
        """
        for args, name in [
            (["--max-header-size", "0"], "--max-header-size"),
            (["--max-headers", "x"], "--max-headers"),
            (["--max-body-size", "-1"], "--max-body-size"),
            (["--header-timeout", "0"], "--header-timeout"),
            (["--max-connections", "1.5"], "--max-connections"),
        ]:
            with self.assertRaises(usage.UsageError) as e:
                _options(*args)
            self.assertIn(name, str(e.exception))

    def test_documented(self) -> None:
        """
        Every limit and deadline is documented in the README, with its
        default.
        """
        from pathlib import Path

        from revproxy.http.options import SERVER_PARAMETERS

        readme = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
        for name, _, default, _ in SERVER_PARAMETERS:
            start = readme.index(f"``--{name} ")
            entry = readme[start : readme.index("\n``", start + 1)]
            self.assertIn(f"default {default}", entry.replace("\n    ", " "), name)
