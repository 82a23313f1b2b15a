"""`functions.platforms.aws.lambda_handler` invoked through the real Lambda Runtime Interface
Emulator and `awslambdaric`, with the demo model kept in S3 (moto's server on loopback)
and fetched at cold start, as a deployed container-image function does.

The events are the recorded ones in events/ (gateway envelopes from `sam local
generate-event` with real PNG and JPEG digits: JSON with base64, raw binary bodies,
`wx.uploadFile` multipart) plus the mistakes clients and gateways make.
"""

from __future__ import annotations

import base64
import json
import uuid

import numpy as np
import pytest

from tests.aws.rie import find_emulator, runtime_maps, start_emulator
from tests.aws.s3util import S3Proxy, aws_env, upload_dir
from tests.conftest import ROOT, encode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_emulator() is None, reason=(
        "the Lambda Runtime Interface Emulator is missing: install aws-sam-cli "
        "(requirements-tools.lock) into .venv-tools, or set AWS_LAMBDA_RIE")),
]

EVENTS = ROOT / "events"
AWS_EVENTS = sorted(p.stem for p in EVENTS.glob("*.json")
                    if p.stem != "expected" and not p.stem.startswith("scf-"))
EXPECTED = json.loads((EVENTS / "expected.json").read_text())
TOP_K = {"apigw-rest-json": 3, "apigw-rest-multipart-jpeg": 3, "httpapi-json": 3,
         "httpapi-multipart-png": 3, "alb-jpeg": 2}
MAX_IMAGES = 12_000


@pytest.fixture(scope="module")
def bucket(moto_endpoint, demo_model):
    import boto3

    proxy = S3Proxy(moto_endpoint.removeprefix("http://")).start()
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"lambda-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    upload_dir(client, demo_model.served, name, "models/digits/1")
    yield name, proxy
    proxy.stop()


@pytest.fixture(scope="module")
def emulator(bucket, tmp_path_factory):
    name, proxy = bucket
    tmp = tmp_path_factory.mktemp("lambda")
    emu = start_emulator(tmp, {
        **aws_env(proxy.url),
        "MODEL_URI": f"s3://{name}/models/digits/1/",
        "MODEL_CACHE_DIR": str(tmp / "cache"),
        "MAX_IMAGES": str(MAX_IMAGES),
        "LOG_FORMAT": "text",
    })
    yield emu
    emu.stop()


def invoke(emulator, event) -> dict:
    status, result = emulator.invoke(event)
    assert status == 200, result  # the emulator's own status: the invocation worked
    assert set(result) >= {"statusCode", "headers", "body", "isBase64Encoded"}, result
    return result


