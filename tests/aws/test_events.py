"""Lambda event dialects to requests and back (functions/events.py), on the recorded
events in events/ (envelopes from `sam local generate-event`, real images inside)."""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.config import Settings
from functions.errors import BadRequest
from functions.httpio import HttpResponse
from functions.platforms.events import (
    LAMBDA_RESPONSE_LIMIT,
    AlbEvent,
    HttpApiEvent,
    RestApiEvent,
    UnknownEvent,
    lambda_event,
    payload_size,
)
from functions.platforms.gateway import fit, serve
from tests.conftest import ROOT

EVENTS = ROOT / "events"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # every byte value: none may be altered


def load(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def image_of(event: dict) -> bytes:
    """The image the event carries, decoded independently of the code under test."""
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"]
    if isinstance(body, str):
        return base64.b64decode(json.loads(body)["image"])
    if body.startswith(b"--"):
        return body.split(b"\r\n\r\n")[-1].rsplit(b"\r\n--", 1)[0]
    return body


@pytest.mark.parametrize("name, kind, source, path", [
    ("apigw-rest-json", RestApiEvent, "API Gateway REST API", "/predict"),
    ("apigw-rest-png", RestApiEvent, "API Gateway REST API", "/predict"),
    ("apigw-rest-multipart-jpeg", RestApiEvent, "API Gateway REST API", "/predict"),
    ("httpapi-json", HttpApiEvent, "API Gateway HTTP API", "/predict"),
    ("httpapi-jpeg", HttpApiEvent, "API Gateway HTTP API", "/predict"),
    ("httpapi-multipart-png", HttpApiEvent, "API Gateway HTTP API", "/predict"),
    ("function-url-png", HttpApiEvent, "Lambda Function URL", "/"),
    ("alb-jpeg", AlbEvent, "Application Load Balancer", "/predict"),
])
def test_recorded_events_become_the_request_the_client_sent(name, kind, source, path):
    raw = load(name)
    event = lambda_event(raw)
    assert type(event) is kind and event.source == source
    request = event.request("req-0123456789")
    assert (request.method, request.path) == ("POST", path)
    expected_body = (base64.b64decode(raw["body"]) if raw["isBase64Encoded"]
                     else raw["body"].encode())
    assert request.body == expected_body
    image = image_of(raw)
    assert image[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
    if raw["isBase64Encoded"]:  # binary upload or multipart: the file's bytes, unaltered
        assert image in request.body
    assert request.headers["CONTENT-TYPE"] == request.headers["content-type"]
    assert request.headers["referer"].startswith("https://servicewechat.com/")
    assert request.headers["x-request-id"] == "req-0123456789"


def test_a_client_request_id_is_kept():
    raw = load("httpapi-json")
    raw["headers"]["x-request-id"] = "client-chosen-id"
    assert lambda_event(raw).request("lambda-id").headers["x-request-id"] == "client-chosen-id"


def test_binary_body_bytes_survive_exactly():
    raw = load("httpapi-jpeg")
    raw["body"] = base64.b64encode(PNG).decode()
    raw["headers"]["content-type"] = "image/png"
    assert lambda_event(raw).request().body == PNG


def test_query_strings_of_each_dialect():
    v1 = load("apigw-rest-png")
    v1["multiValueQueryStringParameters"] = {"top_k": ["3", "4"], "note": ["a b"]}
    assert lambda_event(v1).request().query == {"top_k": "3", "note": "a b"}
    v2 = load("httpapi-jpeg")
    v2["rawQueryString"] = "top_k=3&top_k=4&note=a%20b&empty="
    assert lambda_event(v2).request().query == {"top_k": "3", "note": "a b", "empty": ""}
    alb = load("alb-jpeg")
    alb["queryStringParameters"] = {"note": "a%20b+c", "top_k": "2"}
    assert lambda_event(alb).request().query == {"note": "a b c", "top_k": "2"}


def test_http_api_stage_is_not_part_of_the_path():
    raw = load("httpapi-healthz")
    raw["requestContext"]["stage"] = "prod"
    raw["rawPath"] = "/prod/healthz"
    request = lambda_event(raw).request()
    assert (request.method, request.path) == ("GET", "/healthz")


def test_binary_body_mangled_into_text_names_the_gateway_setting():
    raw = load("apigw-rest-png")
    raw["body"] = PNG.decode("utf-8", errors="replace")
    raw["isBase64Encoded"] = False
    with pytest.raises(BadRequest) as caught:
        lambda_event(raw).request()
    assert caught.value.message == (
        "the image/png body reached the function as text, so its binary bytes were lost on "
        "the way; add */* (or image/*, application/octet-stream and multipart/form-data) to "
        "the REST API's binary media types and redeploy it")


def test_body_flagged_base64_that_is_not():
    raw = load("httpapi-jpeg")
    raw["body"] = "not base64!"
    with pytest.raises(BadRequest) as caught:
        lambda_event(raw).request()
    assert caught.value.message == ("the API Gateway HTTP API event says isBase64Encoded, "
                                    "but its body is not valid base64")


@pytest.mark.parametrize("raw", [{"Records": [{"s3": {}}]}, {}, "hello", None])
def test_events_that_are_not_http_requests(raw):
    event = lambda_event(raw)
    assert isinstance(event, UnknownEvent)
    with pytest.raises(BadRequest) as caught:
        event.request()
    assert caught.value.message.startswith("the function was invoked with an event that is "
                                           "not an HTTP request (its keys: ")
    assert caught.value.message.endswith("); it answers an API Gateway (REST or HTTP API), "
                                         "Lambda Function URL or Application Load Balancer "
                                         "request")


def test_results_json_as_text_binary_as_base64():
    v2 = lambda_event(load("httpapi-jpeg"))
    as_json = v2.result(HttpResponse.json(200, {"label": "七"}))
    assert as_json == {"statusCode": 200, "isBase64Encoded": False,
                       "headers": {"Content-Type": "application/json; charset=utf-8"},
                       "body": '{"label":"七"}'}
    as_png = v2.result(HttpResponse(200, PNG, {"Content-Type": "image/png"}))
    assert as_png["isBase64Encoded"] is True and base64.b64decode(as_png["body"]) == PNG
    empty = v2.result(HttpResponse(204, b"", {}))
    assert (empty["body"], empty["isBase64Encoded"]) == ("", False)


def test_alb_result_has_a_status_line_and_mirrors_multi_value_headers():
    raw = load("alb-jpeg")
    result = lambda_event(raw).result(HttpResponse.json(413, {}))
    # Python's own reason phrase: "Request Entity Too Large", "Content Too Large" from 3.13.
    assert result["statusDescription"] == f"413 {HTTPStatus(413).phrase}"
    assert result["headers"] == {"Content-Type": "application/json; charset=utf-8"}
    raw["multiValueHeaders"] = {k: [v] for k, v in raw.pop("headers").items()}
    result = lambda_event(raw).result(HttpResponse.json(200, {}))
    assert result["multiValueHeaders"] == {"Content-Type": ["application/json; charset=utf-8"]}
    assert "headers" not in result
    assert lambda_event(raw).request().headers["content-type"] == "image/jpeg"


def quoted_json(items: int) -> bytes:
    """A JSON body whose quotes double when the body is embedded in the event result."""
    return ("[" + ",".join(['"ab"'] * items) + "]").encode()


def test_result_over_the_lambda_limit_becomes_a_413_that_says_so():
    event = lambda_event(load("httpapi-json"))
    body = quoted_json(1_000_000)  # 5,000,001 bytes: under 6 MB, but 7,000,001 once escaped
    response = HttpResponse(200, body, {"Content-Type": "application/json",
                                        "X-Request-Id": "rid-12345678"})
    size = payload_size(event.result(response))
    assert len(body) < LAMBDA_RESPONSE_LIMIT < size
    result = fit(event, response, Settings())
    assert result["statusCode"] == 413
    assert result["headers"]["X-Request-Id"] == "rid-12345678"
    assert json.loads(result["body"]) == {"error": {
        "code": "payload_too_large",
        "message": f"the response is {size:,} bytes, more than the 6,291,456 bytes AWS Lambda "
                   "can return through API Gateway HTTP API; send fewer images per request "
                   "(or smaller ones), or set RESPONSE_OFFLOAD_URI to receive large results "
                   "as a download link",
        "response_bytes": size, "limit_bytes": 6_291_456}}


def test_result_just_under_the_limit_is_returned_whole():
    event = lambda_event(load("httpapi-json"))
    envelope = payload_size(event.result(HttpResponse(200, b"", {"Content-Type": "text/plain"})))
    body = b"x" * (LAMBDA_RESPONSE_LIMIT - envelope)
    response = HttpResponse(200, body, {"Content-Type": "text/plain"})
    assert payload_size(event.result(response)) == LAMBDA_RESPONSE_LIMIT
    assert fit(event, response, Settings())["body"] == body.decode()
    bigger = HttpResponse(200, body + b"x", {"Content-Type": "text/plain"})
    assert fit(event, bigger, Settings())["statusCode"] == 413


def test_alb_limit_is_one_megabyte():
    event = lambda_event(load("alb-jpeg"))
    response = HttpResponse(200, quoted_json(200_000), {"Content-Type": "application/json"})
    result = fit(event, response, Settings())
    assert result["statusCode"] == 413 and result["statusDescription"].startswith("413 ")
    assert "more than the 1,048,576 bytes AWS Lambda can return through Application Load " \
           "Balancer" in json.loads(result["body"])["error"]["message"]


def test_large_result_offloaded_to_s3_with_a_presigned_url(s3):
    import requests

    event = lambda_event(load("apigw-rest-json"))
    body = quoted_json(1_300_000)
    response = HttpResponse(200, body, {"Content-Type": "application/json; charset=utf-8",
                                        "X-Request-Id": "rid-12345678"})
    settings = Settings(response_offload_uri=f"s3://{s3.bucket}/results/",
                        response_url_seconds=120)
    result = fit(event, response, settings)
    assert result["statusCode"] == 200 and result["headers"]["X-Request-Id"] == "rid-12345678"
    answer = json.loads(result["body"])
    assert {k: v for k, v in answer.items() if k != "result_url"} == {
        "expires_in": 120, "status": 200, "content_type": "application/json; charset=utf-8",
        "bytes": len(body)}
    assert answer["result_url"].startswith(f"{s3.proxy.url}/{s3.bucket}/results/")
    assert "X-Amz-Expires=120" in answer["result_url"]
    download = requests.get(answer["result_url"], timeout=30)
    assert download.status_code == 200 and download.content == body
    assert download.headers["Content-Type"] == "application/json; charset=utf-8"


def test_offload_failure_is_a_clear_error(s3):
    event = lambda_event(load("apigw-rest-json"))
    response = HttpResponse(200, quoted_json(1_300_000), {"Content-Type": "application/json"})
    settings = Settings(response_offload_uri="s3://no-such-results-bucket/r/")
    result = fit(event, response, settings)
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["error"]["message"] == (
        "the response is too large to return directly, and storing the response in "
        "s3://no-such-results-bucket/r/ failed: the bucket 'no-such-results-bucket' does not "
        "exist; check RESPONSE_OFFLOAD_URI")


def test_sample_events_are_listed_with_their_answers():
    expected = json.loads((EVENTS / "expected.json").read_text())
    names = sorted(p.stem for p in EVENTS.glob("*.json") if p.stem != "expected")
    assert sorted(expected) == names
    assert Path(EVENTS / "generate.py").is_file()


# -- every event gets a proxy response ---------------------------------------------------


class FakeProcessApp:
    """The process's App over the fake backend of tests/functions/test_app.py: these tests
    are about reading events, not about the model."""

    def __init__(self) -> None:
        from tests.functions.test_app import make_app

        self.app = make_app()

    def get(self):
        return self.app


PROCESS = FakeProcessApp()
RECORDED = ["apigw-rest-json", "apigw-rest-png", "httpapi-json", "httpapi-jpeg",
            "function-url-png", "alb-jpeg", "apigw-rest-multipart-jpeg"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4), max_leaves=12)
FIELDS = ["httpMethod", "path", "rawPath", "rawQueryString", "headers", "multiValueHeaders",
          "queryStringParameters", "multiValueQueryStringParameters", "body",
          "isBase64Encoded", "requestContext", "version", "cookies"]


def answered(result: dict, event) -> int:
    """The result is a proxy response the platform can serialise; returns its status."""
    assert isinstance(result, dict)
    assert isinstance(result["statusCode"], int)
    assert isinstance(result["body"], str)
    json.dumps(result)  # the runtime serialises it
    if not result["isBase64Encoded"] and result["body"]:
        json.loads(result["body"])
    assert result["statusCode"] < 500, result["body"]
    return result["statusCode"]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(RECORDED), field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_field_of_any_event_replaced_by_any_json_is_answered(name, field, value):
    event = load(name)
    event[field] = value
    answered(serve(lambda_event(event), PROCESS), event)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(RECORDED), count=st.integers(257, 2000))
