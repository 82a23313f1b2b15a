"""Trace context: read from each platform's header, written into every log line.

The parsing is tested on the headers as each platform documents them; the promise that a
request's trace id is in every log line it produces is tested through the real server,
on its real log output; the propagation to TF Serving through a recording stand-in of its
REST API (a real HTTP server on loopback that answers like tests/backends/fakes.py's).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from functions import logs
from functions.backends.remote import Target
from functions.backends.tfserving_rest import RestBackend
from modelmeta import ModelMetadata
from tests.backends.fakes import REST_METADATA, _scores
from tests.conftest import encode
from tests.operate.conftest import TRACE_ID, TRACEPARENT

XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.mark.parametrize("headers, lambda_env, expected", [
    ({"traceparent": TRACEPARENT}, None, (TRACE_ID, "00f067aa0ba902b7", True, None)),
    ({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"}, None,
     (TRACE_ID, "00f067aa0ba902b7", False, None)),
    ({"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1"}, None,
     ("105445aa7843bc8bf206b12000100000", "0000000000000001", True, None)),
    ({"x-cloud-trace-context": "105445AA7843BC8BF206B12000100000"}, None,
     ("105445aa7843bc8bf206b12000100000", None, None, None)),
    ({"x-amzn-trace-id": XRAY}, None, ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8",
                                       True, "1-5759e988-bd862e3fe1be46a994272793")),
    ({}, "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0", (
        "5759e988bd862e3fe1be46a994272793", None, False, "1-5759e988-bd862e3fe1be46a994272793")),
    # the caller's W3C trace wins; X-Ray's id is still written for the X-Ray console
    ({"traceparent": TRACEPARENT}, XRAY,
     (TRACE_ID, "00f067aa0ba902b7", True, "1-5759e988-bd862e3fe1be46a994272793")),
])
def test_each_platforms_header(headers, lambda_env, expected):
    context = logs.trace_context(headers, lambda_env)
    assert context is not None
    assert (context.trace_id, context.span_id, context.sampled,
            context.xray_trace_id) == expected


@pytest.mark.parametrize("headers", [
    {}, {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
    {"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"},
    {"traceparent": f"ff-{TRACE_ID}-00f067aa0ba902b7-01"},
    {"traceparent": f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01"},
    {"traceparent": TRACEPARENT + "-extra"},
    {"x-cloud-trace-context": "not-a-trace/1;o=1"}, {"x-amzn-trace-id": "Root=2-1-2"},
    {"x-amzn-trace-id": "Self=1-5759e988-bd862e3fe1be46a994272793"},
])
def test_malformed_headers_are_ignored_never_an_error(headers):
    assert logs.trace_context(headers, None) is None


def test_the_log_fields_of_each_platform():
    context = logs.trace_context({"traceparent": TRACEPARENT}, XRAY, project="demo-project")
    assert context is not None
    assert context.ids() == {
        "trace_id": TRACE_ID, "span_id": "00f067aa0ba902b7",
        "logging.googleapis.com/trace": f"projects/demo-project/traces/{TRACE_ID}",
        "logging.googleapis.com/spanId": "00f067aa0ba902b7",
        "logging.googleapis.com/trace_sampled": True,
        "xray_trace_id": "1-5759e988-bd862e3fe1be46a994272793"}
    assert logs.trace_context({"traceparent": TRACEPARENT}).ids() == {  # type: ignore[union-attr]
        "trace_id": TRACE_ID, "span_id": "00f067aa0ba902b7"}


def test_a_call_to_tf_serving_carries_the_trace_with_a_new_span(demo_model):
    """The REST backend against a recording stand-in of TF Serving's REST API."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._send(json.dumps(REST_METADATA).encode())

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(self.headers.get("traceparent"))
            self._send(json.dumps({"outputs": _scores(len(body["inputs"]["image_bytes"]))})
                       .encode())

        def _send(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = RestBackend(ModelMetadata.load(demo_model.served), Target("digits"),
                              f"http://127.0.0.1:{httpd.server_address[1]}", timeout=10,
                              retries=0)
        inputs = {"image_bytes": np.array([encode(np.zeros((28, 28), np.uint8))], dtype=object)}
        backend.predict(inputs)  # no trace: no header
        token = logs.trace.set(logs.trace_context({"traceparent": TRACEPARENT}))
        try:
            backend.predict(inputs)
        finally:
            logs.trace.reset(token)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen[0] is None
    version, trace_id, span_id, flags = (seen[1] or "").split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert len(span_id) == 16 and span_id != "00f067aa0ba902b7"


@pytest.mark.slow
def test_every_log_line_of_a_traced_request_has_its_trace(operated, digits):
    request_id = "trace-test-0001"
    png = encode(digits.x_test[1])
    for headers in ({"traceparent": TRACEPARENT},
                    {"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}):
        response = operated.post(files={"file": ("d.png", png, "image/png")},
                                 headers={**headers, "X-Request-Id": request_id})
        assert response.status_code == 200
        bad = operated.post("/predict", json={"image": "####"},
                            headers={**headers, "X-Request-Id": request_id + "-bad"})
        assert bad.status_code == 400
    lines = [json.loads(line) for line in operated.log.read_text().splitlines()
             if line.startswith("{")]
    ours = [line for line in lines if str(line.get("request_id", "")).startswith(request_id)]
    assert len(ours) >= 4
    for line in ours:
        assert line["trace_id"] == TRACE_ID, line
        assert line["logging.googleapis.com/trace"] == (
            f"projects/demo-project/traces/{TRACE_ID}")
    untraced = [line for line in lines if line.get("request_id") and "trace_id" not in line]
    assert untraced, "requests without a trace carry no trace fields"
