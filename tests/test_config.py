"""
Tests for L{revproxy.config}: the values an operator writes, parsed alike for
twistd's options and revproxyctl.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from revproxy.config import (
    ConfigError,
    parseCount,
    parseEtcdEndpoints,
    parseKeyPrefix,
    parsePositiveCount,
    parseSeconds,
)


class ParseTests(SynchronousTestCase):
    def test_seconds(self) -> None:
        """A number of seconds is positive and finite."""
        self.assertEqual(parseSeconds("0.5"), 0.5)
        for text, message in [
            ("soon", "'soon' is not a number of seconds"),
            ("0", "must be a positive number of seconds"),
            ("-1", "must be a positive number of seconds"),
            ("nan", "must be a positive number of seconds"),
            ("inf", "must be a positive number of seconds"),
        ]:
            e = self.assertRaises(ConfigError, parseSeconds, text)
            self.assertEqual(str(e), message)

    def test_counts(self) -> None:
        """A count is a whole number, 0 or more; a positive count 1 or more."""
        self.assertEqual(parseCount("0"), 0)
        self.assertEqual(parsePositiveCount("3"), 3)
        self.assertEqual(str(self.assertRaises(ConfigError, parseCount, "many")),
                         "'many' is not a whole number")
        self.assertEqual(str(self.assertRaises(ConfigError, parseCount, "-1")),
                         "must not be negative")
        self.assertEqual(str(self.assertRaises(ConfigError, parsePositiveCount, "0")),
                         "must be at least 1")

    def test_etcdEndpoints(self) -> None:
        """Endpoints are normalized to scheme://host:port; a path is refused."""
        self.assertEqual(
            parseEtcdEndpoints("http://127.0.0.1:2379, 127.0.0.1:22379"),
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"],
        )
        e = self.assertRaises(ConfigError, parseEtcdEndpoints, "http://h:1/path")
        self.assertEqual(str(e), "endpoint 'http://h:1/path' must not have a path")
        e = self.assertRaises(ConfigError, parseEtcdEndpoints, "ftp://x")
        self.assertNotIn("upstream", str(e))
        self.assertIsInstance(e, ValueError)

    def test_keyPrefix(self) -> None:
        """A prefix starts with / and gets a / at the end."""
        self.assertEqual(parseKeyPrefix("/r"), "/r/")
        self.assertEqual(parseKeyPrefix("/r/"), "/r/")
        self.assertEqual(str(self.assertRaises(ConfigError, parseKeyPrefix, "r")),
                         "'r' must start with /")

    def test_noReactor(self) -> None:
        """The module imports nothing from twisted.internet."""
        import revproxy.config

        with open(revproxy.config.__file__, encoding="utf-8") as f:
            imports = [line for line in f if line.startswith(("import ", "from "))]
        self.assertEqual([i for i in imports if "twisted" in i], [])
