"""Every protocol through the real function server, with the real client libraries, on every
backend: tritonclient's HTTP client (health, metadata, infer with JSON and binary BYTES),
KServe's REST client (v1 and v2), TF Serving's request forms and Simple TF Serving's
mini-program body. Each answers the classes and probabilities the native API answers for
the same images, on in-process TensorFlow, TF Serving REST and gRPC (infra.modelserver
on loopback) and LiteRT."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from tests.conftest import encode

pytestmark = pytest.mark.slow

BACKENDS = ("inprocess", "tfserving-rest", "tfserving-grpc", "litert")


@pytest.fixture(scope="module")
def pngs(digits):
    """One held-out digit of each class, as PNG files."""
    picks = [int(np.flatnonzero(digits.y_test == d)[0]) for d in range(10)]
    return [encode(digits.x_test[i]) for i in picks]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def native_scores(srv, pngs) -> np.ndarray:
    """Every class's probability from the native API (top_k=10), one row per image."""
    response = srv.post("/predict", json={"images": [b64(p) for p in pngs], "top_k": 10})
    assert response.status_code == 200, response.text
    rows = []
    for prediction in response.json()["predictions"]:
        row = np.zeros(10)
        for entry in prediction["top_k"]:
            row[entry["class_id"]] = entry["score"]
        rows.append(row)
    return np.array(rows)


def assert_same_answers(scores, native) -> None:
    scores = np.asarray(scores, np.float64)
    assert scores.shape == native.shape
    assert np.array_equal(scores.argmax(axis=1), native.argmax(axis=1))
    assert np.allclose(scores, native, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tf_serving_v2_and_simple_answer_as_the_native_api(backend_servers, pngs, backend):
    srv = backend_servers[backend]
    native = native_scores(srv, pngs[:8])
    assert list(native.argmax(axis=1)) == list(range(8))
    row = srv.post("/v1/models/digits:predict",
                   json={"instances": [{"b64": b64(p)} for p in pngs[:8]]})
    assert row.status_code == 200 and row.headers["Content-Type"] == "application/json"
    assert_same_answers(row.json()["predictions"], native)
    columnar = srv.post("/v1/models/digits/versions/1:predict",
                        json={"signature_name": "serving_default",
                              "inputs": {"image_bytes": [{"b64": b64(p)} for p in pngs[:8]]}})
    assert_same_answers(columnar.json()["outputs"], native)
    v2 = srv.post("/v2/models/digits/infer", json={"id": "x1", "inputs": [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [8],
         "data": [b64(p) for p in pngs[:8]]}]})
    body = v2.json()
    assert body["id"] == "x1" and body["outputs"][0]["shape"] == [8, 10]
    assert_same_answers(np.reshape(body["outputs"][0]["data"], (8, 10)), native)
    simple = srv.post("/", json={"model_name": "default", "model_version": 1, "data": {
        "image": base64.urlsafe_b64encode(pngs[3]).decode().rstrip("=")}})
    assert_same_answers(simple.json()["scores"], native[3:4])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tritonclient_health_metadata_and_infer_json_and_binary(backend_servers, pngs,
                                                                 backend):
    import tritonclient.http as httpclient

    srv = backend_servers[backend]
    native = native_scores(srv, pngs[:4])
    client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
        assert not client.is_model_ready("cats")
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        assert client.get_model_metadata("digits") == {
            "name": "digits", "versions": ["1"], "platform": "tensorflow_savedmodel",
            "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}]}
        for binary_in, binary_out in ((False, False), (True, True), (True, False)):
            image = httpclient.InferInput("image_bytes", [4], "BYTES")
            values = [p if binary_in else b64(p) for p in pngs[:4]]
            image.set_data_from_numpy(np.array(values, dtype=np.object_),
                                      binary_data=binary_in)
            wanted = httpclient.InferRequestedOutput("scores", binary_data=binary_out)
            result = client.infer("digits", [image], outputs=[wanted], request_id="r-42",
                                  request_compression_algorithm="gzip" if binary_in else None)
            assert result.get_response()["id"] == "r-42"
            assert_same_answers(result.as_numpy("scores"), native)
        bad = httpclient.InferInput("image_bytes", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_), binary_data=True)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException) as refused:
            client.infer("digits", [bad])
        assert refused.value.status() == "400"
        assert refused.value.message() == ("image_bytes[0] is not an image (expected JPEG, PNG, "
                                           "GIF or BMP); it starts with the bytes 6e 6f 74 20 "
                                           "61 6e 20 69")
    finally:
        client.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kserve_rest_client_v1_and_v2(backend_servers, pngs, backend):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    srv = backend_servers[backend]
    native = native_scores(srv, pngs[:3])

    async def run():
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            assert await v2.is_server_live(srv.url) and await v2.is_server_ready(srv.url)
            assert await v2.is_model_ready(srv.url, "digits")
            request = InferRequest(model_name="digits", request_id="k-1", infer_inputs=[
                InferInput(name="image_bytes", shape=[3], datatype="BYTES",
                           data=[b64(p) for p in pngs[:3]])])
            response = await v2.infer(srv.url, request, model_name="digits")
            assert response.id == "k-1"
            assert_same_answers(response.outputs[0].as_numpy(), native)
        finally:
            await v2.close()
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=60))
        try:
            assert await v1.is_model_ready(srv.url, "digits")
            answer = await v1.infer(srv.url, {"instances": [{"b64": b64(p)} for p in pngs[:3]]},
                                    model_name="digits")
            assert_same_answers(answer["predictions"], native)
        finally:
            await v1.close()

    asyncio.run(run())


