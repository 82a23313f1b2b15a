"""schemathesis against the live function, from the function's own OpenAPI document.

The real functions-framework server on loopback serves the demo model with the document
on (OPENAPI=true, METRICS=prometheus); schemathesis loads the document from it and sends
generated requests to every operation: schema-valid ones (with the document's examples)
and, for the predict operations, schema-violating ones. Every response must conform to
the document (status, content type, headers, body schema) and none may be a 5xx.
A bounded number of examples per operation (FUZZ_EXAMPLES, 40 by default) keeps it to
about a minute on 2 cores.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
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
MODES = {"valid": GenerationMode.POSITIVE, "invalid": GenerationMode.NEGATIVE}


@pytest.fixture(scope="module")
def api_schema(operated):
    """The document as the live function serves it, requests aimed at that function."""
    return schemathesis.openapi.from_url(operated.url + "/openapi.json")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_answer_conforms_and_none_is_a_5xx(api_schema, label, mode):
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    if mode == "invalid" and method != "POST":
        pytest.skip("only the predict operations take input that can be invalid")
    strategies = [operation.as_strategy(MODES[mode])]
    if mode == "valid":
        strategies += operation.get_strategies_from_examples()

    @given(case=st.one_of(strategies))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=60)

    fuzz()


def test_the_function_counted_no_5xx_while_fuzzed(operated):
    """The function's own metrics agree: many requests, no server error among them but the
    readiness polls made while the model was loading (tests.conftest.start_server)."""
    counts = requests_by_label(scrape(operated.get("/metrics").text))
    assert sum(counts.values()) >= 5 * min(EXAMPLES, 20)
    assert [key for key in counts if key[1].startswith("5")
            and key != ("/healthz", "503", "none")] == []
