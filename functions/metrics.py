"""Request metrics under one set of names, for every platform.

    App.handle ── begin() ──▶ RequestMetrics (a context variable) ◀── pipeline.predict: phases,
       │                                                              images, batches, errors
       └── Recorder.finish(...) ──▶ METRICS=prometheus: prometheus_client, GET /metrics
                                    METRICS=emf:        one CloudWatch EMF line per request
                                    METRICS=off:        nothing (the default)

Each request's figures are gathered on one `RequestMetrics` while it is served and handed
to the recorder once, at the end: a Prometheus recorder adds them to its counters and
histograms; an EMF recorder writes them as one JSON line on stdout, which Lambda sends to
CloudWatch Logs, where they become CloudWatch metrics (Lambda has nothing to scrape).

`NAMES` is the one list of names, kinds and units; both recorders and the README use it.
``prometheus_client`` is imported only by the Prometheus recorder, so neither the default
nor the EMF setting pays its import (tens of milliseconds) at cold start.

Labels stay few and bounded, so a fuzzer cannot grow the series: ``route`` is the route's
pattern (``unmatched`` for any other path), never the raw path; ``protocol`` is ``native``
for the function's own API (a protocol route sets its own with `label_request`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

T = TypeVar("T")

NATIVE = "native"
"""The ``protocol`` label of the function's own API (``POST /``, health, metrics)."""
UNMATCHED = "unmatched"
"""The ``route`` label of a request no route matched (a 404, whatever its path)."""
NO_ERROR = "none"
"""The ``code`` label of a request answered without an error."""
EMF_NAMESPACE = "tf-image-functions"

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BYTES = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
_COUNTS = (1, 2, 4, 8, 16, 32, 64)
_LOAD_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class Name:
    """One metric: the same name in Prometheus and in CloudWatch."""

    name: str
    kind: str
    """``counter``, ``histogram`` or ``gauge``."""
    labels: tuple[str, ...]
    """Prometheus labels; the CloudWatch dimensions of its EMF line."""
    unit: str
    """The CloudWatch unit (EMF)."""
    help: str
    buckets: tuple[float, ...] = ()


REQUESTS = Name("function_requests_total", "counter", ("route", "protocol", "status", "code"),
                "Count", "Requests answered, by route pattern, protocol, status and error code.")
REQUEST_SECONDS = Name("function_request_seconds", "histogram", ("route", "protocol"), "Seconds",
                       "Time from the request reaching the app to its answer.", _SECONDS)
REQUEST_BYTES = Name("function_request_size_bytes", "histogram", ("route", "protocol"), "Bytes",
                     "Request body bytes as received (before any gzip inflation).", _BYTES)
RESPONSE_BYTES = Name("function_response_size_bytes", "histogram", ("route", "protocol"),
                      "Bytes", "Response body bytes.", _BYTES)
PARSE_SECONDS = Name("function_parse_seconds", "histogram", ("protocol",), "Seconds",
                     "Predict phase 1: body, base64, image headers, EXIF orientation.", _SECONDS)
MODEL_SECONDS = Name("function_model_seconds", "histogram", ("protocol",), "Seconds",
                     "Predict phase 2: the model's inputs and the backend call(s).", _SECONDS)
ANSWER_SECONDS = Name("function_answer_seconds", "histogram", ("protocol",), "Seconds",
                      "Predict phase 3: outputs to the JSON answer.", _SECONDS)
IMAGES = Name("function_images_per_request", "histogram", ("protocol",), "Count",
              "Images in one predict request.", _COUNTS)
BATCH = Name("function_batch_size", "histogram", ("backend",), "Count",
             "Images per backend call (a refused batch is retried one image at a time).",
             _COUNTS)
MODEL_ERRORS = Name("function_model_errors_total", "counter", ("backend", "code"), "Count",
                    "Predict calls that failed in the model phase, by error code "
                    "(upstream_unavailable, gateway_timeout, bad_gateway, model_not_found...).")
MODEL_LOADS = Name("function_model_loads_total", "counter", ("backend", "result"), "Count",
                   "Backend loads (reading the model, or connecting to the model server), "
                   "by result: ok or failed.")
MODEL_LOAD_SECONDS = Name("function_model_load_seconds", "histogram", ("backend", "result"),
                          "Seconds", "Time one backend load took.", _LOAD_SECONDS)
MODEL_READY = Name("function_model_ready", "gauge", ("backend",), "None",
                   "1 while the model is loaded and answering, else 0 (Prometheus only: "
                   "read at scrape time).")

NAMES = (REQUESTS, REQUEST_SECONDS, REQUEST_BYTES, RESPONSE_BYTES, PARSE_SECONDS, MODEL_SECONDS,
         ANSWER_SECONDS, IMAGES, BATCH, MODEL_ERRORS, MODEL_LOADS, MODEL_LOAD_SECONDS, MODEL_READY)


