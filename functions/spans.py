"""Optional OpenTelemetry spans: one server span per request, child of the caller's trace.

Off unless OpenTelemetry's own ``OTEL_TRACES_EXPORTER`` is set (and not ``none``); only
then is the OpenTelemetry SDK imported, so the thin path never pays for it. With it set:

* a tracer provider already configured (``opentelemetry-instrument``, or the
  application's own setup) is used as it is;
* otherwise one is made, exporting through a batch processor to ``console`` (the SDK's
  own) or ``otlp`` (``opentelemetry-exporter-otlp-proto-http`` or ``-grpc``, whichever is
  installed; endpoint and headers from the usual ``OTEL_EXPORTER_OTLP_*`` variables).

A missing SDK or exporter is logged once and the function carries on without spans.
The span is named ``METHOD ROUTE`` and carries the route, status, error code and the
predict phases' durations; while it is open, log lines and calls to TF Serving carry
its trace and span ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from functions import logs
from functions.metrics import Outcome, RequestMetrics

log = logging.getLogger("functions")


class Spans:
    """Starts a span per request when OpenTelemetry is configured; does nothing otherwise."""

    def __init__(self, exporter: str | None) -> None:
        self._tracer: Any = None
        if exporter and exporter != "none":
            self._tracer = _tracer(exporter)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def request(self, method: str) -> AbstractContextManager[Any]:
        """A server span for the request being served (None when off), parented on its trace."""
        return nullcontext() if self._tracer is None else self._span(method)

    @contextmanager
    def _span(self, method: str) -> Iterator[Any]:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        incoming = logs.trace.get()
        carrier = ({"traceparent": incoming.traceparent(incoming.span_id)}
                   if incoming is not None and incoming.span_id else {})
        parent = TraceContextTextMapPropagator().extract(carrier)
        with self._tracer.start_as_current_span(method, context=parent,
                                                kind=trace.SpanKind.SERVER) as span:
            ids = span.get_span_context()
            logs.trace.set(logs.TraceContext(
                f"{ids.trace_id:032x}", f"{ids.span_id:016x}", bool(ids.trace_flags & 1),
                incoming.xray_trace_id if incoming else None,
                incoming.project if incoming else None))
            yield span

    @staticmethod
    def finish(span: Any, method: str, measured: RequestMetrics, outcome: Outcome) -> None:
        """Name the span after its route and record how the request ended."""
        if span is None:
            return
        route = measured.route or "unmatched"
        span.update_name(f"{method} {route}")
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", outcome.status)
        span.set_attribute("function.protocol", measured.protocol)
        if outcome.code:
            span.set_attribute("error.type", outcome.code)
        if outcome.status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, outcome.code or ""))
        for name in ("parse_seconds", "model_seconds", "answer_seconds", "images"):
            value = getattr(measured, name)
            if value is not None:
                span.set_attribute(f"function.{name}", value)


def _tracer(exporter: str) -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER=%s but the OpenTelemetry SDK is not installed "
                    "(pip install opentelemetry-sdk); no spans", exporter)
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        if exporter == "console":
            span_exporter: Any = ConsoleSpanExporter()
        elif exporter == "otlp":
            span_exporter = _otlp()
            if span_exporter is None:
                return None
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not one this function sets up (otlp, "
                        "console); configure the tracer provider yourself; no spans", exporter)
            return None
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(provider)
    return provider.get_tracer("functions")


def _otlp() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp but no OTLP exporter is installed "
                        "(pip install opentelemetry-exporter-otlp-proto-http); no spans")
            return None
    return OTLPSpanExporter()
