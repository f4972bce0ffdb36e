# -*- test-case-name: tests.test_config -*-
"""
The values an operator writes, parsed once for both twistd's options and
C{revproxyctl}: seconds, counts, etcd endpoint lists and key prefixes.

Each parser raises L{ConfigError} with a one-line message that does not name
the option: C{revproxy.tap} reports it as C{usage.UsageError("--name: ...")},
C{revproxyctl} as its own usage error, naming the option or the environment
variable the value came from.  Nothing here imports C{twisted.internet}.
"""

from __future__ import annotations

import ipaddress
import math

from revproxy.routing.address import RouteError, parseUpstream

__all__ = [
    "ConfigError",
    "parseCount",
    "parseEtcdEndpoints",
    "parseKeyPrefix",
    "parseNetworks",
    "parsePositiveCount",
    "parseSeconds",
]


class ConfigError(ValueError):
    """
    A value does not parse; the message is one line and names the value, not
    the option it was given to.
    """


def parseSeconds(text: str) -> float:
    """
    A positive, finite number of seconds.
    """
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError("must be a positive number of seconds")
    return value


def _wholeNumber(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a whole number") from None


def parseCount(text: str) -> int:
    """
    A whole number, 0 or more.
    """
    value = _wholeNumber(text)
    if value < 0:
        raise ConfigError("must not be negative")
    return value


def parsePositiveCount(text: str) -> int:
    """
    A whole number, 1 or more.
    """
    value = _wholeNumber(text)
    if value < 1:
        raise ConfigError("must be at least 1")
    return value


def parseEtcdEndpoints(text: str) -> list[str]:
    """
    A comma-separated list of C{http(s)://host:port} URLs (C{host:port} means
    C{http://host:port}), normalized to C{scheme://host:port}.
    """
    urls = []
    for part in text.split(","):
        part = part.strip()
        try:
            upstream = parseUpstream(part)
        except RouteError as e:
            raise ConfigError(str(e).replace("upstream", "endpoint")) from None
        if upstream.basePath:
            raise ConfigError(f"endpoint {part!r} must not have a path")
        urls.append(f"{upstream.scheme}://{upstream.authority}")
    return urls


def parseKeyPrefix(text: str) -> str:
    """
    An etcd key prefix: it starts with C{/}; a C{/} is added at the end if
    missing.
    """
    if not text.startswith("/"):
        raise ConfigError(f"{text!r} must start with /")
    return text if text.endswith("/") else text + "/"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parseNetworks(text: str) -> tuple[tuple[IPNetwork, ...], bool]:
    """
    A comma-separated list of IPv4 and IPv6 networks in CIDR notation
    (C{10.0.0.0/8}, C{2001:db8::/32}) or bare addresses (a network of one),
    and the word C{unix} for every peer on a Unix socket: the networks and
    whether C{unix} was given.  An empty text is no network.
    """
    networks: list[IPNetwork] = []
    unix = False
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part == "unix":
            unix = True
            continue
        try:
            network = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ConfigError(
                f"{part!r} is not an IP network (CIDR like 10.0.0.0/8 or "
                "2001:db8::/32), an IP address or unix"
            ) from None
        if network not in networks:
            networks.append(network)
    return tuple(networks), unix
