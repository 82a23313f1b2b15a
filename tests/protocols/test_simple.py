"""Simple TF Serving's JSON on / and /predict, in process over stand-in backends
(fakes.py): the mini-program's body answered as Simple TF Serving did, told apart from
the native API by its shape, its errors ``{"error": "..."}`` with a 4xx."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.protocols.fakes import B64, PNG, SCORES, FakeTensorModel, call, error_of, make_app

URLSAFE = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
"""How the dog-breed mini-program encodes its canvas PNG: URL-safe, no padding."""


@pytest.fixture(scope="module")
def app():
    return make_app(max_images=2)


def scores_of(response) -> np.ndarray:
    assert response.status == 200, response.body
    body = json.loads(response.body)
    assert list(body) == ["scores"]
    return np.array(body["scores"], np.float32)


@pytest.mark.parametrize("path", ["/", "/predict"])
def test_the_mini_programs_request_is_answered_as_simple_tf_serving_did(app, path):
    body = {"model_name": "default", "model_version": 3, "data": {"image": URLSAFE}}
    assert np.array_equal(scores_of(call(app, "POST", path, body)), SCORES[None])


def test_input_names_batches_b64_objects_and_gzip(app):
    for data in ({"image_bytes": [B64, {"b64": URLSAFE}]}, {"images": [B64, B64]}):
        body = {"model_name": "fake", "signature_name": "serving_default", "data": data}
        assert scores_of(call(app, "POST", "/", body, gzipped=True)).shape == (2, 10)


def test_the_native_api_still_owns_its_bodies(app):
    native = json.loads(call(app, "POST", "/", {"image": B64, "data": {"x": 1}}).body)
    assert native["predictions"][0]["class_id"] == 9
    missing = call(app, "POST", "/", {"data": "not an object"})
    assert json.loads(missing.body)["error"]["code"] == "missing_image"


def test_tensor_inputs_take_nested_lists_and_bytes_come_back_as_base64():
    app = make_app(FakeTensorModel())
    response = call(app, "POST", "/", {"data": {"x": [[1, 2], [0.5, -1]]}})
    assert json.loads(response.body) == {"y": [[3.0, 5.0], [2.0, -1.0]],
                                         "label_bytes": ["cm93MA==", "cm93MQ=="]}
    wrong = call(app, "POST", "/", {"data": {"x": [["a", "b"]]}})
    assert error_of(wrong).startswith("data.x is not a float32 tensor")


BAD = [
    ({"model_name": "dogs", "data": {"image": B64}}, 400,
     "Invalid model name: dogs, available models: ['default', 'fake']"),
    ({"model_version": 2, "data": {"image": B64}}, 400,
     "No model version: 2 to serve; the served version is 3"),
    ({"model_version": "two", "data": {"image": B64}}, 400,
     "Invalid model_version: two; send a version number"),
    ({"signature_name": "predict_images", "data": {"image": B64}}, 400,
     "Invalid signature_name: predict_images; the model serves 'serving_default'"),
    ({"data": {"image": "http://example.com/a.png"}}, 400,
     "data.image looks like a file path or URL (http://example.com/a.png), which the server "
     "cannot read; send the file's content as base64 (in a mini-program: "
     "wx.getFileSystemManager().readFile with encoding 'base64') or upload it with "
     "wx.uploadFile"),
    ({"data": {"image": 7}}, 400, 'data.image must be base64 text of an image or {"b64": ...}'),
    ({"data": {"image": [B64, B64, B64]}}, 413, "the request has 3 images; the limit is 2"),
    ({"data": {}}, 400, "the request has no input 'image_bytes': send the encoded images there"),
    ({"data": {"image_bytes": B64, "extra": [1]}}, 400,
     "the model has no input 'extra'; its inputs are ['image_bytes']"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_requests_get_simple_tf_servings_error_and_a_4xx(app, body, status, message):
    response = call(app, "POST", "/", body)
    assert response.status == status
    assert error_of(response) == message
