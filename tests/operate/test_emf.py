"""METRICS=emf: CloudWatch embedded-metric-format lines, checked against the format.

Every line is validated with `jsonschema` against tests/operate/fixtures/emf.schema.json
(written from Amazon's EMF specification; its source is noted in the file), and against
the specification's rules on target members that a JSON schema cannot state. The fast
tests use the stand-in backend of tests/functions/test_app.py; the slow one runs the
real Lambda handler under the Lambda Runtime Interface Emulator with `awslambdaric`, whose
stdout is what Lambda sends to CloudWatch Logs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from functions import metrics
from functions.metrics import EmfRecorder, Outcome, RequestMetrics
from tests.functions.test_app import B64, call, make_app
from tests.operate.conftest import TRACE_ID, TRACEPARENT

SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "emf.schema.json").read_text())
EVENTS = Path(__file__).resolve().parents[2] / "events"


def check_emf(line: str) -> dict:
    """One EMF document: the schema, then the target-member rules of the specification."""
    doc = json.loads(line)
    jsonschema.validate(doc, SCHEMA)
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(doc.get(key), str), f"dimension {key!r} is not a string member"
        for definition in directive["Metrics"]:
            value = doc.get(definition["Name"])
            if isinstance(value, list):
                assert 0 < len(value) <= 100
                assert all(isinstance(v, (int, float)) for v in value)
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                    f"metric {definition['Name']!r} has no numeric member"
    return doc


def emf_lines(text: str) -> list[dict]:
    return [check_emf(line) for line in text.splitlines() if line.startswith('{"') and
            '"_aws"' in line]


def test_the_schema_refuses_what_the_specification_refuses():
    good = {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [
        {"Namespace": "n", "Dimensions": [["a"]], "Metrics": [{"Name": "m", "Unit": "Count"}]}]},
        "a": "x", "m": 1}
    check_emf(json.dumps(good))
    for broken in ({"m": 1},
                   {**good, "_aws": {"CloudWatchMetrics": good["_aws"]["CloudWatchMetrics"]}},
                   {**good, "_aws": {**good["_aws"], "CloudWatchMetrics": [
                       {"Namespace": "n", "Dimensions": [[f"d{i}" for i in range(10)]],
                        "Metrics": []}]}},
                   {**good, "_aws": {**good["_aws"], "CloudWatchMetrics": [
                       {"Namespace": "n", "Dimensions": [["a"]],
                        "Metrics": [{"Name": "m", "Unit": "Requests"}]}]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)
    with pytest.raises(AssertionError):
        check_emf(json.dumps({**good, "m": "1"}))


def test_one_line_per_request_with_the_same_names_as_prometheus(capsys):
    app = make_app(metrics="emf", metrics_namespace="digits-prod")
    capsys.readouterr()
    call(app, body={"images": [B64, B64]}, headers={"traceparent": TRACEPARENT})
    call(app, method="GET", path="/no/such/thing")
    lines = emf_lines(capsys.readouterr().out)
    assert len(lines) == 3  # the model load, then one per request
    load, ok, missing = lines
    assert load["backend"] == "inprocess" and load["result"] == "ok"
    assert load["function_model_loads_total"] == 1
    assert (ok["route"], ok["protocol"], ok["status"], ok["code"]) == ("/", "native", "200",
                                                                       "none")
    assert ok["function_requests_total"] == 1
    assert ok["function_images_per_request"] == 2
    assert ok["function_batch_size"] == [2]
    assert ok["trace_id"] == TRACE_ID
    names = {m["Name"] for d in ok["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert names == {n.name for n in metrics.NAMES} - {
        "function_model_errors_total", "function_model_loads_total",
        "function_model_load_seconds", "function_model_ready"}
    assert {d["Namespace"] for d in ok["_aws"]["CloudWatchMetrics"]} == {"digits-prod"}
    assert (missing["route"], missing["status"], missing["code"]) == ("unmatched", "404",
                                                                      "not_found")
    assert "function_parse_seconds" not in missing


def test_a_model_error_is_its_own_metric():
    stream = io.StringIO()
    recorder = EmfRecorder("tfserving-rest", stream=stream)
    recorder.finish(RequestMetrics(route="/", images=1, batches=[1], model_seconds=0.5,
                                   model_error="gateway_timeout"),
                    Outcome(504, "gateway_timeout", 0.51, 100, 90, "r" * 32))
    (doc,) = emf_lines(stream.getvalue())
    directive = next(d for d in doc["_aws"]["CloudWatchMetrics"]
                     if d["Metrics"][0]["Name"] == "function_model_errors_total")
    assert directive["Dimensions"] == [["backend", "code"]]
    assert (doc["backend"], doc["code"], doc["function_model_errors_total"]) == (
        "tfserving-rest", "gateway_timeout", 1)


@pytest.mark.slow
def test_the_lambda_runtime_writes_valid_emf_lines(demo_model, tmp_path):
    from tests.aws.rie import find_emulator, start_emulator

    assert find_emulator() is not None, "make tools installs the Lambda emulator"
    emulator = start_emulator(tmp_path, {"MODEL_URI": str(demo_model.served),
                                         "METRICS": "emf", "LOG_FORMAT": "json"})
    try:
        event = json.loads((EVENTS / "httpapi-json.json").read_text())
        event["headers"]["traceparent"] = TRACEPARENT
        status, result = emulator.invoke(event)
        assert status == 200 and result["statusCode"] == 200, result
        status, result = emulator.invoke({**event, "rawPath": "/nope"})
        assert result["statusCode"] == 404
    finally:
        emulator.stop()
    lines = emf_lines(emulator.log.read_text())
    requests_seen = [d for d in lines if "function_requests_total" in d]
    assert [(d["route"], d["status"]) for d in requests_seen] == [("/predict", "200"),
                                                                   ("unmatched", "404")]
    assert requests_seen[0]["trace_id"] == TRACE_ID
    assert requests_seen[0]["function_images_per_request"] == 1
    assert [d["result"] for d in lines if "function_model_loads_total" in d] == ["ok"]
