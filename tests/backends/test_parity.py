"""The same requests through the real function server with every backend give byte-identical
responses: in-process TensorFlow, TF Serving REST (columnar and row) and TF Serving gRPC,
the last three against infra.modelserver on loopback.

Also: with a remote backend the function never imports TensorFlow.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, encode, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(local_model_server):
    """The repository's digits/1: every backend reads its metadata there."""
    return local_model_server.options.model_config_file.parent / "digits" / "1"


@pytest.fixture(scope="module")
def servers(local_model_server, model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    common = {"MODEL_URI": str(model_dir), "MAX_IMAGES": "8", "LOG_FORMAT": "text"}
    rest, grpc_target = local_model_server.rest_url, local_model_server.grpc_target
    configs = {
        "inprocess": {"BACKEND": "inprocess"},
        "rest-columnar": {"BACKEND": "tfserving-rest", "TFSERVING_URL": rest,
                          "MODEL_VERSION": "1"},
        "rest-row": {"BACKEND": "tfserving-rest", "TFSERVING_URL": rest,
                     "TFSERVING_REST_FORMAT": "row"},
        "grpc": {"BACKEND": "tfserving-grpc", "TFSERVING_URL": grpc_target,
                 "MODEL_VERSION_LABEL": "stable"},
    }
    started = {}
    try:
        for name, env in configs.items():
            started[name] = start_server(tmp, {**common, **env})
        yield started
    finally:
        for server in started.values():
            stop_server(server)


def requests_to_compare(digits):
    picks = [int(np.flatnonzero(digits.y_test == d)[0]) for d in range(10)]
    pngs = [encode(digits.x_test[i]) for i in picks]
    jpeg = encode(digits.x_test[picks[3]], "JPEG", quality=90)
    corrupt = pngs[5][:60]  # a PNG header that promises pixels it does not have
    cases = [("multipart", {"files": {"file": ("d.png", png, "image/png")}}) for png in pngs]
    cases += [
        ("json batch", {"json": {"images": [base64.b64encode(p).decode() for p in pngs[:6]]
                                 + [base64.urlsafe_b64encode(jpeg).decode()], "top_k": 3}}),
        ("raw bytes", {"data": jpeg, "headers": {"Content-Type": "image/jpeg"}}),
        ("corrupt in batch", {"json": {"images": [base64.b64encode(pngs[1]).decode(),
                                                  base64.b64encode(corrupt).decode()]}}),
        ("top_k too small", {"json": {"image": base64.b64encode(pngs[2]).decode(),
                                      "top_k": 0}}),
    ]
    return cases


def test_every_backend_answers_byte_for_byte_alike(servers, digits):
    for what, kwargs in requests_to_compare(digits):
        answers = {name: server.post("/predict", **kwargs) for name, server in servers.items()}
        reference = answers["inprocess"]
        for name, response in answers.items():
            assert (response.status_code, response.content) == \
                (reference.status_code, reference.content), f"{what}: {name} differs"
    # And the answers are right, not just alike.
    body = servers["grpc"].post("/predict", **requests_to_compare(digits)[10][1]).json()
    assert [p["class_id"] for p in body["predictions"]] == [0, 1, 2, 3, 4, 5, 3]
    assert body["model"] == {"name": "digits", "version": "1"}
    corrupt = servers["rest-row"].post("/predict", **requests_to_compare(digits)[12][1])
    assert corrupt.status_code == 400
    assert corrupt.json()["error"]["code"] == "invalid_image"
    assert corrupt.json()["error"]["message"] == (
        "images[1]: the image data is corrupt or truncated and could not be decoded")


THIN_CHECK = textwrap.dedent("""
    import json, sys
    import functions_framework
    app = functions_framework.create_app(target="predict", source="main.py")
    png = open(sys.argv[1], "rb").read()
    response = app.test_client().post("/", data=png, content_type="image/png")
    heavy = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras"))
    print(json.dumps({"status": response.status_code, "heavy": heavy,
                      "class_id": response.get_json()["predictions"][0]["class_id"]}))
""")


@pytest.mark.parametrize("backend", ["tfserving-rest", "tfserving-grpc"])
def test_thin_function_never_imports_tensorflow(backend, local_model_server, model_dir,
                                                digits, tmp_path):
    png = tmp_path / "digit.png"
    png.write_bytes(encode(digits.x_test[0]))
    url = local_model_server.rest_url if backend == "tfserving-rest" \
        else local_model_server.grpc_target
    env = {"BACKEND": backend, "TFSERVING_URL": url, "MODEL_URI": str(model_dir),
           "LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", THIN_CHECK, str(png)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": 200, "heavy": [], "class_id": int(digits.y_test[0])}