def test_hundreds_of_query_parameters_are_a_400_in_every_dialect(name, count):
    event = load(name)
    pairs = {f"p{i}": str(i) for i in range(count)}
    event["rawQueryString"] = urlencode(pairs)
    event["queryStringParameters"] = pairs
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in pairs.items()}
    result = serve(lambda_event(event), PROCESS)
    assert answered(result, event) == 400
    assert json.loads(result["body"])["error"]["message"].startswith("the query string has ")


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(RECORDED), surrogate=st.integers(0xD800, 0xDFFF),
       at=st.integers(0, 100))
def test_a_body_holding_a_lone_surrogate_is_a_400(name, surrogate, at):
    event = load(name)
    text = json.dumps({"image": "iVBORw0KGgo"})
    event["body"] = text[:at] + chr(surrogate) + text[at:]
    event["isBase64Encoded"] = False
    result = serve(lambda_event(event), PROCESS)
    assert answered(result, event) == 400
    assert "lone surrogate" in json.loads(result["body"])["error"]["message"]


@settings(max_examples=100, deadline=None)
@given(event=JSON_VALUES)
def test_any_json_document_as_an_event_is_answered(event):
    answered(serve(lambda_event(event), PROCESS), event)


def test_an_unforeseen_failure_is_still_a_proxy_response(caplog):
    class Broken:
        def get(self):
            raise RuntimeError("boom")

    result = serve(lambda_event(load("httpapi-json")), Broken())
    assert result["statusCode"] == 500
    assert json.loads(result["body"]) == {"error": {
        "code": "internal", "message": "internal error; the server log has the details"}}
