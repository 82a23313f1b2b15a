"""The Open Inference Protocol on the function, in process over stand-in backends
(fakes.py): health, metadata, JSON and binary inference both ways, the request id, and
every bad request answered ``{"error": "..."}`` with a 4xx."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tests.protocols.fakes import B64, PNG, SCORES, FakeTensorModel, call, error_of, make_app

INFER = "/v2/models/fake/infer"


@pytest.fixture(scope="module")
def app():
    return make_app(max_images=2)


def image_input(data=None, **extra):
    return {"name": "image_bytes", "datatype": "BYTES", "shape": [1],
            **({"data": data} if data is not None else {}), **extra}


def binary_request(header: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(text))}


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_health_server_and_model_metadata(app):
    assert json.loads(call(app, "GET", "/v2/health/live").body) == {"live": True}
    app.model.get()
    assert json.loads(call(app, "GET", "/v2/health/ready").body) == {"ready": True}
    assert json.loads(call(app, "GET", "/v2").body) == {
        "name": "tf-image-functions", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    ready = call(app, "GET", "/v2/models/fake/versions/3/ready")
    assert (ready.status, json.loads(ready.body)) == (200, {"name": "fake", "ready": True})
    assert json.loads(call(app, "GET", "/v2/models/fake").body) == {
        "name": "fake", "versions": ["3"], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}]}


def test_json_infer_echoes_the_id_and_answers_flat_data(app):
    response = call(app, "POST", INFER, {"id": "req-7", "parameters": {"priority": 1},
                                         "inputs": [image_input([B64])]})
    assert response.status == 200
    body = json.loads(response.body)
    assert body["id"] == "req-7" and body["model_name"] == "fake"
    assert body["model_version"] == "3"
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("scores", "FP32", [1, 10])
    assert np.array_equal(np.array(output["data"], np.float32), SCORES)


def test_binary_images_in_and_binary_outputs_back(app):
    body, headers = binary_request(
        {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                     "parameters": {"binary_data_size": len(PNG) * 2 + 8}}],
         "outputs": [{"name": "scores", "parameters": {"binary_data": True}}]},
        length_prefixed(PNG, PNG))
    response = call(app, "POST", INFER, body, headers, gzipped=True)
    assert response.status == 200
    size = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.body[:size])
    [output] = header["outputs"]
    assert output["parameters"] == {"binary_data_size": 80} and "data" not in output
    scores = np.frombuffer(response.body[size:], "<f4").reshape(2, 10)
    assert np.array_equal(scores, np.tile(SCORES, (2, 1)))


def test_numeric_tensors_json_and_binary_and_bytes_outputs():
    app = make_app(FakeTensorModel())
    json_body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2],
                             "data": [[1, 2], [0.5, -1]]}]}
    body = json.loads(call(app, "POST", "/v2/models/affine/infer", json_body).body)
    assert body["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [3.0, 5.0, 2.0, -1.0]},
        {"name": "label_bytes", "datatype": "BYTES", "shape": [2], "data": ["row0", "row1"]}]
    x = np.array([[0.25, 4.0]], "<f4")
    raw, headers = binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                     "parameters": {"binary_data_size": 8}}],
         "parameters": {"binary_data_output": True}}, x.tobytes())
    response = call(app, "POST", "/v2/models/affine/infer", raw, headers)
    size = int(response.headers["Inference-Header-Content-Length"])
    outputs = json.loads(response.body[:size])["outputs"]
    assert [o["parameters"]["binary_data_size"] for o in outputs] == [8, 8]
    rest = response.body[size:]
    assert np.frombuffer(rest[:8], "<f4").tolist() == [1.5, 9.0]
    assert rest[8:] == length_prefixed(b"row0")


BAD = [
    ({"inputs": []}, None, 400, 'the request needs "inputs": a non-empty list of tensors'),
    ({"inputs": [image_input([B64], datatype="FP32")]}, None, 400,
     "input 'image_bytes' takes encoded images as BYTES, not FP32"),
    ({"inputs": [image_input([B64], datatype="STRING")]}, None, 400,
     "input 'image_bytes': datatype must be one of ['BF16', 'BOOL', 'BYTES', 'FP16', 'FP32', "
     "'FP64', 'INT16', 'INT32', 'INT64', 'INT8', 'UINT16', 'UINT32', 'UINT64', 'UINT8'], "
     "not 'STRING'"),
    ({"inputs": [image_input([B64, B64])]}, None, 400,
     "input 'image_bytes' has 2 elements; its shape says 1"),
    ({"inputs": [image_input([B64] * 3, shape=[3])]}, None, 413,
     "the request has 3 images; the limit is 2"),
    ({"inputs": [image_input(["not base64!"])]}, None, 400,
     "image_bytes[0] is not valid base64: it contains the character !"),
    ({"inputs": [image_input()]}, None, 400,
     "input 'image_bytes' has neither \"data\" nor binary data (parameters.binary_data_size)"),
    ({"inputs": [image_input([B64])], "outputs": [{"name": "logits"}]}, None, 400,
     "unexpected inference output 'logits' for model 'fake'; its outputs are ['scores']"),
    ({"inputs": [image_input([B64]), {"name": "extra", "datatype": "FP32", "shape": [1],
                                      "data": [1]}]}, None, 400,
     "the model has no input 'extra'; its inputs are ['image_bytes']"),
    (b"[1, 2", None, 400, "the request header is not valid JSON: Expecting ',' delimiter: "
                          "line 1 column 6 (char 5)"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "10000"}, 400,
     "Inference-Header-Content-Length is 10,000 but the body has 14 bytes"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "ten"}, 400,
     "Inference-Header-Content-Length must be a number of bytes, not 'ten'"),
]


@pytest.mark.parametrize(("body", "headers", "status", "message"), BAD)
def test_bad_requests_get_the_protocols_error_and_a_4xx(app, body, headers, status, message):
    response = call(app, "POST", INFER, body, headers)
    assert response.status == status
    assert error_of(response) == message


def test_binary_sizes_that_do_not_add_up_are_refused(app):
    header = {"inputs": [image_input(parameters={"binary_data_size": 500})]}
    body, headers = binary_request(header, length_prefixed(PNG))
    assert error_of(call(app, "POST", INFER, body, headers)) == (
        f"input 'image_bytes': binary_data_size is 500 bytes but only {len(PNG) + 4} bytes "
        "of binary data are left")
    header = {"inputs": [image_input(parameters={"binary_data_size": len(PNG) + 4})]}
    body, headers = binary_request(header, length_prefixed(PNG), b"junk")
    assert error_of(call(app, "POST", INFER, body, headers)) == (
        "4 bytes of binary data after the inputs' binary_data_size; each binary input must "
        "say its size")


def test_tensor_values_are_checked():
    app = make_app(FakeTensorModel())
    cases = [
        ({"name": "x", "datatype": "FP32", "shape": [1, 2], "data": ["a", 1]},
         "input 'x': 'a' is not a FP32 value"),
        ({"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]},
         "input 'x' is FP32, not INT32"),
        ({"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
         "the input 'x' has shape [1, 3]; the model takes [-1, 2] (-1: any size)"),
        ({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2]},
         "input 'x' has 2 elements; shape [2, 2] needs 4"),
    ]
    for item, message in cases:
        response = call(app, "POST", "/v2/models/affine/infer", {"inputs": [item]})
        assert error_of(response) == message


def test_unknown_models_paths_and_methods(app):
    assert error_of(call(app, "GET", "/v2/models/other")) == \
        "Request for unknown model: 'other' is not found"
    assert error_of(call(app, "POST", "/v2/models/fake/versions/9/infer",
                         {"inputs": [image_input([B64])]})) == \
        "Request for unknown model: 'fake' version 9 is not found"
    assert call(app, "GET", "/v2/models/fake/config").status == 404
    wrong = call(app, "GET", INFER)
    assert (wrong.status, wrong.headers["Allow"]) == (405, "POST")
