"""infra.modelserver against TF Serving's own test SavedModels and golden metadata.

REST through real HTTP on loopback, gRPC through tensorflow-serving-api's own stubs.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from infra.modelserver.repository import ModelEntry, RepositoryError, parse_model_config
from infra.modelserver.server import ModelServer, ServerOptions
from tests.conftest import ROOT
from tests.infra.repository import GOLDEN_METADATA, HALF_PLUS_TWO

pytestmark = pytest.mark.slow

HP2 = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="module")
def rest(local_model_server):
    session = requests.Session()
    base = local_model_server.rest_url

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, base + path, timeout=30, **kwargs)

    yield call
    session.close()


@pytest.fixture(scope="module")
def channel(local_model_server):
    with grpc.insecure_channel(local_model_server.grpc_target) as chan:
        yield chan


def float_tensor(values, shape) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.float_val.extend(values)
    return proto


# --- REST ---------------------------------------------------------------------------


def test_half_plus_two_row_format(rest):
    response = rest("POST", f"/v1/models/{HP2}:predict", data='{"instances": [1.0, 2.0, 5.0]}')
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_half_plus_two_columnar_and_version_and_label_routes(rest):
    for path in (f"/v1/models/{HP2}", f"/v1/models/{HP2}/versions/123",
                 f"/v1/models/{HP2}/labels/stable"):
        response = rest("POST", path + ":predict", data='{"inputs": [[1.0], [2.0], [5.0]]}')
        assert response.status_code == 200, response.text
        assert response.text == '{"outputs": [[2.5], [3.0], [4.5]]}'


def test_half_plus_three(rest):
    response = rest("POST", "/v1/models/half_plus_three:predict",
                    data='{"instances": [1.0, 2.0, 5.0]}')
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_gzip_request_body(rest):
    body = gzip.compress(json.dumps({"instances": [[float(i)] for i in range(1000)]}).encode())
    response = rest("POST", f"/v1/models/{HP2}:predict", data=body,
                    headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.json()["predictions"] == [[0.5 * i + 2] for i in range(1000)]


def test_metadata_matches_tf_servings_golden_json(rest):
    response = rest("GET", f"/v1/models/{HP2}/metadata")
    assert response.status_code == 200
    served = response.json()
    golden = json.loads(GOLDEN_METADATA.read_text())
    assert served["model_spec"] == golden["model_spec"]
    served_defs = served["metadata"]["signature_def"]["signature_def"]
    golden_defs = golden["metadata"]["signature_def"]["signature_def"]
    # The golden file was recorded from TF Serving's 2-versions copy of half_plus_two, which
    # has one signature (classify_x2_to_y3) more than the half_plus_two_cpu fixture.
    assert set(golden_defs) - set(served_defs) == {"classify_x2_to_y3"}
    assert set(served_defs) <= set(golden_defs)
    for name, signature in served_defs.items():
        assert signature == golden_defs[name], name


def test_model_status(rest):
    expected = {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest("GET", f"/v1/models/{HP2}").json() == expected
    assert rest("GET", f"/v1/models/{HP2}/versions/123").json() == expected
    assert rest("GET", f"/v1/models/{HP2}/labels/stable").json() == expected


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("POST", "/v1/models/nope:predict", '{"instances": [1.0]}', 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", f"/v1/models/{HP2}/versions/7:predict", '{"instances": [1.0]}', 404,
     f"Servable not found for request: Specific({HP2}, 7)"),
    ("POST", f"/v1/models/{HP2}/labels/canary:predict", '{"instances": [1.0]}', 400,
     "Unrecognized servable version label: canary"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", f"/v1/models/{HP2}/versions/9", None, 404, f"Could not find version 9 of model {HP2}"),
    ("POST", f"/v1/models/{HP2}:predict", '{"instances": [1.0', 400,
     "JSON Parse error: Expecting ',' delimiter at offset: 18"),
    ("POST", f"/v1/models/{HP2}:predict", '{"instances": ["a"]}', 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: "
     '"a" Type: String is not of expected type: float'),
    ("POST", f"/v1/models/{HP2}:predict", '{"signature_name": "nope", "instances": [1.0]}', 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", f"/v1/models/{HP2}:classify", '{"examples": []}', 501,
     "classify is not served by this local model server"),
    ("GET", f"/v1/models/{HP2}:predict", None, 400,
     f"Malformed request: GET /v1/models/{HP2}:predict"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
])
def test_errors_have_tf_servings_status_and_body(rest, method, path, body, status, error):
    response = rest(method, path, data=body)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_string_input_takes_standard_base64_and_returns_class_scores(rest, digits):
    from tests.conftest import encode

    png = encode(digits.x_test[0])
    import base64

    body = {"instances": [{"b64": base64.b64encode(png).decode()}]}
    response = rest("POST", "/v1/models/digits/labels/stable:predict", json=body)
    assert response.status_code == 200
    (scores,) = response.json()["predictions"]
    assert len(scores) == 10 and abs(sum(scores) - 1) < 1e-5
    assert int(np.argmax(scores)) == int(digits.y_test[0])
    urlsafe = {"instances": [{"b64": base64.urlsafe_b64encode(b"\xfb\xff\xfe").decode()}]}
    refused = rest("POST", "/v1/models/digits:predict", json=urlsafe)
    assert refused.status_code == 400
    assert refused.json()["error"].endswith("Unable to base64 decode")


# --- gRPC ---------------------------------------------------------------------------


def test_grpc_predict_typed_fields(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = HP2
    request.inputs["x"].CopyFrom(float_tensor([1.0, 2.0, 5.0], (3, 1)))
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert response.outputs["y"].tensor_content == b""
    assert response.model_spec.name == HP2 and response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_grpc_metadata_matches_golden(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = HP2
    response = stub.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    served = json_format.MessageToDict(signature_map, preserving_proto_field_name=True,
                                       always_print_fields_with_no_presence=True)
    golden = json.loads(GOLDEN_METADATA.read_text())["metadata"]["signature_def"]
    for name, signature in served["signature_def"].items():
        assert signature == golden["signature_def"][name]


def test_grpc_model_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "digits"
    response = stub.GetModelStatus(request, timeout=30)
    (status,) = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize(("spec", "code", "details"), [
    ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ({"name": HP2, "version_label": "canary"}, grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: canary"),
    ({"name": HP2, "signature_name": "nope"}, grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
])
def test_grpc_errors_have_tf_servings_codes(channel, spec, code, details):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    json_format.ParseDict(spec, request.model_spec)
    request.inputs["x"].CopyFrom(float_tensor([1.0], (1, 1)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == code
    assert info.value.details() == details


def test_grpc_wrong_input_dtype_is_invalid_argument(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = HP2
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                                        string_val=[b"a"]))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Expects arg[0] to be float but string is provided"


def test_tensor_content_serialization(tmp_path):
    server = ModelServer(ServerOptions(
        port=0, rest_api_port=None, enable_serialization_as_tensor_content=True,
        models=(ModelEntry(name="hp2", base_path=HALF_PLUS_TWO),))).start()
    try:
        with grpc.insecure_channel(server.grpc_target) as chan:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "hp2"
            request.inputs["x"].CopyFrom(float_tensor([1.0, 2.0], (2, 1)))
            output = stub.Predict(request, timeout=30).outputs["y"]
    finally:
        server.stop()
    assert list(output.float_val) == []
    assert np.frombuffer(output.tensor_content, np.float32).tolist() == [2.5, 3.0]


# --- repository, warmup and the command line -----------------------------------------


def test_models_config_policies_and_labels(tmp_path):
    entries = parse_model_config("""
        model_config_list {
          config { name: "a" base_path: "rel/a" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 1 versions: 3 } }
                   version_labels { key: "stable" value: 1 }
                   version_labels { key: "canary" value: 3 } }
          config { name: "b" base_path: "/abs/b"
                   model_version_policy { latest { num_versions: 2 } } }
          config { name: "c" base_path: "/abs/c" model_version_policy { all {} } }
        }""", tmp_path)
    assert entries[0] == ModelEntry("a", tmp_path / "rel/a", "specific", 1, (1, 3),
                                    {"stable": 1, "canary": 3})
    assert (entries[1].policy, entries[1].num_versions) == ("latest", 2)
    assert entries[2].policy == "all"
    with pytest.raises(RepositoryError, match="does not parse"):
        parse_model_config("model_config_list { config { nme: 'x' } }")
    with pytest.raises(RepositoryError, match="model_platform 'tflite' is not served here"):
        parse_model_config("model_config_list { config { name: 'x' base_path: '/x' "
                           "model_platform: 'tflite' } }")


UNAVAILABLE = ("Request to assign label to version {version} of model {model}, which is not "
               "currently available for inference (labels are assigned before any version "
               "loads: start the server with --allow_version_labels_for_unavailable_models, "
               "as TF Serving needs)")


@pytest.mark.parametrize("version", [123, 7])
def test_labels_at_start_are_refused_without_the_flag(version):
    """As TF Serving: labels are assigned before loading, so even a label on the version
    about to load (123) is on an unavailable one; nothing gets loaded."""
    server = ModelServer(ServerOptions(port=0, models=(
        ModelEntry(name="hp2", base_path=HALF_PLUS_TWO, labels={"stable": version}),)))
    with pytest.raises(RepositoryError) as info:
        server.start()
    assert str(info.value) == UNAVAILABLE.format(version=version, model="hp2")
    assert server.core.manager.servables == {} and server.grpc is None


def test_the_shipped_models_config_needs_the_flag(capsys):
    """infra/tfserving/models.config labels versions 1 and 2: refused without the flag,
    before the server looks for /models/digits (absent here)."""
    from infra.modelserver.__main__ import main

    config = ROOT / "infra" / "tfserving" / "models.config"
    assert main(["--port=0", f"--model_config_file={config}"]) == 1
    assert capsys.readouterr().err == \
        f"error: {UNAVAILABLE.format(version=1, model='digits')}\n"
    assert main(["--port=0", f"--model_config_file={config}",
                 "--allow_version_labels_for_unavailable_models=true"]) == 1
    assert capsys.readouterr().err == \
        "error: model base path /models/digits is not a directory\n"


def test_with_the_flag_labels_serve_and_a_label_on_a_missing_version_is_not_found(caplog):
    caplog.set_level("WARNING", logger="infra.modelserver")
    server = ModelServer(ServerOptions(
        port=None, rest_api_port=0, allow_version_labels_for_unavailable_models=True,
        models=(ModelEntry(name="hp2", base_path=HALF_PLUS_TWO,
                           labels={"stable": 123, "canary": 7}),))).start()
    try:
        base = f"{server.rest_url}/v1/models/hp2/labels"
        stable = requests.post(f"{base}/stable:predict", data='{"instances": [1.0]}',
                               timeout=30)
        canary = requests.post(f"{base}/canary:predict", data='{"instances": [1.0]}',
                               timeout=30)
    finally:
        server.stop()
    assert (stable.status_code, stable.json()) == (200, {"predictions": [2.5]})
    assert (canary.status_code, canary.json()) == \
        (404, {"error": "Servable not found for request: Specific(hp2, 7)"})
    assert "label canary of model hp2 names version 7, which is not served" in caplog.text


@pytest.mark.parametrize(("argv", "expected"), [
    ([], False),
    (["--allow_version_labels_for_unavailable_models"], True),
    (["--allow_version_labels_for_unavailable_models=true"], True),
    (["--allow_version_labels_for_unavailable_models=false"], False),
])
def test_the_flag_parses_as_tf_servings_bool_flags(argv, expected):
    from infra.modelserver.__main__ import parser

    assert parser().parse_args(argv).allow_version_labels_for_unavailable_models is expected


def test_rest_answers_a_reused_connection_without_the_delayed_ack_stall(local_model_server):
    """Status line, headers and body written separately make the body wait for the
    client's delayed ACK (40 ms on Linux) on every request after the first on a kept-alive
    connection. The server answers with one write on a TCP_NODELAY socket: half_plus_two
    takes well under a millisecond, so the median round trip stays far below the stall."""
    session = requests.Session()
    url = f"{local_model_server.rest_url}/v1/models/{HP2}:predict"
    timings = []
    try:
        for _ in range(40):
            start = time.perf_counter()
            response = session.post(url, data='{"instances": [1.0]}', timeout=30)
            timings.append(time.perf_counter() - start)
            assert response.json() == {"predictions": [2.5]}
    finally:
        session.close()
    p50 = sorted(timings[5:])[len(timings[5:]) // 2]
    assert p50 < 0.02, f"REST p50 {p50 * 1000:.1f} ms on a reused connection"


def _warmup_model(tmp_path, records) -> ModelEntry:
    import tensorflow as tf

    base = tmp_path / "hp2"
    shutil.copytree(HALF_PLUS_TWO, base)
    extra = base / "00000123" / "assets.extra"
    extra.mkdir()
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for inputs in records:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.model_spec.name = "hp2"
            for name, tensor in inputs.items():
                log.predict_log.request.inputs[name].CopyFrom(tensor)
            writer.write(log.SerializeToString())
    return ModelEntry(name="hp2", base_path=base)


def test_warmup_records_run_and_a_bad_one_fails_the_load(tmp_path, caplog):
    good = _warmup_model(tmp_path / "good", [{"x": float_tensor([1.0], (1, 1))}] * 3)
    caplog.set_level("INFO", logger="infra.modelserver")
    server = ModelServer(ServerOptions(port=0, models=(good,))).start()
    server.stop()
    assert "warmed up hp2 version 123 with 3 request(s)" in caplog.text
    bad = _warmup_model(tmp_path / "bad", [{"nope": float_tensor([1.0], (1, 1))}])
    with pytest.raises(RepositoryError, match="warmup record 0 failed: input size does not"):
        ModelServer(ServerOptions(port=0, models=(bad,))).start()


def test_command_line_serves_one_model(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.modelserver", "--port=0", "--rest_api_port=0",
         f"--model_base_path={HALF_PLUS_TWO}", "--model_name=hp2", "--enable_batching=true"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and not line.startswith("ready"):
            line = process.stdout.readline()
            assert line or process.poll() is None, process.stderr.read()
        assert line.startswith("ready grpc=127.0.0.1:")
        rest_url = line.split("rest=")[1].strip()
        response = requests.post(rest_url + "/v1/models/hp2:predict",
                                 data='{"instances": [1.0]}', timeout=30)
        assert response.json() == {"predictions": [2.5]}
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "--enable_batching has no effect on the local model server" in err


def test_command_line_refuses_a_missing_repository(tmp_path, capsys):
    from infra.modelserver.__main__ import main

    missing = tmp_path / "missing.config"
    assert main(["--port=0", f"--model_config_file={missing}"]) == 1
    assert capsys.readouterr().err == f"error: cannot read {missing}: No such file or directory\n"
    assert main(["--port=-1"]) == 2
    assert capsys.readouterr().err == \
        "error: nothing to listen on: give --port or --rest_api_port\n"
