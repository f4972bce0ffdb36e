# -*- test-case-name: tests.http.test_trustoptions -*-
"""
The options of the client side's header rules (C{--trusted-proxies},
C{--forwarded}, C{--allow-underscore-headers}): declared and checked here,
composed into C{twistd revproxy}'s options by L{revproxy.tap}, which builds
one L{ForwardingPolicy} from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from revproxy.config import parseNetworks
from revproxy.options import optionValue
from revproxy.http.forwarding import ForwardingPolicy

__all__ = ["TRUST_FLAGS", "TRUST_PARAMETERS", "checkTrustOptions", "forwardingPolicy"]

TRUST_FLAGS = [
    ["forwarded", None, "Also send an RFC 7239 Forwarded header (for=, by=, host=, proto=)."],
    ["allow-underscore-headers", None, "Forward request headers whose names have an underscore (dropped by default)."],
]

TRUST_PARAMETERS = [
    ["trusted-proxies", None, "", "CIDR[,CIDR...]: peers whose X-Forwarded-*, Forwarded, X-Real-IP and X-Request-Id are kept (IPv4/IPv6 networks or addresses, 'unix' for Unix sockets; default none)."],
]


def checkTrustOptions(options: usage.Options) -> None:
    """
    Check C{--trusted-proxies} and keep the networks it names.

    @raise usage.UsageError: naming the option and the bad value.
    """
    options["trusted-networks"] = optionValue(
        "--trusted-proxies", parseNetworks, options["trusted-proxies"] or ""
    )


def forwardingPolicy(options: Mapping[str, Any]) -> ForwardingPolicy:
    """
    The one L{ForwardingPolicy} of the checked C{options} (defaults for
    what they lack).
    """
    networks, unix = options.get("trusted-networks") or ((), False)
    return ForwardingPolicy(
        trusted=networks,
        trustUnix=unix,
        forwarded=bool(options.get("forwarded")),
        allowUnderscore=bool(options.get("allow-underscore-headers")),
    )
