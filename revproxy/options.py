# -*- test-case-name: tests.test_options -*-
"""
The values of C{twistd revproxy}'s options, parsed with L{revproxy.config}'s
parsers: a value that does not parse is a L{usage.UsageError} naming its
option, which twistd reports in one line.  Shared by the options of every
package (L{revproxy.http.options}, L{revproxy.forward.options},
L{revproxy.ops.fleet}, L{revproxy.tap}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.python import usage

from revproxy.config import ConfigError, parseCount, parseSeconds

__all__ = ["optionCount", "optionSeconds", "optionSecondsOrZero", "optionValue"]

_T = TypeVar("_T")


def optionValue(option: str, parse: Callable[[str], _T], text: str) -> _T:
    """
    Parse the value of C{option} with one of L{revproxy.config}'s parsers.

    @raise usage.UsageError: naming C{option}.
    """
    try:
        return parse(text)
    except ConfigError as e:
        raise usage.UsageError(f"{option}: {e}") from None


def optionSeconds(option: str, text: str) -> float:
    return optionValue(option, parseSeconds, text)


def optionCount(option: str, text: str) -> int:
    return optionValue(option, parseCount, text)


def optionSecondsOrZero(option: str, text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return optionSeconds(option, text)
