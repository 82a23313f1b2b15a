"""The litert backend through a real functions-framework server, against the in-process one.

Both servers get the same held-out digits as a client sends them; the float
flavour must give the in-process backend's class for every one of them, the
int8 flavour for at least 99% of them. Without TensorFlow in the process.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from functions.config import ConfigError, Settings
from modelmeta import LITERT_DIR, ModelMetadata
from tests.conftest import ROOT, encode, start_server, stop_server

pytestmark = pytest.mark.slow

BATCH = 8  # the in-process `server` fixture allows MAX_IMAGES=8


@pytest.fixture(scope="module")
def litert_servers(litert_export, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("litert-servers")
    servers = {}
    try:
        for flavour in ("float", "int8"):
            servers[flavour] = start_server(tmp, {"BACKEND": "litert",
                                                  "MODEL_URI": str(litert_export.out),
                                                  "LITERT_FLAVOUR": flavour})
        yield servers
    finally:
        for srv in servers.values():
            stop_server(srv)


@pytest.fixture(scope="module")
def held_out(digits):
    """Every held-out digit as a base64 PNG, and its label."""
    images = [base64.b64encode(encode(pixels)).decode() for pixels in digits.x_test]
    return images, digits.y_test


def predict_all(server, images: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and top-1 scores for all images, in batches as a client would send them."""
    classes, scores = [], []
    for start in range(0, len(images), BATCH):
        response = server.post(json={"images": images[start:start + BATCH], "top_k": 1})
        assert response.status_code == 200, response.text
        for prediction in response.json()["predictions"]:
            classes.append(prediction["class_id"])
            scores.append(prediction["score"])
    return np.array(classes), np.array(scores)


@pytest.fixture(scope="module")
def inprocess_answers(server, held_out):
    return predict_all(server, held_out[0])


def test_float_flavour_agrees_with_inprocess_on_every_held_out_digit(
        litert_servers, held_out, inprocess_answers, demo_model):
    images, labels = held_out
    classes, scores = predict_all(litert_servers["float"], images)
    want_classes, want_scores = inprocess_answers
    assert len(classes) == len(labels) == 360
    assert np.array_equal(classes, want_classes)
    assert np.abs(scores - want_scores).max() <= 2e-6  # float32 noise plus 6-digit rounding
    assert np.mean(classes == labels) == pytest.approx(demo_model.accuracy, abs=1e-9)


def test_int8_flavour_agrees_with_inprocess_on_at_least_99_percent(
        litert_servers, held_out, inprocess_answers):
    images, labels = held_out
    classes, scores = predict_all(litert_servers["int8"], images)
    want_classes, want_scores = inprocess_answers
    agreement = float(np.mean(classes == want_classes))
    print(f"int8 argmax agreement with in-process: {agreement:.2%} "
          f"({int((classes != want_classes).sum())} of {len(classes)} differ); "
          f"top-1 score max difference {np.abs(scores - want_scores).max():.4f}; "
          f"accuracy {np.mean(classes == labels):.4f}")
    assert agreement >= 0.99
    # int8 outputs are dequantized multiples of 1/256
    assert np.allclose(np.round(scores * 256), scores * 256, atol=1e-3)


def test_health_and_response_shape(litert_servers, held_out):
    for srv in litert_servers.values():
        health = srv.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ready", "model": {"name": "digits",
                                                              "version": None}}
        body = srv.post(json={"image": held_out[0][0], "top_k": 3}).json()
        (prediction,) = body["predictions"]
        assert set(prediction) == {"class_id", "label", "score", "top_k"}
        assert prediction["class_id"] == int(held_out[1][0])
        assert [t["class_id"] for t in prediction["top_k"]][0] == prediction["class_id"]
        assert len(prediction["top_k"]) == 3


def test_every_request_shape_and_format_works(litert_servers, digits):
    """Raw bytes, multipart, GIF, BMP, JPEG, a large colour photo: all decoded in Python."""
    srv = litert_servers["float"]
    label, pixels = int(digits.y_test[4]), digits.x_test[4]
    big = np.stack([np.kron(pixels, np.ones((20, 20), np.uint8))] * 3, axis=-1)
    for data, ctype in [(encode(pixels), "image/png"), (encode(pixels, "GIF"), "image/gif"),
                        (encode(pixels, "BMP"), "image/bmp"),
                        (encode(pixels, "JPEG", quality=95), "image/jpeg"),
                        (encode(big, "JPEG", quality=90), "image/jpeg")]:
        response = srv.post(data=data, headers={"Content-Type": ctype})
        assert response.status_code == 200, (ctype, response.text)
        assert response.json()["predictions"][0]["class_id"] == label, ctype
    response = srv.post(files={"file": ("tmp.png", encode(pixels), "image/png")})
    assert response.json()["predictions"][0]["class_id"] == label


