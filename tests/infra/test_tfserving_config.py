"""infra/tfserving/: the files real TF Serving reads parse as TF Serving parses them.

No container engine here, so the compose and Kubernetes files cannot run; what can be
checked is that every config file parses with TF Serving's messages, that every flag
given to tensorflow_model_server is one of its flags with a file that exists, and that
the local model server accepts the same command line.
"""

from __future__ import annotations

import re
import shlex

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from infra.modelserver.__main__ import parser
from infra.modelserver.metrics import prometheus_path
from infra.modelserver.repository import parse_model_config
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # tensorflow-serving-api's protos import TensorFlow

TFSERVING = ROOT / "infra" / "tfserving"
SERVER_FLAGS = {
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads",
    "rest_api_timeout_in_ms", "rest_api_enable_cors_support", "enable_batching",
    "batching_parameters_file", "model_config_file", "model_config_file_poll_wait_seconds",
    "model_name", "model_base_path", "num_load_threads", "num_unload_threads",
    "max_num_load_retries", "load_retry_interval_micros", "file_system_poll_wait_seconds",
    "flush_filesystem_caches", "tensorflow_session_parallelism",
    "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
    "use_alts_credentials", "platform_config_file", "saved_model_tags",
    "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup",
    "num_request_iterations_for_warmup", "version", "monitoring_config_file",
    "enable_serialization_as_tensor_content", "allow_version_labels_for_unavailable_models",
}
"""tensorflow_model_server's flags (tensorflow_serving/model_servers/main.cc)."""