@dataclass
class RequestMetrics:
    """What one request measured, gathered while it is served.

    `App.handle` makes one per request; the pipeline (and any protocol route) fills in
    what it knows. A field left None was not measured (a health check has no phases).
    """

    route: str | None = None
    protocol: str = NATIVE
    parse_seconds: float | None = None
    model_seconds: float | None = None
    answer_seconds: float | None = None
    images: int | None = None
    batches: list[int] = field(default_factory=list)
    model_error: str | None = None


_current: ContextVar[RequestMetrics | None] = ContextVar("request_metrics", default=None)


def begin() -> tuple[RequestMetrics, Any]:
    """A fresh `RequestMetrics` for the request this thread starts; reset with the token."""
    metrics = RequestMetrics()
    return metrics, _current.set(metrics)


def end(token: Any) -> None:
    _current.reset(token)


def current() -> RequestMetrics:
    """The request's metrics; a throwaway one outside `App.handle` (benches, tests)."""
    return _current.get() or RequestMetrics()


def label_request(*, route: str | None = None, protocol: str | None = None) -> None:
    """Name the request's route pattern and protocol, from the route that serves it.

    A protocol route calls ``label_request(route="/v1/models/{name}:predict",
    protocol="tfserving-rest")`` before the shared pipeline runs.
    """
    metrics = current()
    if route is not None:
        metrics.route = route
    if protocol is not None:
        metrics.protocol = protocol


def timed_model_phase(call: Callable[[], T]) -> T:
    """``call()`` timed as the model phase, its failure's code counted as a model error."""
    metrics = current()
    started = time.perf_counter()
    try:
        return call()
    except Exception as exc:
        metrics.model_error = getattr(exc, "code", "internal")
        raise
    finally:
        metrics.model_seconds = time.perf_counter() - started


@dataclass(frozen=True)
class Outcome:
    """How a request ended, as `App.handle` saw it."""

    status: int
    code: str | None
    seconds: float
    bytes_in: int
    bytes_out: int
    request_id: str


class Recorder:
    """Where finished requests go: nowhere (METRICS=off). Subclasses record them."""

    exposes = False
    """Whether GET /metrics serves this recorder's figures."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def finish(self, metrics: RequestMetrics, outcome: Outcome) -> None:
        """Record one answered request."""

    def model_load(self, seconds: float, ok: bool) -> None:
        """Record one backend load."""

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text and its content type (only when `exposes`)."""
        raise NotImplementedError

    def timed_factory(self, factory: Callable[[], T]) -> Callable[[], T]:
        """``factory`` that records each call as a model load: its time and result."""

        def load() -> T:
            started = time.monotonic()
            try:
                backend = factory()
            except BaseException:
                self.model_load(time.monotonic() - started, ok=False)
                raise
            self.model_load(time.monotonic() - started, ok=True)
            return backend

        return load


def create(kind: str, backend: str, *, namespace: str = EMF_NAMESPACE,
           ready: Callable[[], bool] | None = None, stream: IO[str] | None = None
           ) -> Recorder:
    """The recorder METRICS asks for: ``off``, ``prometheus`` or ``emf``."""
    if kind == "prometheus":
        return PrometheusRecorder(backend, ready or (lambda: False))
    if kind == "emf":
        return EmfRecorder(backend, namespace, stream)
    return Recorder(backend)


class EmfRecorder(Recorder):
    """CloudWatch embedded metric format: one JSON line per request on stdout.

    The line holds the figures as root members, and ``_aws.CloudWatchMetrics`` says which
    are metrics and which members are their dimensions (the `Name` labels). Lambda sends
    stdout to CloudWatch Logs, which extracts the metrics; the same line stays searchable
    in Logs Insights with its request and trace ids. Specification:
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
    """

    def __init__(self, backend: str, namespace: str = EMF_NAMESPACE,
                 stream: IO[str] | None = None) -> None:
        super().__init__(backend)
        self.namespace = namespace
        self._stream = stream
        self._encoded: dict[Any, str] = {}

    def finish(self, metrics: RequestMetrics, outcome: Outcome) -> None:
        from functions import logs

        route = metrics.route or UNMATCHED
        doc: dict[str, Any] = {
            "route": route, "protocol": metrics.protocol, "status": str(outcome.status),
            "code": outcome.code or NO_ERROR, "backend": self.backend,
            "request_id": outcome.request_id,
            REQUESTS.name: 1, REQUEST_SECONDS.name: round(outcome.seconds, 6),
            REQUEST_BYTES.name: outcome.bytes_in, RESPONSE_BYTES.name: outcome.bytes_out,
        }
        per_route = [REQUEST_SECONDS, REQUEST_BYTES, RESPONSE_BYTES]
        per_protocol: list[Name] = []
        for name, value in ((PARSE_SECONDS, metrics.parse_seconds),
                            (MODEL_SECONDS, metrics.model_seconds),
                            (ANSWER_SECONDS, metrics.answer_seconds),
                            (IMAGES, metrics.images)):
            if value is not None:
                doc[name.name] = round(value, 6) if isinstance(value, float) else value
                per_protocol.append(name)
        directives: list[tuple[tuple[str, ...], tuple[Name, ...]]] = [
            (REQUESTS.labels, (REQUESTS,)), (REQUEST_SECONDS.labels, tuple(per_route))]
        if per_protocol:
            directives.append((("protocol",), tuple(per_protocol)))
        if metrics.batches:
            doc[BATCH.name] = metrics.batches[:100]
            directives.append((BATCH.labels, (BATCH,)))
        if metrics.model_error is not None:
            doc[MODEL_ERRORS.name] = 1
            directives.append((MODEL_ERRORS.labels, (MODEL_ERRORS,)))
        trace = logs.trace.get()
        if trace is not None:
            doc.update(trace.ids())
        self._write(doc, tuple(directives))

    def model_load(self, seconds: float, ok: bool) -> None:
        doc = {"backend": self.backend, "result": "ok" if ok else "failed",
               MODEL_LOADS.name: 1, MODEL_LOAD_SECONDS.name: round(seconds, 6)}
        self._write(doc, ((MODEL_LOADS.labels, (MODEL_LOADS, MODEL_LOAD_SECONDS)),))

    def _write(self, doc: dict[str, Any],
               directives: tuple[tuple[tuple[str, ...], tuple[Name, ...]], ...]) -> None:
        """One line: the figures, then ``_aws`` (its directives encoded once per shape)."""
        encoded = self._encoded.get(directives)
        if encoded is None:
            encoded = self._encoded[directives] = json.dumps([
                {"Namespace": self.namespace, "Dimensions": [list(dimensions)],
                 "Metrics": [{"Name": n.name, "Unit": n.unit} for n in names]}
                for dimensions, names in directives], separators=(",", ":"))
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        stream = self._stream or sys.stdout
        stream.write(f'{body[:-1]},"_aws":{{"Timestamp":{int(time.time() * 1000)},'
                     f'"CloudWatchMetrics":{encoded}}}}}\n')
        stream.flush()