def test_bad_images_get_precise_errors(litert_servers, digits):
    srv = litert_servers["int8"]
    good = encode(digits.x_test[0])
    truncated = good[: len(good) // 2]
    response = srv.post(json={"images": [base64.b64encode(good).decode(),
                                         base64.b64encode(truncated).decode()]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image"
    assert error["message"].startswith("images[1]: ")
    assert "corrupt or truncated" in error["message"]
    buf = io.BytesIO()
    Image.new("CMYK", (28, 28)).save(buf, format="JPEG")
    cmyk = buf.getvalue()
    response = srv.post(data=cmyk, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_image",
        "message": "body: a CMYK JPEG cannot be decoded to gray; send an RGB or gray JPEG, "
                   "or a PNG"}


def test_concurrent_requests_share_one_interpreter_safely(litert_servers, held_out):
    srv = litert_servers["int8"]
    images = held_out[0][:48]
    expected = predict_all(srv, images)[0]

    def one(i):
        response = srv.post(json={"image": images[i]})
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["class_id"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, list(range(len(images))) * 3))
    assert got == list(expected) * 3


def tensorflow_files_mapped(pid: int) -> list[str]:
    """Files of the tensorflow package mapped into a process and its children."""
    from bench.procs import process_tree

    found = []
    for proc in process_tree(pid):
        try:
            maps = Path(f"/proc/{proc}/maps").read_text()
        except OSError:
            continue
        found += [line.split()[-1] for line in maps.splitlines()
                  if "site-packages/tensorflow/" in line]
    return found


def test_the_server_never_maps_tensorflow(litert_servers, held_out):
    for srv in litert_servers.values():
        assert srv.post(json={"image": held_out[0][0]}).status_code == 200
        assert tensorflow_files_mapped(srv.process.pid) == []


def test_serving_a_request_never_imports_tensorflow(litert_export, held_out):
    """In a fresh interpreter: build the app from the environment, answer one request."""
    script = """
import json, sys
from functions.app import App
from functions.config import Settings
from functions.httpio import Headers, HttpRequest
app = App(Settings.from_env())
body = json.dumps({"image": sys.argv[1]}).encode()
response = app.handle(HttpRequest("POST", "/", Headers({"Content-Type": "application/json"}),
                                  body))
print(json.dumps({"status": response.status, "body": json.loads(response.body),
                  "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] in
                                       ("tensorflow", "keras", "tf_keras"))}))
"""
    env = {"BACKEND": "litert", "MODEL_URI": str(litert_export.out), "LITERT_FLAVOUR": "int8",
           "PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", script, held_out[0][0]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert result["body"]["predictions"][0]["class_id"] == int(held_out[1][0])
    assert result["tensorflow"] == []


def test_model_uri_forms(litert_export, demo_model, tmp_path):
    """A .tflite file, the litert/ folder, or a prepared model directory holding litert/."""
    from functions.backends.litert import LiteRTBackend

    prepared = tmp_path / "served"
    shutil.copytree(demo_model.served, prepared)
    shutil.copytree(litert_export.out, prepared / LITERT_DIR)
    png = encode(np.zeros((28, 28), np.uint8))
    answers = []
    for uri, flavour in [(litert_export.out / "model_int8.tflite", "float"),
                         (litert_export.out, "int8"), (prepared, "int8")]:
        backend = LiteRTBackend(uri, flavour)
        assert backend.metadata.image_input.name == "image_bytes"
        assert [(o.name, o.dtype) for o in backend.metadata.outputs] == [("scores", "float32")]
        answers.append(backend.predict({"image_bytes": np.array([png], dtype=object)})["scores"])
    # a .tflite path wins over LITERT_FLAVOUR: all three ran the int8 model
    assert np.array_equal(answers[0], answers[1]) and np.array_equal(answers[1], answers[2])
    assert answers[0].dtype == np.float32 and answers[0].shape == (1, 10)


def test_missing_model_is_not_ready_with_a_hint(tmp_path):
    srv = start_server(tmp_path, {"BACKEND": "litert", "MODEL_URI": str(tmp_path / "nowhere")},
                       ready_status=503)
    try:
        import time

        for _ in range(100):
            health = srv.get("/healthz").json()
            if health["status"] != "loading":
                break
            time.sleep(0.1)
        assert health["status"] == "failed"
        message = health["error"]["message"]
        assert f"no LiteRT model at {tmp_path / 'nowhere' / 'model_float.tflite'}" in message
        assert "modelprep litert" in message
        response = srv.post(data=encode(np.zeros((28, 28), np.uint8)),
                            headers={"Content-Type": "image/png"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"
    finally:
        stop_server(srv)


def test_stale_metadata_is_refused(litert_export, tmp_path):
    from functions.backends.litert import LiteRTBackend
    from functions.errors import ModelNotReady

    folder = tmp_path / "litert"
    shutil.copytree(litert_export.out, folder)
    meta = json.loads((folder / "model_int8.json").read_text())
    meta["inputs"][0]["quantization"]["zero_point"] = 0
    (folder / "model_int8.json").write_text(json.dumps(meta))
    with pytest.raises(ModelNotReady, match=r"tensor 'images' is int8 \(scale 0.0039215688"
                       r".*zero point -128\) but its metadata says int8 .*zero point 0\); "
                       "export the flavour again"):
        LiteRTBackend(folder, "int8")
    (folder / "model_float.json").unlink()
    with pytest.raises(ModelNotReady, match="no metadata at .*model_float.json"):
        LiteRTBackend(folder, "float")
    shutil.copy(litert_export.out / "model_float.json", folder / "model_float.json")
    (folder / "model_float.tflite").write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ModelNotReady, match=f"cannot load the LiteRT model {folder}/"
                                            "model_float.tflite: "):
        LiteRTBackend(folder, "float")


def test_flavour_setting_is_checked():
    assert Settings.from_env({"BACKEND": "litert"}).litert_flavour == "float"
    assert Settings.from_env({"BACKEND": "litert", "LITERT_FLAVOUR": " INT8 "}).litert_flavour \
        == "int8"
    with pytest.raises(ConfigError, match="LITERT_FLAVOUR must be one of float, int8, "
                                          "got 'fp16'"):
        Settings.from_env({"BACKEND": "litert", "LITERT_FLAVOUR": "fp16"})


def test_exported_metadata_is_the_contract(litert_export):
    int8 = ModelMetadata.from_json((litert_export.out / "model_int8.json").read_text())
    (pixels,) = int8.inputs
    assert (pixels.name, pixels.kind, pixels.dtype, pixels.shape) == ("images", "pixels",
                                                                      "int8", (-1, 784))
    assert pixels.image.layout == "flat" and pixels.image.resize == "pad"
    assert (pixels.quantization.dtype, pixels.quantization.zero_point) == ("int8", -128)
    assert pixels.quantization.scale == pytest.approx(1 / 255, rel=1e-6)
    (scores,) = int8.outputs
    assert (scores.name, scores.role, scores.dtype) == ("scores", "probabilities", "int8")
    assert (scores.quantization.scale, scores.quantization.zero_point) == (1 / 256, -128)
    assert int8.labels == tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def failed_int8(demo_model, tmp_path_factory):
    """An int8 flavour calibrated on one blank image: `modelprep litert` catches it and
    marks it ``verified: false`` (see tests/litert/test_export.py)."""
    from modelprep.litert import LiteRTOptions, export_litert

    tmp = tmp_path_factory.mktemp("failed-int8")
    (tmp / "blank").mkdir()
    (tmp / "blank" / "blank.png").write_bytes(encode(np.zeros((28, 28), np.uint8)))
    result = export_litert(demo_model.served, LiteRTOptions(
        flavours=("int8",), out=tmp / "litert", images=tmp / "blank", verify_count=16))
    assert result.failed == ("int8",)
    return tmp / "litert"


def wait_for_health(srv) -> dict:
    import time

    for _ in range(200):
        health = srv.get("/healthz").json()
        if health["status"] != "loading":
            return health
        time.sleep(0.1)
    return health


def test_a_flavour_that_failed_verification_is_not_served(failed_int8, tmp_path, digits):
    srv = start_server(tmp_path, {"BACKEND": "litert", "MODEL_URI": str(failed_int8),
                                  "LITERT_FLAVOUR": "int8"}, ready_status=503)
    try:
        health = wait_for_health(srv)
        assert health["status"] == "failed"
        message = health["error"]["message"]
        assert message.startswith(f"the LiteRT int8 model {failed_int8 / 'model_int8.tflite'} "
                                  "is not verified against the original model (16 images")
        assert message.endswith("or set LITERT_ALLOW_UNVERIFIED=true to serve it anyway")
        response = srv.post(data=encode(digits.x_test[0]), headers={"Content-Type": "image/png"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"
    finally:
        stop_server(srv)


def test_serving_an_unverified_flavour_is_an_explicit_choice_and_logged(failed_int8, tmp_path,
                                                                       digits):
    srv = start_server(tmp_path, {"BACKEND": "litert", "MODEL_URI": str(failed_int8),
                                  "LITERT_FLAVOUR": "int8", "LITERT_ALLOW_UNVERIFIED": "true"})
    try:
        response = srv.post(data=encode(digits.x_test[0]), headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        log = srv.log.read_text()
        assert "serving the LiteRT int8 model" in log
        assert "because LITERT_ALLOW_UNVERIFIED=true" in log
    finally:
        stop_server(srv)


def test_verified_flavours_and_older_exports_are_served(litert_export, tmp_path, caplog):
    from functions.backends.litert import LiteRTBackend

    for flavour in ("float", "int8"):
        meta = ModelMetadata.from_json((litert_export.out / f"model_{flavour}.json").read_text())
        assert meta.source["verified"] is True
        LiteRTBackend(litert_export.out, flavour, allow_unverified=False)
    folder = tmp_path / "litert"
    shutil.copytree(litert_export.out, folder)
    meta = json.loads((folder / "model_float.json").read_text())
    del meta["source"]["verified"], meta["source"]["verification"]
    (folder / "model_float.json").write_text(json.dumps(meta))
    # The function's logger stops at "functions" once an App configured it (in this
    # process, by an earlier test): listen there rather than at the root.
    functions_log = logging.getLogger("functions")
    functions_log.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="functions"):
            LiteRTBackend(folder, "float", allow_unverified=False)
    finally:
        functions_log.removeHandler(caplog.handler)
    assert "carries no verification verdict" in caplog.text
