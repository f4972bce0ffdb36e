# -*- test-case-name: tests.ctl.test_main -*-
"""
C{revproxyctl}: the operators' command line for the routes in etcd.

Routes live in etcd keys C{<prefix><host>/<upstream>} whose value is empty
or C{{"weight": N}}.  The commands::

    revproxyctl [--etcd URLS] [--prefix P] [--timeout S] [--max-txn-ops N]
        add HOST UPSTREAM [UPSTREAM...] [--weight N]
        rm HOST [UPSTREAM...]
        add|rm|import ... [--wait[=SECONDS]]
        ls [HOST] [--json]
        nodes [--json]
        explain HOST [PATH]
        watch
        export
        import FILE|- [--dry-run] [--replace]

This module is the composition root: L{main} parses the arguments
(L{revproxy.ctl.args}) and reads an import document
(L{revproxy.ctl.documents}), then L{run} builds an L{EtcdClient} on the
global reactor and runs a command of L{revproxy.ctl.commands} under
L{twisted.internet.task.react}.  The planning of changes, with no I/O, is
L{revproxy.ctl.plans}.

Every host and upstream is validated by L{revproxy.routing}, the parser the
proxy uses, before anything is written.  Every change (one C{add}, one
C{rm}, one C{import}) is one etcd transaction, guarded by a comparison of
the revision of every key it touches with the revision it was planned from,
so a concurrent writer makes it re-plan, never half-apply.

Exit statuses: 0 success (an C{add} of what is already there included); 1 the
command could not be done (etcd unreachable or failing, C{rm} of something
absent, a change too large for one transaction, concurrent changes that did
not settle); 2 bad usage or input (a bad host, upstream, option or file),
found before anything was written; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from revproxy.ctl.args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Config,
    UsageError,
    parseArgs,
)
from revproxy.ctl.commands import (
    RouteWatcher,
    describeFailure,
    runAdd,
    runExport,
    runImport,
    runLs,
    runRm,
    writeLine,
)
from revproxy.ctl.documents import Routes, loadDocument
from revproxy.ctl.fleet import runExplain, runNodes, waitApplied

__all__ = ["main", "run"]


async def run(
    reactor: Any,
    config: Config,
    routes: Routes | None,
    out: TextIO,
    err: TextIO,
) -> None:
    """
    Build the etcd client on C{reactor} and run the command; raise
    C{SystemExit} with a non-zero status.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    from revproxy.etcd.client import EtcdClient

    agent = Agent(reactor, connectTimeout=config.timeout)
    store = EtcdClient(reactor, config.endpoints, HTTPClient(agent), config.timeout)
    finished = False
    stopping = False

    def interrupted() -> Deferred[int] | None:
        # The reactor is stopping (SIGINT, SIGTERM): a watch ends normally;
        # any other command is cut short.
        nonlocal stopping
        stopping = True
        if config.command == "watch":
            return watcher.stop()
        if not finished:
            if config.command in ("add", "rm", "import"):
                why = "the change may or may not have been applied: check with ls"
            else:
                why = "nothing was changed"
            writeLine(err, f"{PROG}: interrupted; {why}")
        return None

    status = EXIT_OK
    watcher = RouteWatcher(store, config.prefix, reactor, out, err)
    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    written: list[int] = []
    try:
        if config.command == "add":
            status = await runAdd(store, config, out, written)
        elif config.command == "rm":
            status = await runRm(store, config, out, written)
        elif config.command == "nodes":
            status = await runNodes(store, config, out, err)
        elif config.command == "explain":
            status = await runExplain(
                store, config, out, err, _fetcher(reactor, agent, config.timeout)
            )
        elif config.command == "ls":
            status = await runLs(store, config, out, err, _fetcher(reactor, agent, config.timeout))
        elif config.command == "export":
            status = await runExport(store, config, out, err)
        elif config.command == "import":
            assert routes is not None
            status = await runImport(store, config, routes, out, written)
        elif config.command == "watch":
            status = await watcher.start()
        if config.wait is not None and written and status == EXIT_OK:
            status = await waitApplied(store, config, written[0], reactor, out)
    except Exception:
        if stopping and config.command != "watch":
            # The failure is the interruption's doing, already reported.
            status = EXIT_INTERRUPTED
        else:
            writeLine(err, f"{PROG}: {describeFailure(Failure(), config.endpoints)}")
            status = EXIT_FAILED
    finished = True
    if status:
        raise SystemExit(status)


def _fetcher(
    reactor: Any, agent: Any, timeout: float
) -> Callable[[str], Awaitable[bytes]]:
    """
    GET a URL's body with C{agent} (for C{ls --admin}); a status other
    than 200 is an error.
    """
    from treq.client import HTTPClient

    client = HTTPClient(agent)

    async def fetch(url: str) -> bytes:
        response = await client.get(url, timeout=timeout, reactor=reactor)
        body: bytes = await response.content()
        if response.code != 200:
            raise ValueError(f"status {response.code}")
        return body

    return fetch


def main(argv: Sequence[str] | None = None) -> None:
    """
    The C{revproxyctl} command: parse C{argv} (default C{sys.argv[1:]}), run
    the command on the global reactor, and exit with its status.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parseArgs(args, os.environ)
        routes = (
            loadDocument(config.file, sys.stdin)
            if config.command == "import" and config.file is not None
            else None
        )
    except UsageError as e:
        writeLine(sys.stderr, f"{PROG}: {e}")
        raise SystemExit(EXIT_USAGE) from None

    from twisted.internet.task import react

    outcome: list[int] = []

    async def command(reactor: Any) -> None:
        try:
            await run(reactor, config, routes, sys.stdout, sys.stderr)
        except SystemExit as e:
            outcome.append(int(e.code or 0))
            raise
        outcome.append(EXIT_OK)

    try:
        react(command)
    except SystemExit as e:
        code = e.code
        if not outcome and config.command != "watch":
            # The reactor stopped (SIGINT, SIGTERM) before the command
            # finished.
            code = EXIT_INTERRUPTED
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
