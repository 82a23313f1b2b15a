"""Real function servers for the protocol tests: the demo digits model on every backend
(in-process TensorFlow, TF Serving REST and gRPC against infra.modelserver, LiteRT), and
TF Serving's own half_plus_two behind the function with a REST backend."""

from __future__ import annotations

import json

import pytest

from modelmeta import InputSpec, ModelMetadata, OutputSpec
from tests.conftest import start_server, stop_server
from tests.litert.conftest import litert_export  # noqa: F401 (the LiteRT flavours, exported)

HALF_PLUS_TWO = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="package")
def backend_servers(server, local_model_server, litert_export, tmp_path_factory):  # noqa: F811
    """The function serving the digits model, by backend name, each as `make serve` runs it."""
    tmp = tmp_path_factory.mktemp("protocol-servers")
    model_dir = local_model_server.options.model_config_file.parent / "digits" / "1"
    common = {"MODEL_URI": str(model_dir), "MAX_IMAGES": "8", "LOG_FORMAT": "text"}
    configs = {
        "tfserving-rest": {"BACKEND": "tfserving-rest",
                           "TFSERVING_URL": local_model_server.rest_url},
        "tfserving-grpc": {"BACKEND": "tfserving-grpc",
                           "TFSERVING_URL": local_model_server.grpc_target},
        "litert": {"BACKEND": "litert", "MODEL_URI": str(litert_export.out),
                   "LITERT_FLAVOUR": "float"},
    }
    started = {"inprocess": server}
    try:
        for name, env in configs.items():
            started[name] = start_server(tmp, {**common, **env})
        yield started
    finally:
        for name, srv in started.items():
            if name != "inprocess":
                stop_server(srv)


@pytest.fixture(scope="package")
def half_plus_two(local_model_server, tmp_path_factory):
    """TF Serving's test model ``saved_model_half_plus_two_2_versions`` (version 123) behind
    the function (BACKEND=tfserving-rest), its metadata written as a tensor-in, tensor-out
    model."""
    tmp = tmp_path_factory.mktemp("half-plus-two")
    metadata = ModelMetadata(HALF_PLUS_TWO, (InputSpec("x", "tensor", "float32", (-1, 1)),),
                             (OutputSpec("y", "tensor", "float32", (-1, 1)),))
    path = tmp / "model_metadata.json"
    path.write_text(metadata.to_json())
    srv = start_server(tmp, {"BACKEND": "tfserving-rest", "TFSERVING_URL":
                             local_model_server.rest_url, "MODEL_METADATA": str(path),
                             "MODEL_NAME": HALF_PLUS_TWO, "MODEL_VERSION": "123",
                             "LOG_FORMAT": "text"})
    yield srv
    stop_server(srv)


def golden_metadata() -> dict:
    from tests.infra.repository import GOLDEN_METADATA

    return json.loads(GOLDEN_METADATA.read_text())
