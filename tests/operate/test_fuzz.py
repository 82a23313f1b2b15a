"""schemathesis against the live function, from the function's own OpenAPI document.

The real functions-framework server on loopback serves the demo model with the document
on (OPENAPI=true, METRICS=prometheus); schemathesis loads the document from it and sends
generated requests to every operation, the protocols' too (TF Serving REST, the Open
Inference Protocol, Simple TF Serving's body on / and /predict): schema-valid ones (with
the document's examples) and, for the POST operations, schema-violating ones. Every
response must conform to the document (status, content type, headers, body schema) and
none may be a 5xx. A bounded number of examples per operation keeps it to about two
minutes on 2 cores: FUZZ_EXAMPLES (40 by default) for the native operations, half that for
a protocol operation and a quarter for its /versions/ and /labels/ twins, which run the
same code behind a longer path.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions import openapi
from functions.config import Settings
from tests.operate.test_metrics import requests_by_label, scrape

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
OPERATIONS = [f"{method.upper()} {path}" for path, item in openapi.document(
    replace(Settings(), metrics="prometheus", openapi=True))["paths"].items() for method in item]
PROTOCOL_PREFIXES = ("/v1/", "/v2")


def budget(path: str) -> int:
    """Examples for one operation and mode: the native ones get FUZZ_EXAMPLES."""
    if not path.startswith(PROTOCOL_PREFIXES):
        return EXAMPLES
    if "/versions/" in path or "/labels/" in path:
        return max(3, EXAMPLES // 4)
    return max(5, EXAMPLES // 2)
MODES = {"valid": GenerationMode.POSITIVE, "invalid": GenerationMode.NEGATIVE}


def reaches_the_function(case) -> bool:
    """False for a path with a line break, which the document's path parameters exclude;
    the server answers it as JSON all the same (test_a_line_break_in_the_path_...)."""
    return "%0a" not in case.formatted_path.lower() and "\n" not in case.formatted_path


@pytest.fixture(scope="module")
def api_schema(operated):
    """The document as the live function serves it, requests aimed at that function."""
    return schemathesis.openapi.from_url(operated.url + "/openapi.json")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_answer_conforms_and_none_is_a_5xx(api_schema, label, mode):
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    if mode == "invalid" and "requestBody" not in operation.definition.raw:
        pytest.skip("only the operations with a body take input that can be invalid")
    strategies = [operation.as_strategy(MODES[mode])]
    if mode == "valid":
        strategies += operation.get_strategies_from_examples()

    @given(case=st.one_of(strategies))
    @settings(max_examples=budget(path), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        assume(reaches_the_function(case))
        case.call_and_validate(checks=CHECKS, timeout=60)

    fuzz()


def test_the_function_counted_no_5xx_while_fuzzed(operated):
    """The function's own metrics agree: many requests, no server error among them but the
    readiness polls made while the model was loading (tests.conftest.start_server)."""
    counts = requests_by_label(scrape(operated.get("/metrics").text))
    assert sum(counts.values()) >= 5 * min(EXAMPLES, 20)
    assert [key for key in counts if key[1].startswith("5")
            and key != ("/healthz", "503", "none")] == []


def test_a_line_break_in_the_path_is_answered_as_json(operated):
    response = operated.post("/v1/models/a%0Ab:predict", json={"instances": []})
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
