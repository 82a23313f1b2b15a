"""`functions.platforms.scf.main_handler` for Tencent SCF: API Gateway triggers and function URLs.

SCF's runtime cannot run here (there is no emulator outside its containers), so the
handler is called the way SCF's Python runtime calls it, `main_handler(event, context)`
with the event and context as dicts, and its result is checked to be the JSON document
SCF's API Gateway integration response reads. The model, TensorFlow and the request
parsing are the real ones. Events: events/scf-*.json, in the documented trigger format.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.config import Settings
from functions.errors import BadRequest
from functions.httpio import HttpResponse
from functions.platforms import scf
from functions.platforms.events import (
    SCF_RESPONSE_LIMIT,
    ScfEvent,
    UnknownScfEvent,
    payload_size,
    scf_event,
)
from functions.platforms.gateway import fit, serve
from functions.platforms.process import ProcessApp
from tests.aws.test_events import JSON_VALUES, PROCESS, answered
from tests.conftest import ROOT

EVENTS = ROOT / "events"
EXPECTED = json.loads((EVENTS / "expected.json").read_text())
CONTEXT = {"request_id": "scf-5d1c8b2a-0001", "function_name": "predict",
           "memory_limit_in_mb": 1024, "time_limit_in_ms": 30000, "namespace": "default"}


def load(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def scf_app() -> ProcessApp:
    """One process App for the module, as one SCF instance keeps its loaded model."""
    return ProcessApp()


@pytest.fixture
def handler(demo_model, scf_app, monkeypatch):
    """main_handler, its App serving the demo model."""
    monkeypatch.setenv("MODEL_URI", str(demo_model.served))
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setattr(scf, "_app", scf_app)

    def call(event, context=CONTEXT):
        result = scf.main_handler(event, context)
        assert list(result) == ["isBase64Encoded", "statusCode", "headers", "body"]
        json.dumps(result)  # SCF serialises it; it must be plain JSON
        return result

    return call


def body_of(result: dict) -> dict:
    assert result["isBase64Encoded"] is False
    assert result["headers"]["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(result["body"])


@pytest.mark.slow
@pytest.mark.parametrize("name, top_k", [("scf-apigw-json", 3), ("scf-apigw-multipart-jpeg", 3),
                                         ("scf-url-png", 5)])
def test_recorded_events_get_the_right_digit(handler, name, top_k):
    result = handler(load(name))
    assert result["statusCode"] == 200, result["body"]
    (prediction,) = body_of(result)["predictions"]
    assert prediction["class_id"] == EXPECTED[name]["class_id"]
    assert len(prediction["top_k"]) == top_k
    assert result["headers"]["X-Request-Id"] == CONTEXT["request_id"]


@pytest.mark.slow
@pytest.mark.parametrize("spelling", ["Content-Type", "content-type", "CONTENT-TYPE",
                                      "content-Type"])
def test_header_names_in_any_case(handler, spelling):
    event = load("scf-url-png")
    content_type = event["headers"].pop("content-type")
    event["headers"][spelling] = content_type
    event["headers"]["X-REQUEST-ID"] = "client-id-12345"
    result = handler(event)
    assert body_of(result)["predictions"][0]["class_id"] == EXPECTED["scf-url-png"]["class_id"]
    assert result["headers"]["X-Request-Id"] == "client-id-12345"


@pytest.mark.slow
def test_query_string_options_reach_the_function(handler):
    event = load("scf-url-png")
    event["queryString"] = {"top_k": "2"}
    assert len(body_of(handler(event))["predictions"][0]["top_k"]) == 2


@pytest.mark.slow
def test_health_and_wrong_method(handler):
    event = {"httpMethod": "GET", "path": "/healthz", "headers": {}, "body": "",
             "queryString": {}, "requestContext": {"serviceId": "service-x",
                                                   "httpMethod": "ANY", "stage": "release"}}
    result = handler(event)
    assert result["statusCode"] == 200 and body_of(result)["status"] == "ready"
    event["path"] = "/predict"
    result = handler(event)
    assert result["statusCode"] == 405
    assert result["headers"]["Allow"] == "POST"


@pytest.mark.slow
def test_timer_trigger_is_refused_clearly(handler):
    result = handler({"Type": "Timer", "TriggerName": "EveryDay",
                      "Time": "2019-02-21T11:49:00Z", "Message": "user define msg body"}, {})
    assert result["statusCode"] == 400
    assert body_of(result)["error"]["message"] == (
        "the function was invoked with an event that is not an HTTP request (its keys: "
        "Message, Time, TriggerName, Type); it answers an SCF API Gateway trigger or "
        "function URL request")


def test_gateway_and_url_events_are_read_alike():
    gateway, url = scf_event(load("scf-apigw-multipart-jpeg")), scf_event(load("scf-url-png"))
    assert (type(gateway), gateway.source) == (ScfEvent, "SCF API Gateway")
    assert (type(url), url.source) == (ScfEvent, "SCF function URL")
    request = gateway.request()
    raw = load("scf-apigw-multipart-jpeg")
    assert request.body == base64.b64decode(raw["body"])
    assert (request.method, request.path, dict(request.query)) == ("POST", "/predict",
                                                                  {"top_k": "2"})
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert isinstance(scf_event({"Type": "Timer"}), UnknownScfEvent)


def test_binary_body_lost_as_text_names_the_gateway_setting():
    event = load("scf-url-png")
    event["body"] = base64.b64decode(event["body"]).decode("utf-8", errors="replace")
    event["isBase64Encoded"] = False
    with pytest.raises(BadRequest) as caught:
        scf_event(event).request()
    assert caught.value.message == (
        "the image/png body reached the function as text, so its binary bytes were lost on "
        "the way; turn on Base64 encoding for the API in API Gateway, or send the image "
        'base64-encoded in JSON {"image": "<base64>"}')


def test_binary_results_are_base64_and_large_ones_refused():
    event = scf_event(load("scf-url-png"))
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    result = event.result(HttpResponse(200, png, {"Content-Type": "image/png"}))
    assert result == {"isBase64Encoded": True, "statusCode": 200,
                      "headers": {"Content-Type": "image/png"},
                      "body": base64.b64encode(png).decode()}
    big = HttpResponse(200, b"x" * SCF_RESPONSE_LIMIT, {"Content-Type": "text/plain"})
    size = payload_size(event.result(big))
    refused = fit(event, big, Settings())
    assert refused["statusCode"] == 413
    assert json.loads(refused["body"])["error"]["message"].startswith(
        f"the response is {size:,} bytes, more than the 6,291,456 bytes Tencent SCF can "
        "return through SCF function URL; ")


# -- every event gets an integration response --------------------------------------------

SCF_RECORDED = ["scf-apigw-json", "scf-apigw-multipart-jpeg", "scf-url-png"]
SCF_FIELDS = ["httpMethod", "path", "rawPath", "headers", "queryString",
              "queryStringParameters", "body", "isBase64Encoded", "requestContext"]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(SCF_RECORDED), field=st.sampled_from(SCF_FIELDS),
       value=JSON_VALUES)
def test_any_field_of_any_scf_event_replaced_by_any_json_is_answered(name, field, value):
    event = load(name)
    event[field] = value
    result = serve(scf_event(event), PROCESS)
    assert list(result) == ["isBase64Encoded", "statusCode", "headers", "body"]
    answered(result, event)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(SCF_RECORDED), count=st.integers(257, 2000),
       surrogate=st.integers(0xD800, 0xDFFF))
def test_scf_query_floods_and_lone_surrogates_are_400(name, count, surrogate):
    event = load(name)
    event["queryString"] = {f"p{i}": str(i) for i in range(count)}
    assert answered(serve(scf_event(event), PROCESS), event) == 400
    event = load(name)
    event["body"], event["isBase64Encoded"] = '{"image": "' + chr(surrogate) + '"}', False
    result = serve(scf_event(event), PROCESS)
    assert answered(result, event) == 400
    assert "lone surrogate" in json.loads(result["body"])["error"]["message"]


@settings(max_examples=100, deadline=None)
@given(event=JSON_VALUES)
def test_any_json_document_as_an_scf_event_is_answered(event):
    answered(serve(scf_event(event), PROCESS), event)
