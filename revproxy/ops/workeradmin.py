# -*- test-case-name: tests.ops.test_workeradmin -*-
"""
The admin endpoint of a parent with workers (C{--workers N --admin ...}).

Each worker serves its own admin endpoint on a Unix socket only the parent
uses; the parent's endpoint asks every worker when it is asked, and
answers for all of them:

- C{/healthz}: 200 while the parent runs, one line per worker (pid, up or
  not, restarts).
- C{/readyz}: 200 when every worker is ready; 503 naming the first that is
  not.
- C{/routes}: the document of a single process (the first worker's, so
  C{revproxyctl ls --admin} reads it as it is) and, under C{"workers"},
  each worker's pid, hosts and applied etcd revision; C{/routes/<host>}
  asks one worker.
- C{/metrics}: the workers' metrics summed, label set by label set, except
  C{revproxy_etcd_revision} and C{revproxy_etcd_watch_live}, which are the
  lowest over the workers; and per worker C{revproxy_worker_up},
  C{revproxy_worker_restarts_total} and C{revproxy_worker_requests_total}
  (the requests that worker answered since it started).

The worker's numbers are the same as the C{worker} field of its log lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application.service import IService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from revproxy.ops.admin import AdminSite
from revproxy.ops.listener import Listener

if TYPE_CHECKING:
    from revproxy.ops.supervisor import WorkerSupervisor

__all__ = ["ParentAdmin", "adminGet", "parentAdminListener", "sumMetrics"]

#: Gauges that are the lowest over the workers, not their sum.
LOWEST = frozenset({"revproxy_etcd_revision", "revproxy_etcd_watch_live"})


class _OneRequest(Protocol):
    def __init__(self, path: str) -> None:
        self._path = path
        self._data: list[bytes] = []
        self.done: Deferred[tuple[int, bytes]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"GET %s HTTP/1.0\r\nHost: worker\r\n\r\n" % self._path.encode("ascii")
        )

    def dataReceived(self, data: bytes) -> None:
        self._data.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        head, _, body = b"".join(self._data).partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.done.errback(ValueError("no HTTP response from the worker"))
            return
        self.done.callback((status, body))


def adminGet(reactor: Any, socketPath: str, path: str, timeout: float = 2.0) -> Deferred[tuple[int, bytes]]:
    """
    GET C{path} from a worker's admin endpoint on Unix socket
    C{socketPath}: its status and body; fails if the worker does not
    answer within C{timeout} seconds.
    """
    protocol = _OneRequest(path)
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False  # the parent asks often: no "Starting factory" lines
    endpoint = UNIXClientEndpoint(reactor, socketPath, timeout=int(timeout) or 1)
    connecting: Deferred[Any] = endpoint.connect(factory)

    def connected(p: _OneRequest) -> Deferred[tuple[int, bytes]]:
        timer = reactor.callLater(timeout, p.transport.abortConnection)  # type: ignore[union-attr]
        p.done.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return p.done

    result: Deferred[tuple[int, bytes]] = connecting.addCallback(connected)
    return result


def sumMetrics(texts: Mapping[int, str]) -> tuple[list[Metric], dict[int, float]]:
    """
    The metrics of every worker (their C{/metrics} text, by worker
    number), summed; and each worker's request count.
    """
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    order: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
    requests: dict[int, float] = {}
    for number, text in sorted(texts.items()):
        requests[number] = 0.0
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
            lowest = family.name in LOWEST
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                if family.name == "revproxy_requests":
                    requests[number] += sample.value
                if key not in values:
                    values[key] = sample.value
                    order.append(key)
                elif lowest:
                    values[key] = min(values[key], sample.value)
                else:
                    values[key] += sample.value
    for key in order:
        name, sampleName, labels = key
        families[name].add_sample(sampleName, dict(labels), values[key])
    return list(families.values()), requests


class _Metrics(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, admin: ParentAdmin) -> None:
        super().__init__()
        self.admin = admin

    def render_GET(self, request: Request) -> Any:
        d = self.admin.ask(self.path(request))

        def answer(result: tuple[int, str, bytes]) -> None:
            code, contentType, body = result
            if request.finished or request.channel is None:
                return
            request.setResponseCode(code)
            request.setHeader(b"content-type", contentType.encode("ascii"))
            request.setHeader(b"cache-control", b"no-store")
            request.write(body)
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET

    def path(self, request: Request) -> str:
        return ""


class _Health(_Leaf):
    def path(self, request: Request) -> str:
        return "/healthz"


class _Ready(_Leaf):
    def path(self, request: Request) -> str:
        return "/readyz"


class _Routes(_Leaf):
    def path(self, request: Request) -> str:
        rest = b"/".join(p for p in request.postpath or [] if p)
        return "/routes" + ("/" + rest.decode("ascii", "replace") if rest else "")


class _MetricsLeaf(_Leaf):
    def path(self, request: Request) -> str:
        return "/metrics"


class ParentAdmin(Resource):
    """
    The root of the parent's admin site: asks every worker.
    """

    def __init__(self, supervisor: WorkerSupervisor, reactor: Any, timeout: float = 2.0) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._reactor = reactor
        self.timeout = timeout
        for name, leaf in [
            (b"healthz", _Health), (b"readyz", _Ready),
            (b"routes", _Routes), (b"metrics", _MetricsLeaf),
        ]:
            self.putChild(name, leaf(self))

    def _fromAll(self, path: str) -> Deferred[dict[int, tuple[int, bytes] | None]]:
        workers = sorted(self._supervisor.workers.items())

        def one(worker: Any) -> Deferred[tuple[int, bytes] | None]:
            d: Deferred[Any] = adminGet(self._reactor, worker.adminSocket, path, self.timeout)
            return d.addErrback(lambda _: None)

        d = gatherResults([one(w) for _, w in workers])
        return d.addCallback(lambda answers: dict(zip([n for n, _ in workers], answers)))

    def ask(self, path: str) -> Deferred[tuple[int, str, bytes]]:
        """
        Answer C{path}: its status, content type and body.
        """
        if path.startswith("/routes/"):
            return self._oneWorker(path)
        d = self._fromAll("/routes" if path == "/routes" else path)
        render = {
            "/healthz": self._health, "/readyz": self._ready,
            "/routes": self._routes, "/metrics": self._metrics,
        }[path]
        return d.addCallback(render)

    def _oneWorker(self, path: str) -> Deferred[tuple[int, str, bytes]]:
        workers = [w for _, w in sorted(self._supervisor.workers.items()) if not w.exited]
        if not workers:
            return _done(503, "text/plain; charset=utf-8", b"no worker is running\n")
        d: Deferred[Any] = adminGet(self._reactor, workers[0].adminSocket, path, self.timeout)
        d.addCallback(lambda r: (r[0], "application/json", r[1]))
        return d.addErrback(lambda _: (503, "text/plain; charset=utf-8", b"the worker did not answer\n"))

    def _pid(self, number: int) -> Any:
        worker = self._supervisor.workers.get(number)
        return None if worker is None else worker.pid

    def _health(self, answers: dict[int, tuple[int, bytes] | None]) -> tuple[int, str, bytes]:
        lines = ["ok"]
        for number, answer in sorted(answers.items()):
            state = "up" if answer is not None and answer[0] == 200 else "not answering"
            lines.append(
                f"worker {number}: pid {self._pid(number)}, {state}, "
                f"restarts {self._supervisor.restarts.get(number, 0)}"
            )
        return 200, "text/plain; charset=utf-8", ("\n".join(lines) + "\n").encode()

    def _ready(self, answers: dict[int, tuple[int, bytes] | None]) -> tuple[int, str, bytes]:
        for number, answer in sorted(answers.items()):
            if answer is None:
                why = f"worker {number} is not answering"
            elif answer[0] != 200:
                why = f"worker {number}: {answer[1].decode('utf-8', 'replace').strip()}"
            else:
                continue
            return 503, "text/plain; charset=utf-8", why.encode() + b"\n"
        return 200, "text/plain; charset=utf-8", f"ready: {len(answers)} workers\n".encode()

    def _routes(self, answers: dict[int, tuple[int, bytes] | None]) -> tuple[int, str, bytes]:
        out: dict[str, Any] = {}
        workers: dict[str, Any] = {}
        for number, answer in sorted(answers.items()):
            entry: dict[str, Any] = {"pid": self._pid(number)}
            if answer is not None and answer[0] == 200:
                routes = json.loads(answer[1])
                if not out:  # the document of one process, as revproxyctl ls --admin reads it
                    out.update(routes)
                entry["loaded"] = routes.get("loaded")
                entry["hosts"] = sorted(routes.get("hosts", {}))
                entry["revision"] = routes.get("etcd", {}).get("revision")
            else:
                entry["error"] = "not answering"
            workers[str(number)] = entry
        out["workers"] = workers
        body = json.dumps(out, indent=2, sort_keys=True).encode() + b"\n"
        return 200, "application/json", body

    def _metrics(self, answers: dict[int, tuple[int, bytes] | None]) -> tuple[int, str, bytes]:
        texts = {
            n: a[1].decode("utf-8", "replace")
            for n, a in answers.items() if a is not None and a[0] == 200
        }
        metrics, requests = sumMetrics(texts)
        up = GaugeMetricFamily("revproxy_worker_up", "1 while the worker answers.", labels=["worker"])
        restarts = CounterMetricFamily(
            "revproxy_worker_restarts", "Times the worker died and was restarted.", labels=["worker"]
        )
        served = CounterMetricFamily(
            "revproxy_worker_requests", "Requests the worker answered since it started.",
            labels=["worker"],
        )
        for number in sorted(answers):
            up.add_metric([str(number)], 1 if number in texts else 0)
            restarts.add_metric([str(number)], self._supervisor.restarts.get(number, 0))
            if number in requests:
                served.add_metric([str(number)], requests[number])
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Metrics([*metrics, up, restarts, served]))
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)


def _done(code: int, contentType: str, body: bytes) -> Deferred[tuple[int, str, bytes]]:
    d: Deferred[tuple[int, str, bytes]] = Deferred()
    d.callback((code, contentType, body))
    return d


def parentAdminListener(options: Mapping[str, Any], supervisor: WorkerSupervisor, reactor: Any) -> IService:
    """
    The parent's admin endpoint, on C{--admin}.
    """
    site = AdminSite(ParentAdmin(supervisor, reactor), reactor=reactor)
    listener = Listener(options["admin"], site, reactor)
    listener.setName(f"admin {options['admin']}")
    return listener
