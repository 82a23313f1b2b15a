"""Choosing and configuring a TF Serving backend: settings, routes, metadata, no network."""

from __future__ import annotations

import json

import pytest

from functions.backends.factory import create_backend
from functions.backends.remote import RetryPolicy, Target, load_metadata
from functions.backends.tfserving_grpc import GrpcBackend, channel_target
from functions.backends.tfserving_rest import RestBackend
from functions.config import ConfigError, Settings
from functions.errors import ModelNotReady

METADATA = {"schema_version": 1, "name": "digits", "signature": "serving_default",
            "inputs": [{"name": "image_bytes", "kind": "image_bytes", "dtype": "string",
                        "shape": [-1], "image": {"height": 28, "width": 28, "channels": 1}}],
            "outputs": [{"name": "scores", "role": "probabilities", "dtype": "float32",
                         "shape": [-1, 10]}]}


@pytest.fixture
def metadata_file(tmp_path):
    path = tmp_path / "model_metadata.json"
    path.write_text(json.dumps(METADATA))
    return path


def test_settings_for_a_remote_backend():
    settings = Settings.from_env({
        "BACKEND": "TFServing-REST", "TFSERVING_URL": "http://tfs:8501", "MODEL_VERSION": "3",
        "REQUEST_TIMEOUT": "2.5", "UPSTREAM_RETRIES": "0", "TFSERVING_REST_FORMAT": "row"})
    assert (settings.backend, settings.tfserving_url, settings.model_version) == \
        ("tfserving-rest", "http://tfs:8501", "3")
    assert (settings.request_timeout, settings.upstream_retries) == (2.5, 0)
    assert settings.tfserving_rest_format == "row"


@pytest.mark.parametrize(("env", "message"), [
    ({"BACKEND": "tfserving-grpc", "MODEL_VERSION": "v2"},
     "MODEL_VERSION must be a version number with BACKEND=tfserving-grpc, got 'v2'"),
    ({"BACKEND": "tfserving-rest", "MODEL_VERSION": "2", "MODEL_VERSION_LABEL": "stable"},
     "set MODEL_VERSION or MODEL_VERSION_LABEL, not both"),
    ({"BACKEND": "tfserving-rest", "REQUEST_TIMEOUT": "0"},
     "REQUEST_TIMEOUT must be a positive number of seconds, got '0'"),
    ({"BACKEND": "tfserving-rest", "REQUEST_TIMEOUT": "soon"},
     "REQUEST_TIMEOUT must be a number of seconds, got 'soon'"),
    ({"BACKEND": "tfserving-rest", "UPSTREAM_RETRIES": "-1"},
     "UPSTREAM_RETRIES must be a whole number of 0 or more, got '-1'"),
    ({"BACKEND": "tfserving-rest", "UPSTREAM_RETRIES": "50"},
     "UPSTREAM_RETRIES must be at most 10, got 50"),
    ({"BACKEND": "tfserving-rest", "TFSERVING_REST_FORMAT": "rows"},
     "TFSERVING_REST_FORMAT must be columnar or row, got 'rows'"),
])
def test_bad_settings_are_refused_with_a_precise_message(env, message):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value) == message


def test_unknown_backend_lists_the_tf_serving_ones():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"BACKEND": "tfserving"})
    message = str(info.value)
    assert message.startswith("BACKEND must be one of inprocess, tfserving-rest, tfserving-grpc")
    assert message.endswith(", got 'tfserving'")


@pytest.mark.parametrize(("env", "url"), [
    ({}, "http://127.0.0.1:8501/v1/models/digits:predict"),
    ({"MODEL_VERSION": "7"}, "http://127.0.0.1:8501/v1/models/digits/versions/7:predict"),
    ({"MODEL_VERSION_LABEL": "canary", "MODEL_NAME": "my model",
      "TFSERVING_URL": "https://tfs.example/"},
     "https://tfs.example/v1/models/my%20model/labels/canary:predict"),
])
def test_rest_routes(env, url, metadata_file):
    backend = create_backend(Settings.from_env({"BACKEND": "tfserving-rest",
                                                "MODEL_METADATA": str(metadata_file), **env}))
    assert isinstance(backend, RestBackend)
    assert backend.predict_url == url
    assert backend.metadata_url == url.replace(":predict", "/metadata")


def test_grpc_backend_is_made_without_touching_the_network(metadata_file):
    backend = create_backend(Settings.from_env({
        "BACKEND": "tfserving-grpc", "MODEL_METADATA": str(metadata_file),
        "TFSERVING_URL": "grpc://127.0.0.1:1", "MODEL_VERSION_LABEL": "stable"}))
    assert isinstance(backend, GrpcBackend)
    assert backend.address == "127.0.0.1:1"
    assert backend.target == Target("digits", None, "stable", "serving_default")
    assert channel_target("grpcs://tfs:443") == ("tfs:443", True)
    assert channel_target("tfs:8500") == ("tfs:8500", False)
    backend.close()


def test_metadata_from_a_file_or_a_model_directory(metadata_file, tmp_path):
    assert load_metadata(Settings(model_metadata=str(metadata_file))).name == "digits"
    model = tmp_path / "model" / "assets.extra"
    model.mkdir(parents=True)
    (model / "model_metadata.json").write_text(json.dumps(METADATA))
    assert load_metadata(Settings(model_uri=str(tmp_path / "model"))).name == "digits"
    with pytest.raises(ModelNotReady, match="cannot read the model's metadata at"):
        load_metadata(Settings(model_uri=str(tmp_path / "nowhere")))


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(retries=5, base_delay=0.05, max_delay=0.2)
    delays = [policy.delay(n) for n in range(5)]
    assert 0.025 <= delays[0] <= 0.05 and 0.05 <= delays[1] <= 0.1
    assert all(d <= 0.2 for d in delays) and delays[4] >= 0.1
