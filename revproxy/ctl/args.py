# -*- test-case-name: tests.ctl.test_args -*-
"""
The command line of C{revproxyctl}: its options (L{buildParser}), their
validation into a L{Config} (L{parseArgs}, with the proxy's own parsers of
L{revproxy.config} and L{revproxy.routing}), the L{UsageError} that ends a
command before any I/O, and the exit statuses.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from revproxy.config import (
    ConfigError,
    parseEtcdEndpoints,
    parseKeyPrefix,
    parsePositiveCount,
    parseSeconds,
)
from revproxy.routing import RouteError, Upstream, parseHostPattern, parseUpstream

__all__ = [
    "buildParser",
    "Config",
    "DEFAULT_ETCD",
    "DEFAULT_MAX_TXN_OPS",
    "DEFAULT_NODES_PREFIX",
    "DEFAULT_WAIT",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "parseArgs",
    "parseEndpoints",
    "parsePrefix",
    "PROG",
    "UsageError",
]


PROG = "revproxyctl"
DEFAULT_ETCD = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/hosts/"
DEFAULT_TIMEOUT = 5.0
DEFAULT_NODES_PREFIX = "/revproxy/nodes/"
#: Seconds of a bare C{--wait}.
DEFAULT_WAIT = 10.0
#: etcd's default C{--max-txn-ops}.
DEFAULT_MAX_TXN_OPS = 128

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """
    Bad arguments or input: exit status 2, nothing written.  The message is
    one line.
    """


@dataclass(frozen=True)
class Config:
    """
    A parsed, validated command line.
    """

    command: str
    endpoints: tuple[str, ...] = (DEFAULT_ETCD,)
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    maxTxnOps: int = DEFAULT_MAX_TXN_OPS
    host: str | None = None
    upstreams: tuple[Upstream, ...] = ()
    weight: int | None = None
    json: bool = False
    file: str | None = None
    dryRun: bool = False
    replace: bool = False
    admin: str | None = None
    wait: float | None = None
    nodesPrefix: str = DEFAULT_NODES_PREFIX
    path: str | None = None


class _Parser(argparse.ArgumentParser):
    """
    An argument parser that raises L{UsageError} instead of exiting, so that
    errors are one line and parsing is testable.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser.  The global options are accepted before or after
    the subcommand.
    """
    common = _Parser(add_help=False)
    # SUPPRESS: an option given before the subcommand is not overwritten by
    # the subparser's default.
    common.add_argument(
        "--etcd",
        metavar="URLS",
        default=argparse.SUPPRESS,
        help="etcd endpoints, URL[,URL...] (default: $REVPROXY_ETCD, else "
        f"{DEFAULT_ETCD})",
    )
    common.add_argument(
        "--prefix",
        metavar="P",
        default=argparse.SUPPRESS,
        help=f"etcd key prefix of the routes (default: $REVPROXY_PREFIX, else "
        f"{DEFAULT_PREFIX})",
    )
    common.add_argument(
        "--timeout",
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help=f"seconds an etcd request may take (default: {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument(
        "--max-txn-ops",
        metavar="N",
        default=argparse.SUPPRESS,
        help="the operations etcd allows in one transaction: its own "
        f"--max-txn-ops (default: {DEFAULT_MAX_TXN_OPS})",
    )
    common.add_argument(
        "--nodes-prefix",
        metavar="P",
        default=argparse.SUPPRESS,
        help=f"etcd key prefix of the proxy nodes' records (default: {DEFAULT_NODES_PREFIX})",
    )

    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="Manage revproxy's routes in etcd.",
    )
    from revproxy import __version__

    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}",
        help="print revproxyctl's version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[common], help=help, description=help
        )
        return p

    add = command("add", "Add upstreams to a host (an existing upstream is kept).")
    add.add_argument("host", metavar="HOST")
    add.add_argument("upstreams", metavar="UPSTREAM", nargs="+")
    add.add_argument(
        "--weight", metavar="N", help="weight of the upstreams (sets it if they exist)"
    )
    waitHelp = (
        f"--wait[=SECONDS]: after the write, wait (default {DEFAULT_WAIT:g} s) until "
        "every live proxy node has applied it; exit 1 naming the nodes that lag"
    )
    add.add_argument("--wait", metavar="SECONDS", help=waitHelp)

    rm = command("rm", "Remove upstreams from a host, or the whole host.")
    rm.add_argument("host", metavar="HOST")
    rm.add_argument("upstreams", metavar="UPSTREAM", nargs="*")
    rm.add_argument("--wait", metavar="SECONDS", help=waitHelp)

    ls = command("ls", "List the routes, or the routes of one host.")
    ls.add_argument("host", metavar="HOST", nargs="?")
    ls.add_argument("--json", action="store_true", help="print the export format")
    ls.add_argument(
        "--admin",
        metavar="URL",
        help="a proxy node's admin URL (e.g. http://127.0.0.1:9901): show each "
        "upstream's health as that node sees it",
    )

    command("watch", "Print route changes as they happen, until interrupted.")
    command("export", "Print every route as a JSON document for import.")

    imp = command("import", "Set the routes of the hosts in a JSON document.")
    imp.add_argument("file", metavar="FILE", help="the document, or - for stdin")
    imp.add_argument(
        "--dry-run", action="store_true", help="print the changes; write nothing"
    )
    imp.add_argument(
        "--replace", action="store_true", help="also remove the hosts not in FILE"
    )
    imp.add_argument("--wait", metavar="SECONDS", help=waitHelp)

    nodes = command("nodes", "List the live proxy nodes: applied revision, lag, watch, age.")
    nodes.add_argument("--json", action="store_true", help="print JSON")

    explain = command(
        "explain", "Say which route a request for HOST takes and why, with each node's health view."
    )
    explain.add_argument("host", metavar="HOST")
    explain.add_argument("path", metavar="PATH", nargs="?", default="/")
    return parser


_T = TypeVar("_T")


def _value(source: str, parse: Callable[[str], _T], text: str) -> _T:
    """
    Parse a value with one of L{revproxy.config}'s parsers, the proxy's own.

    @param source: what to call the value in a message (an option such as
        C{--etcd}, or a variable such as C{$REVPROXY_ETCD}).
    @raise UsageError: naming C{source}.
    """
    try:
        return parse(text)
    except ConfigError as e:
        raise UsageError(f"{source}: {e}") from None


def parseEndpoints(text: str, source: str) -> tuple[str, ...]:
    """
    Validate etcd endpoints as the proxy's C{--etcd} does.

    @param source: what to call the value in a message (C{--etcd} or
        C{$REVPROXY_ETCD}).
    """
    return tuple(_value(source, parseEtcdEndpoints, text))


def parsePrefix(text: str, source: str) -> str:
    """
    Validate a key prefix as the proxy does: it starts with C{/}; a C{/} is
    added at the end if missing.
    """
    return _value(source, parseKeyPrefix, text)


def _host(text: str) -> str:
    try:
        return parseHostPattern(text)
    except RouteError as e:
        raise UsageError(str(e)) from None


def _upstreams(texts: Sequence[str], weight: int, host: str) -> tuple[Upstream, ...]:
    upstreams: list[Upstream] = []
    for text in texts:
        try:
            upstream = parseUpstream(text, weight)
        except RouteError as e:
            raise UsageError(str(e)) from None
        if upstream in upstreams:
            raise UsageError(f"host {host!r}: upstream {upstream} is listed twice")
        upstreams.append(upstream)
    return tuple(upstreams)


def parseArgs(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """
    Parse and validate a command line; C{environ} supplies
    C{REVPROXY_ETCD} and C{REVPROXY_PREFIX} for absent options.

    @raise UsageError: for anything wrong, hosts and upstreams included.
    """
    # A bare --wait means the default; --wait=SECONDS gives the time.
    argv = [f"--wait={DEFAULT_WAIT:g}" if a == "--wait" else a for a in argv]
    ns = buildParser().parse_args(argv)
    opts = vars(ns)
    if "etcd" in opts:
        endpoints = parseEndpoints(opts["etcd"], "--etcd")
    elif environ.get("REVPROXY_ETCD"):
        endpoints = parseEndpoints(environ["REVPROXY_ETCD"], "$REVPROXY_ETCD")
    else:
        endpoints = (DEFAULT_ETCD,)
    if "prefix" in opts:
        prefix = parsePrefix(opts["prefix"], "--prefix")
    elif environ.get("REVPROXY_PREFIX"):
        prefix = parsePrefix(environ["REVPROXY_PREFIX"], "$REVPROXY_PREFIX")
    else:
        prefix = DEFAULT_PREFIX
    timeout = (
        _value("--timeout", parseSeconds, opts["timeout"])
        if "timeout" in opts
        else DEFAULT_TIMEOUT
    )
    maxTxnOps = (
        _value("--max-txn-ops", parsePositiveCount, opts["max_txn_ops"])
        if "max_txn_ops" in opts
        else DEFAULT_MAX_TXN_OPS
    )
    nodesPrefix = (
        parsePrefix(opts["nodes_prefix"], "--nodes-prefix")
        if "nodes_prefix" in opts
        else DEFAULT_NODES_PREFIX
    )
    wait = None
    if getattr(ns, "wait", None) is not None:
        wait = _value("--wait", parseSeconds, ns.wait)
    command: str = ns.command
    host = _host(ns.host) if getattr(ns, "host", None) is not None else None
    weight = None
    upstreams: tuple[Upstream, ...] = ()
    if command == "add":
        if ns.weight is not None:
            weight = _value("--weight", parsePositiveCount, ns.weight)
        assert host is not None
        upstreams = _upstreams(ns.upstreams, weight or 1, host)
    elif command == "rm":
        assert host is not None
        upstreams = _upstreams(ns.upstreams, 1, host)
    return Config(
        command=command,
        endpoints=endpoints,
        prefix=prefix,
        timeout=timeout,
        maxTxnOps=maxTxnOps,
        host=host,
        upstreams=upstreams,
        weight=weight,
        json=bool(getattr(ns, "json", False)),
        file=getattr(ns, "file", None),
        dryRun=bool(getattr(ns, "dry_run", False)),
        replace=bool(getattr(ns, "replace", False)),
        admin=_adminUrl(getattr(ns, "admin", None)),
        wait=wait,
        nodesPrefix=nodesPrefix,
        path=getattr(ns, "path", None),
    )


def _adminUrl(url: str | None) -> str | None:
    """
    Check the URL of C{ls --admin}: http or https, no query.
    """
    if url is None:
        return None
    if not url.startswith(("http://", "https://")) or "?" in url or " " in url:
        raise UsageError(f"--admin: {url!r} is not an http:// or https:// URL")
    return url.rstrip("/")
