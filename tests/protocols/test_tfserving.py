"""TF Serving's REST API on the function, in process over a stand-in backend (fakes.py):
TF Serving's request forms and exact answers, its error wording, and the function's
limits, auth and CORS on these paths."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from functions.auth import AuthSettings
from tests.protocols.fakes import (
    B64,
    CORRUPT,
    PNG,
    FakeTensorModel,
    call,
    error_of,
    make_app,
)

ROW = '{"predictions": [[0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.55]]}'


@pytest.fixture(scope="module")
def app():
    return make_app(max_images=2)


@pytest.mark.parametrize("path", ["/v1/models/fake:predict", "/v1/models/fake/versions/3:predict",
                                  "/v1/models/fake/labels/canary:predict"])
def test_row_form_with_b64_answers_tf_servings_exact_json(path):
    app = make_app(model_version_label="canary")
    response = call(app, "POST", path, {"instances": [{"b64": B64}]})
    assert response.status == 200
    assert response.body.decode() == ROW  # %g floats, ", " separators, as TF Serving writes


def test_columnar_form_signature_name_and_every_base64_dialect(app):
    urlsafe = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    body = {"signature_name": "serving_default",
            "inputs": {"image_bytes": [{"b64": B64}, {"b64": urlsafe}]}}
    response = call(app, "POST", "/v1/models/fake:predict", body)
    assert response.status == 200
    assert json.loads(response.body)["outputs"] == [[0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07,
                                                     0.08, 0.09, 0.55]] * 2
    # A plain string in the image input is the image's base64 text; a gzip body is inflated.
    plain = call(app, "POST", "/v1/models/fake:predict", {"instances": [B64]}, gzipped=True)
    assert plain.body.decode() == ROW


def test_tensor_inputs_and_bytes_outputs_follow_the_json_rules():
    app = make_app(FakeTensorModel())
    response = call(app, "POST", "/v1/models/affine:predict",
                    {"instances": [[1.0, 2.0], [0.5, -1.0]]})
    assert response.body.decode() == (
        '{"predictions": [{"y": [3.0, 5.0], "label_bytes": {"b64": "cm93MA=="}}, '
        '{"y": [2.0, -1.0], "label_bytes": {"b64": "cm93MQ=="}}]}')
    columnar = call(app, "POST", "/v1/models/affine:predict", {"inputs": {"x": [[0.1, 0.2]]}})
    assert json.loads(columnar.body) == {"outputs": {"y": [[1.2, 1.4]],
                                                     "label_bytes": [{"b64": "cm93MA=="}]}}
    wrong = call(app, "POST", "/v1/models/affine:predict", {"instances": [["a", "b"]]})
    assert error_of(wrong) == ('Failed to process element: 0 of \'instances\' list. Error: '
                               'INVALID_ARGUMENT: JSON Value: "a" Type: String is not of '
                               'expected type: float')
    shape = call(app, "POST", "/v1/models/affine:predict", {"instances": [[1.0, 2.0, 3.0]]})
    assert error_of(shape) == ("the input 'x' has shape [1, 3]; the model takes [-1, 2] "
                               "(-1: any size)")


BAD_REQUESTS = [
    ("POST", "/v1/models/fake:predict", b"{", 400,
     "JSON Parse error: Expecting property name enclosed in double quotes at offset: 1"),
    ("POST", "/v1/models/fake:predict", {"instance": []}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/fake:predict", {"instances": []}, 400,
     'JSON Value: {"instances":[]} No values in \'instances\' array'),
    ("POST", "/v1/models/other:predict", {"instances": [B64]}, 404,
     "Servable not found for request: Latest(other)"),
    ("POST", "/v1/models/fake/versions/7:predict", {"instances": [B64]}, 404,
     "Servable not found for request: Specific(fake, 7)"),
    ("POST", "/v1/models/fake/labels/canary:predict", {"instances": [B64]}, 400,
     "Unrecognized servable version label: canary"),
    ("POST", "/v1/models/fake:predict", {"signature_name": "nope", "instances": [B64]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/fake:predict", {"instances": [1]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: "
     "1 Type: Number is not of expected type: string"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"b64": "aGVsbG8="}]}, 400,
     "instances[0] is not an image (expected JPEG, PNG, GIF or BMP); it starts with the "
     "bytes 68 65 6c 6c 6f"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"b64": "a+b_"}]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: a b64 value "
     "mixes the standard (+/) and URL-safe (-_) base64 alphabets; use one of them"),
    ("POST", "/v1/models/fake:predict",
     {"instances": [{"b64": base64.b64encode(CORRUPT).decode()}]}, 400,
     "instances[0]: the image data is corrupt or truncated and could not be decoded"),
    ("POST", "/v1/models/fake:predict", {"instances": [B64, B64, B64]}, 413,
     "the request has 3 images; the limit is 2"),
    ("POST", "/v1/models/fake:classify", {"examples": [{"x": 1.0}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("POST", "/v1/models/fake:regress", {"signature_name": "regress_x_to_y", "examples": []},
     400, "No signature was found with the name: regress_x_to_y"),
    ("GET", "/v1/models/other", None, 404, "Servable not found for request: Latest(other)"),
    ("GET", "/v1/models/fake/versions/4/metadata", None, 404,
     "Servable not found for request: Specific(fake, 4)"),
    ("GET", "/v1/nothing", None, 400, "Malformed request: GET /v1/nothing"),
    ("POST", "/v1/models/fake", {"instances": [B64]}, 400,
     "Malformed request: POST /v1/models/fake"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_tf_servings_error_shape_and_a_4xx(app, method, path, body, status,
                                                           message):
    response = call(app, method, path, body)
    assert response.status == status
    assert error_of(response) == message


def test_limits_hold_on_these_paths():
    app = make_app(max_body_bytes=2_000)
    big = call(app, "POST", "/v1/models/fake:predict", {"instances": [B64 * 40]})
    size = len(json.dumps({"instances": [B64 * 40]}))
    assert (big.status, error_of(big)) == (413, f"the request body is {size:,} bytes; the "
                                                "limit is 2,000 bytes")
    pixels = make_app(max_image_pixels=100)
    huge = call(pixels, "POST", "/v1/models/fake:predict", {"instances": [{"b64": B64}]})
    assert huge.status == 413 and "784 pixels" in error_of(huge)
    put = call(app, "PUT", "/v1/models/fake:predict", b"")
    assert (put.status, put.headers["Allow"]) == (405, "GET, HEAD, POST")


def test_status_and_metadata_in_tf_servings_shape():
    app = make_app()
    loading = json.loads(call(app, "GET", "/v1/models/fake").body)  # answered without waiting
    assert loading["model_version_status"][0]["version"] == "3"
    assert loading["model_version_status"][0]["state"] in ("LOADING", "AVAILABLE")
    app.model.get()
    status = call(app, "GET", "/v1/models/fake")
    assert json.loads(status.body) == {
        "model_version_status": [{"version": "3", "state": "AVAILABLE",
                                  "status": {"error_code": "OK", "error_message": ""}}],
        "name": "fake", "ready": True}
    metadata = json.loads(call(app, "GET", "/v1/models/fake/versions/3/metadata").body)
    assert metadata == {
        "model_spec": {"name": "fake", "signature_name": "", "version": "3"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": {"image_bytes": {
                "dtype": "DT_STRING", "name": "image_bytes:0",
                "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}},
            "outputs": {"scores": {
                "dtype": "DT_FLOAT", "name": "scores:0",
                "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "10", "name": ""}],
                                 "unknown_rank": False}}},
            "method_name": "tensorflow/serving/predict", "defaults": {}}}}}}


def test_auth_and_cors_apply_and_health_stays_open():
    app = make_app(auth=replace(AuthSettings(), api_keys=("k1",)),
                   cors_origins=("https://a.example",))
    headers = {"Origin": "https://a.example"}
    refused = call(app, "POST", "/v1/models/fake:predict", {"instances": [B64]}, headers)
    assert refused.status == 401 and "X-API-Key" in error_of(refused)
    assert refused.headers["Access-Control-Allow-Origin"] == "https://a.example"
    allowed = call(app, "POST", "/v1/models/fake:predict", {"instances": [B64]},
                   {**headers, "X-API-Key": "k1"})
    assert allowed.body.decode() == ROW
    assert call(app, "GET", "/v1/models/fake/metadata").status == 401
    assert call(app, "GET", "/v1/models/fake").status == 200