def body_of(result: dict) -> dict:
    assert result["isBase64Encoded"] is False
    assert result["headers"]["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(result["body"])


def load(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def test_cold_start_fetches_the_model_from_s3_once(emulator, bucket):
    _, proxy = bucket
    result = invoke(emulator, load("httpapi-healthz"))
    assert result["statusCode"] == 200, result["body"]
    assert body_of(result) == {"status": "ready", "model": {"name": "digits", "version": "1"}}
    assert proxy.lists() == 1
    assert proxy.gets() == 5  # saved_model.pb, variables (2), fingerprint, metadata
    invoke(emulator, load("httpapi-jpeg"))
    assert (proxy.lists(), proxy.gets()) == (1, 5), "a warm function does not fetch again"
    log = emulator.log.read_text()
    assert log.count(": downloaded ") == 1
    assert log.index(": downloaded ") < log.index("INIT REPORT"), "fetched at cold start"
    assert "libtensorflow" in runtime_maps(emulator)  # the in-process backend: TF loaded


@pytest.mark.parametrize("name", AWS_EVENTS)
def test_recorded_events_get_the_right_digit(emulator, name):
    result = invoke(emulator, load(name))
    assert result["statusCode"] == EXPECTED[name]["status"], result["body"]
    body = body_of(result)
    assert result["headers"]["X-Request-Id"]
    if name.startswith("alb-"):
        assert result["statusDescription"] == "200 OK"
    if EXPECTED[name]["class_id"] is None:
        assert body["status"] == "ready"
        return
    (prediction,) = body["predictions"]
    assert prediction["class_id"] == EXPECTED[name]["class_id"]
    assert prediction["label"] == str(EXPECTED[name]["class_id"])
    assert len(prediction["top_k"]) == TOP_K.get(name, 5)


def test_digits_as_png_and_jpeg_in_every_body_shape(emulator, digits):
    picks = [int(np.flatnonzero(digits.y_test == d)[0]) for d in range(10)]
    template = load("apigw-rest-png")
    for index in picks:
        label, pixels = int(digits.y_test[index]), digits.x_test[index]
        for fmt, media_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
            image = encode(pixels, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
            event = dict(template, body=base64.b64encode(image).decode(), isBase64Encoded=True,
                         headers={"Content-Type": media_type}, multiValueHeaders=None)
            result = invoke(emulator, event)
            assert body_of(result)["predictions"][0]["class_id"] == label, (label, fmt)


def test_batch_of_base64_images_in_json(emulator, digits):
    labels = [int(v) for v in digits.y_test[:8]]
    images = [base64.urlsafe_b64encode(encode(p)).decode().rstrip("=")
              for p in digits.x_test[:8]]
    event = load("httpapi-json")
    event["body"] = json.dumps({"images": images, "top_k": 1})
    predictions = body_of(invoke(emulator, event))["predictions"]
    assert [p["class_id"] for p in predictions] == labels
    assert all(len(p["top_k"]) == 1 for p in predictions)


def test_response_over_six_megabytes_is_a_413_not_a_failed_invocation(emulator, digits):
    """Thousands of images in one request: each answer is small, all of them are not."""
    one = base64.b64encode(encode(digits.x_test[0][::2, ::2])).decode()  # 14x14: ~200 B
    count = 12_000  # about 5.8 MB of JSON (under MAX_RESPONSE_BYTES), 6.8 MB escaped
    event = load("httpapi-json")
    event["body"] = json.dumps({"images": [one] * count, "top_k": 10})
    assert len(json.dumps(event)) < 6_000_000  # the request itself fits Lambda's limit
    status, result = emulator.invoke(event)
    assert status == 200 and result["statusCode"] == 413, str(result)[:500]
    error = body_of(result)["error"]
    assert error["code"] == "payload_too_large"
    assert error["limit_bytes"] == 6_291_456 < error["response_bytes"]
    assert error["message"] == (
        f"the response is {error['response_bytes']:,} bytes, more than the 6,291,456 bytes "
        "AWS Lambda can return through API Gateway HTTP API; send fewer images per request "
        "(or smaller ones), or set RESPONSE_OFFLOAD_URI to receive large results as a "
        "download link")


@pytest.mark.parametrize("change, status, code, message", [
    (lambda e: e.update(body=base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 5).decode()),
     400, "invalid_image", "body is a truncated PNG: its 13 bytes end before the header that "
                           "gives its size"),
    (lambda e: e["requestContext"]["http"].update(method="GET"),
     405, "method_not_allowed", "method GET is not allowed here; use POST"),
    (lambda e: e.update(rawPath="/nothing"), 404, "not_found",
     "no such path '/nothing'; POST images to / or /predict"),
    (lambda e: e.update(body="\ufffdPNG\r\n\x1a\n\ufffd\ufffd", isBase64Encoded=False), 400,
     "bad_request", "the image/jpeg body reached the function as text, so its binary bytes "
                    "were lost on the way; the HTTP API should have base64-encoded it; check "
                    "any proxy in front of it"),
])
def test_mistakes_are_json_errors_with_the_right_status(emulator, change, status, code,
                                                        message):
    event = load("httpapi-jpeg")
    change(event)
    result = invoke(emulator, event)
    assert result["statusCode"] == status
    error = body_of(result)["error"]
    assert (error["code"], error["message"]) == (code, message)


def test_event_that_is_not_an_http_request(emulator):
    result = invoke(emulator, {"Records": [{"eventSource": "aws:sqs"}]})
    assert result["statusCode"] == 400
    assert body_of(result)["error"]["message"] == (
        "the function was invoked with an event that is not an HTTP request (its keys: "
        "Records); it answers an API Gateway (REST or HTTP API), Lambda Function URL or "
        "Application Load Balancer request")


def test_missing_model_in_s3_is_a_503_that_says_why(bucket, tmp_path):
    name, proxy = bucket
    emu = start_emulator(tmp_path, {**aws_env(proxy.url),
                                    "MODEL_URI": f"s3://{name}/models/missing/",
                                    "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    try:
        message = (f"there is no object under s3://{name}/models/missing/; MODEL_URI must "
                   "name the S3 folder holding the prepared model (saved_model.pb, "
                   "variables/, assets.extra/model_metadata.json)")
        health = invoke(emu, load("httpapi-healthz"))
        assert health["statusCode"] == 503
        assert body_of(health) == {"status": "failed", "error": {
            "code": "model_not_ready", "message": message}}
        result = invoke(emu, load("apigw-rest-png"))
        assert result["statusCode"] == 503
        assert body_of(result)["error"] == {"code": "model_not_ready", "message": message}
    finally:
        emu.stop()
    assert "import tensorflow" not in emu.log.read_text()


def test_thin_adapter_forwards_to_tf_serving_without_tensorflow(bucket, local_model_server,
                                                               tmp_path):
    """The zip function's configuration: BACKEND=tfserving-rest, only the model's
    metadata fetched from S3, the model served by a TF Serving (the local stand-in)."""
    name, proxy = bucket
    gets = proxy.gets()
    emu = start_emulator(tmp_path, {**aws_env(proxy.url), "BACKEND": "tfserving-rest",
                                    "TFSERVING_URL": local_model_server.rest_url,
                                    "MODEL_URI": f"s3://{name}/models/digits/1/",
                                    "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    try:
        for event_name in ("httpapi-jpeg", "apigw-rest-multipart-jpeg", "function-url-png"):
            result = invoke(emu, load(event_name))
            assert result["statusCode"] == 200, result["body"]
            assert body_of(result)["predictions"][0]["class_id"] == \
                EXPECTED[event_name]["class_id"]
        maps = runtime_maps(emu)
    finally:
        emu.stop()
    assert "python" in maps and "libtensorflow" not in maps
    assert proxy.gets() - gets == 1, "only model_metadata.json is fetched"
