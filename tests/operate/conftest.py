"""The function served as operators run it: metrics on, the OpenAPI document on."""

from __future__ import annotations

import pytest

from tests.conftest import start_server, stop_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def operated(demo_model, tmp_path_factory):
    """functions-framework on loopback with METRICS=prometheus and OPENAPI=true, JSON logs;
    MODEL_NAME names the demo model as its metadata does, so the document's examples of the
    protocols' model paths (/v1/models/digits..., /v2/models/digits/...) reach it."""
    srv = start_server(tmp_path_factory.mktemp("operated"), {
        "MODEL_URI": str(demo_model.served), "MAX_IMAGES": "8", "MODEL_NAME": "digits",
        "METRICS": "prometheus", "OPENAPI": "true", "LOG_FORMAT": "json",
        "TRACE_PROJECT": "demo-project"})
    yield srv
    stop_server(srv)
