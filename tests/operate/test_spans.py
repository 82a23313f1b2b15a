"""Optional OpenTelemetry spans, and nothing imported when they (and metrics) are off.

The spans go to the SDK's own in-memory exporter, set up as an application would set up
its tracer provider (the function then uses it as it is).
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT
from tests.functions.test_app import B64, call, make_app
from tests.operate.conftest import TRACE_ID, TRACEPARENT


def test_a_request_becomes_a_server_span_in_the_callers_trace():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app(otel_traces_exporter="otlp")
    assert call(app, body={"image": B64}, headers={"traceparent": TRACEPARENT})[0].status == 200
    assert call(app, method="GET", path="/nowhere")[0].status == 404
    served, missing = exporter.get_finished_spans()[-2:]
    assert served.name == "POST /"
    assert f"{served.context.trace_id:032x}" == TRACE_ID
    assert f"{served.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert served.attributes["http.response.status_code"] == 200
    assert served.attributes["function.images"] == 1
    assert "function.model_seconds" in served.attributes
    assert missing.name == "GET unmatched"
    assert missing.attributes["error.type"] == "not_found"
    assert f"{missing.context.trace_id:032x}" != TRACE_ID


def test_off_by_default_and_nothing_imported():
    script = (
        "import sys, json\n"
        "from tests.functions.test_app import B64, call, make_app\n"
        "app = make_app()\n"
        "assert call(app, body={'image': B64}, headers={'traceparent': '"
        + TRACEPARENT + "'})[0].status == 200\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'prometheus_client'))))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