class PrometheusRecorder(Recorder):
    """prometheus_client counters and histograms in a registry of the app's own.

    A registry per app (not the library's global one) keeps apps built in one process
    (tests, benches) apart. The process's CPU, memory and garbage-collector figures are
    added, as any Prometheus client exposes them. One server worker has one registry:
    functions-framework runs one worker by default (WORKERS=1) with many threads.
    """

    exposes = True

    def __init__(self, backend: str, ready: Callable[[], bool]) -> None:
        super().__init__(backend)
        import prometheus_client as prom
        from prometheus_client.core import GaugeMetricFamily

        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        for collector in (prom.ProcessCollector, prom.PlatformCollector, prom.GCCollector):
            collector(registry=self.registry)
        made: dict[str, Any] = {}
        for name in NAMES:
            if name.kind == "counter":
                made[name.name] = prom.Counter(name.name, name.help, name.labels,
                                               registry=self.registry)
            elif name.kind == "histogram":
                made[name.name] = prom.Histogram(name.name, name.help, name.labels,
                                                 registry=self.registry, buckets=name.buckets)
        self._made = made
        self._children: dict[tuple[str, ...], Any] = {}

        class _Ready:
            def describe(self) -> Any:  # so registering it does not ask before the model exists
                return [GaugeMetricFamily(MODEL_READY.name, MODEL_READY.help,
                                          labels=MODEL_READY.labels)]

            def collect(self) -> Any:
                family = GaugeMetricFamily(MODEL_READY.name, MODEL_READY.help,
                                           labels=MODEL_READY.labels)
                family.add_metric([backend], 1.0 if ready() else 0.0)
                yield family

        self.registry.register(_Ready())

    def _child(self, name: Name, *values: str) -> Any:
        """The labelled series, cached: `labels()` costs a lock and a lookup each time."""
        key = (name.name, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._made[name.name].labels(*values)
        return child

    def finish(self, metrics: RequestMetrics, outcome: Outcome) -> None:
        route, protocol = metrics.route or UNMATCHED, metrics.protocol
        self._child(REQUESTS, route, protocol, str(outcome.status),
                    outcome.code or NO_ERROR).inc()
        self._child(REQUEST_SECONDS, route, protocol).observe(outcome.seconds)
        self._child(REQUEST_BYTES, route, protocol).observe(outcome.bytes_in)
        self._child(RESPONSE_BYTES, route, protocol).observe(outcome.bytes_out)
        for name, value in ((PARSE_SECONDS, metrics.parse_seconds),
                            (MODEL_SECONDS, metrics.model_seconds),
                            (ANSWER_SECONDS, metrics.answer_seconds),
                            (IMAGES, metrics.images)):
            if value is not None:
                self._child(name, protocol).observe(value)
        for size in metrics.batches:
            self._child(BATCH, self.backend).observe(size)
        if metrics.model_error is not None:
            self._child(MODEL_ERRORS, self.backend, metrics.model_error).inc()

    def model_load(self, seconds: float, ok: bool) -> None:
        result = "ok" if ok else "failed"
        self._child(MODEL_LOADS, self.backend, result).inc()
        self._child(MODEL_LOAD_SECONDS, self.backend, result).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