def test_models_config_parses_with_tf_servings_protos():
    config = text_format.Parse((TFSERVING / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == \
        ("digits", "/models/digits", "tensorflow")
    served = set(model.model_version_policy.specific.versions)
    assert served == {1, 2}
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}
    assert set(model.version_labels.values()) <= served  # else TF Serving refuses the config
    (entry,) = parse_model_config((TFSERVING / "models.config").read_text())
    assert (entry.policy, entry.versions) == ("specific", (1, 2))


def _batching_parameters_class():
    """tensorflow_serving/servables/tensorflow/session_bundle_config.proto's
    BatchingParameters (not shipped by tensorflow-serving-api), field for field."""
    fdp = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="batching_parameters_test.proto", package="test.batching", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    for name, number, wrapper in (("max_batch_size", 1, "Int64Value"),
                                  ("batch_timeout_micros", 2, "Int64Value"),
                                  ("max_enqueued_batches", 3, "Int64Value"),
                                  ("num_batch_threads", 4, "Int64Value"),
                                  ("thread_pool_name", 5, "StringValue"),
                                  ("enable_large_batch_splitting", 8, "BoolValue"),
                                  ("max_execution_batch_size", 9, "Int64Value")):
        message.field.add(name=name, number=number, type=fdp.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{wrapper}", label=fdp.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=fdp.TYPE_INT64,
                      label=fdp.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=fdp.TYPE_BOOL,
                      label=fdp.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import wrappers_pb2

    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("test.batching.BatchingParameters"))


def test_batching_parameters_parse_and_are_consistent():
    params = text_format.Parse((TFSERVING / "batching_parameters.txt").read_text(),
                               _batching_parameters_class()())
    assert params.max_batch_size.value == 16
    sizes = list(params.allowed_batch_sizes)
    # TF Serving requires increasing sizes ending at max_batch_size.
    assert sizes == sorted(set(sizes)) and sizes[-1] == params.max_batch_size.value
    assert params.batch_timeout_micros.value > 0 and params.num_batch_threads.value >= 1


def test_monitoring_config_enables_prometheus():
    assert prometheus_path((TFSERVING / "monitoring.config").read_text()) == \
        "/monitoring/prometheus/metrics"


def _server_flags(text: str) -> list[str]:
    return re.findall(r"(--[a-z_]+=\S+)", text)


SERVER_STARTS = ["compose.cpu.yaml", "k8s/tfserving/deployment.yaml"]
"""Every file that starts tensorflow_model_server (compose.gpu.yaml only swaps the image)."""


def test_every_file_that_starts_tf_serving_is_listed():
    starts = sorted(str(p.relative_to(TFSERVING)) for p in TFSERVING.rglob("*.yaml")
                    if "--model_config_file=" in p.read_text())
    assert starts == sorted(SERVER_STARTS)


@pytest.mark.parametrize("name", SERVER_STARTS)
def test_deployment_flags_are_tf_serving_flags_with_files_that_exist(name):
    text = (TFSERVING / name).read_text()
    flags = _server_flags(text)
    assert {"--port=8500", "--rest_api_port=8501", "--enable_batching=true",
            "--enable_model_warmup=true"} <= set(flags)
    if name.startswith("k8s/"):  # the files reach the pods through the ConfigMap beside it
        text += (TFSERVING / name).with_name("configmap.yaml").read_text()
    mounted = {"/config/models.config": TFSERVING / "models.config",
               "/config/batching_parameters.txt": TFSERVING / "batching_parameters.txt",
               "/config/monitoring.config": TFSERVING / "monitoring.config"}
    for flag in flags:
        key, value = flag[2:].split("=", 1)
        assert key in SERVER_FLAGS, flag
        if value.startswith("/config/"):
            assert mounted[value].is_file(), flag
            assert mounted[value].name in text  # mounted (compose) or put in the ConfigMap
    # The local stand-in takes the same command line.
    parser().parse_args(shlex.split(" ".join(flags)))


def test_compose_publishes_tf_servings_ports_and_gpu_image():
    cpu = (TFSERVING / "compose.cpu.yaml").read_text()
    gpu = (TFSERVING / "compose.gpu.yaml").read_text()
    assert '"8500:8500"' in cpu and '"8501:8501"' in cpu
    assert "image: tensorflow/serving:2.21.0-gpu" in gpu
    assert "capabilities: [gpu]" in gpu and "BACKEND: inprocess" in gpu


@pytest.mark.parametrize("name", SERVER_STARTS)
def test_labelled_models_config_is_started_with_the_flag_tf_serving_needs(name):
    """TF Serving assigns the version labels of the config it starts with before loading any
    version, so without the flag it refuses models.config ("Request to assign label to
    version 1 of model digits, which is not currently available for inference")."""
    config = text_format.Parse((TFSERVING / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    assert any(model.version_labels for model in config.model_config_list.config)
    flags = _server_flags((TFSERVING / name).read_text())
    assert "--allow_version_labels_for_unavailable_models=true" in flags
    args = parser().parse_args(shlex.split(" ".join(flags)))
    assert args.allow_version_labels_for_unavailable_models is True


def test_images_serve_the_tensorflow_that_prepares_the_models():
    """Every TF Serving and TensorFlow image (compose, Kubernetes, the GPU function's
    Dockerfile, KServe's runtimeVersion)
    is the release of the pinned tensorflow-cpu, which is also tensorflow-serving-api's."""
    lock = (ROOT / "requirements.lock").read_text()
    (tensorflow,) = re.findall(r"^tensorflow[-_]cpu==(\S+)$", lock, re.M)
    (serving_api,) = re.findall(r"tensorflow-serving-api==(\S+)", (ROOT / "Makefile").read_text())
    assert serving_api == tensorflow
    tags = []
    for path in sorted([*TFSERVING.rglob("*.yaml"), *TFSERVING.glob("Dockerfile*")]):
        text = path.read_text()
        tags += re.findall(r"(?:image:|FROM) tensorflow/(?:serving|tensorflow):(\d+\.\d+\.\d+)",
                           text)
        tags += re.findall(r'runtimeVersion: "(\S+)"', text)
    assert len(tags) == 5 and set(tags) == {tensorflow}, tags