def test_tf_servings_own_model_behind_the_function_answers_as_tf_serving(
        half_plus_two, local_model_server):
    """TF Serving's documented half_plus_two requests, byte for byte what the model server
    itself answers, and its golden metadata."""
    import requests

    from tests.protocols.conftest import HALF_PLUS_TWO, golden_metadata

    path = f"/v1/models/{HALF_PLUS_TWO}:predict"
    for body in ('{"instances": [[1.0], [2.0], [5.0]]}',
                 '{"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0], [5.0]]}}',
                 '{"inputs": [[1.0], [2.0], [5.0]]}'):
        ours = half_plus_two.post(path, data=body, headers={"Content-Type": "application/json"})
        theirs = requests.post(local_model_server.rest_url + path, data=body, timeout=30)
        assert (ours.status_code, ours.text) == (theirs.status_code, theirs.text) == \
            (200, ours.text)
    assert ours.text == '{"outputs": [[2.5], [3.0], [4.5]]}'
    golden = golden_metadata()
    metadata = half_plus_two.get(f"/v1/models/{HALF_PLUS_TWO}/versions/123/metadata").json()
    assert metadata["model_spec"] == golden["model_spec"]
    ours_sig = metadata["metadata"]["signature_def"]["signature_def"]
    assert ours_sig == {"serving_default":
                        golden["metadata"]["signature_def"]["signature_def"]["serving_default"]}
    regress = half_plus_two.post(f"/v1/models/{HALF_PLUS_TWO}:regress",
                                 json={"signature_name": "regress_x_to_y", "examples": []})
    assert (regress.status_code, regress.json()) == (
        400, {"error": "No signature was found with the name: regress_x_to_y"})
    v2 = half_plus_two.post(f"/v2/models/{HALF_PLUS_TWO}/versions/123/infer", json={
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 5]}]})
    assert v2.json()["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [3, 1],
                                     "data": [2.5, 3.0, 4.5]}]
    simple = half_plus_two.post("/", json={"data": {"x": [[1.0], [5.0]]}})
    assert simple.json() == {"y": [[2.5], [4.5]]}
    assert json.loads(half_plus_two.get("/v2/health/ready").text) == {"ready": True}


THIN_CHECK = """
import json, sys
import functions_framework
app = functions_framework.create_app(target="predict", source=sys.argv[2] + "/main.py")
client = app.test_client()
b64 = sys.argv[1]
answers = [
    client.post("/v1/models/digits:predict", json={"instances": [{"b64": b64}]}),
    client.post("/v2/models/digits/infer", json={"inputs": [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [b64]}]}),
    client.post("/", json={"data": {"image": b64}}),
]
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras", "infra"))
print(json.dumps({"status": [a.status_code for a in answers], "heavy": heavy}))
"""


@pytest.mark.parametrize("backend", ["tfserving-rest", "tfserving-grpc"])
def test_every_protocol_on_the_thin_function_leaves_tensorflow_out(
        backend, local_model_server, pngs):
    import subprocess
    import sys

    from tests.conftest import ROOT

    model_dir = local_model_server.options.model_config_file.parent / "digits" / "1"
    url = local_model_server.rest_url if backend == "tfserving-rest" \
        else local_model_server.grpc_target
    env = {"BACKEND": backend, "TFSERVING_URL": url, "MODEL_URI": str(model_dir),
           "LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", THIN_CHECK, b64(pngs[7]), str(ROOT)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": [200, 200, 200], "heavy": []}
