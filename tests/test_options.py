"""
Tests for L{revproxy.options}: option values parsed with a usage error that
names the option.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from revproxy.options import optionCount, optionSeconds, optionSecondsOrZero, optionValue


class OptionValueTests(SynchronousTestCase):
    def test_values(self) -> None:
        """
        Good values parse; zero is allowed where it means "off".
        """
        self.assertEqual(optionSeconds("--t", "1.5"), 1.5)
        self.assertEqual(optionCount("--n", "0"), 0)
        self.assertEqual(optionSecondsOrZero("--t", "0"), 0.0)
        self.assertEqual(optionValue("--x", int, "7"), 7)

    def test_errorsNameTheOption(self) -> None:
        """
        A bad value is a usage error that starts with the option's name.
        """
        for call in (
            lambda: optionSeconds("--timeout", "soon"),
            lambda: optionCount("--retries", "-1"),
            lambda: optionSecondsOrZero("--retry-window", "-2"),
        ):
            with self.assertRaises(usage.UsageError) as e:
                call()
            self.assertRegex(str(e.exception), r"^--[a-z-]+: ")
