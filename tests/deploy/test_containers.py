"""Every Dockerfile rehearsed without a container engine (tests/deploy/dockerfile_rehearsal.py):
its pip lines into a fresh virtualenv of the image's Python, its COPY steps laid out, its ENV
set, its command run, images POSTed, answers checked.

- ``Dockerfile``: the Lambda image (Python 3.12), run as its base image runs it: the Lambda
  Runtime Interface Emulator over awslambdaric, the model fetched from S3 (moto's server on
  loopback) as template.yaml's MODEL_URI says, recorded gateway events invoked.
- ``infra/tfserving/Dockerfile.function``: the thin function (Python 3.13), with the
  environment compose.cpu.yaml gives its `function` service, calling the local TF Serving
  stand-in over gRPC where compose calls `tfserving:8500`.
- ``infra/tfserving/Dockerfile.function-gpu``: compose.gpu.yaml's `function-gpu` service
  (Python 3.11, the image's TensorFlow stood in for by tensorflow-cpu of the same release, no
  GPU here), the model mounted at /model as compose mounts it.
- ``deploy/scf/image/Dockerfile``: the Tencent SCF image function (Python 3.12), on the port
  SCF sends HTTP to (9000), the model mounted where MODEL_URI points.

Each image must start from what it installed: no source is left where the process starts,
and the package comes from the virtualenv's site-packages.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.aws.conftest import moto_endpoint  # noqa: F401  (the S3 server fixture)
from tests.aws.rie import INVOKE_PATH, find_emulator
from tests.aws.s3util import aws_env, upload_dir
from tests.conftest import ROOT, encode
from tests.deploy.dockerfile_rehearsal import Image, build, find_python, python_of

pytestmark = pytest.mark.slow

PIP_CACHE = ROOT / "build" / "pip-cache"
LAMBDA = ROOT / "Dockerfile"
THIN = ROOT / "infra" / "tfserving" / "Dockerfile.function"
GPU = ROOT / "infra" / "tfserving" / "Dockerfile.function-gpu"
SCF_IMAGE = ROOT / "deploy" / "scf" / "image" / "Dockerfile"
REHEARSED = (LAMBDA, THIN, GPU, SCF_IMAGE)
EVENTS = ROOT / "events"
EXPECTED = json.loads((EVENTS / "expected.json").read_text())


def dockerfiles() -> list[Path]:
    return sorted(p for p in ROOT.rglob("Dockerfile*")
                  if not p.relative_to(ROOT).parts[0].startswith((".", "build")))


def test_every_dockerfile_is_rehearsed():
    """A new Dockerfile needs a rehearsal: here, or in a test module that uses the harness
    and names the Dockerfile's folder."""
    users = [p.read_text() for p in (ROOT / "tests").rglob("test_*.py")
             if p.name != Path(__file__).name and "dockerfile_rehearsal" in p.read_text()]
    missing = [str(p.relative_to(ROOT)) for p in dockerfiles() if p not in REHEARSED
               and not any(f'"{p.parent.name}"' in text for text in users)]
    assert missing == []


def image_for(dockerfile: Path, tmp_path_factory) -> Image:
    version = python_of(dockerfile)
    python = find_python(version)
    if python is None:
        pytest.skip(f"python{version} is missing: {dockerfile.relative_to(ROOT)} runs Python "
                    f"{version}; install it (e.g. pyenv install {version}) to rehearse it")
    return build(dockerfile, tmp_path_factory.mktemp(dockerfile.name), python=python,
                 pip_cache=PIP_CACHE)


def assert_installed_not_copied(image: Image, workdir_files: set[str]) -> None:
    site = next((image.venv / "lib").glob("python3.*/site-packages"))
    assert (site / "functions" / "main.py").is_file(), "the project is installed"
    assert not image.host("/tmp/src").exists(), "the sources are removed after install"
    assert {p.name for p in image.host(image.workdir).iterdir()} == workdir_files


def digit_requests(digits, labels=(0, 4, 9)):
    for label in labels:
        index = int(np.flatnonzero(digits.y_test == label)[0])
        yield label, encode(digits.x_test[index])


# -- the Lambda image ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lambda_image(tmp_path_factory) -> Image:
    if find_emulator() is None:
        pytest.skip("the Lambda Runtime Interface Emulator is missing: `make tools` installs "
                    "aws-sam-cli (requirements-tools.lock) into .venv-tools")
    return image_for(LAMBDA, tmp_path_factory)


def test_lambda_image_answers_recorded_events_with_the_model_from_s3(
        lambda_image, moto_endpoint, demo_model, tmp_path):  # noqa: F811
    import boto3

    assert_installed_not_copied(lambda_image, set())  # /var/task: nothing
    assert lambda_image.command() == ["functions.platforms.aws.lambda_handler"]
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"image-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    upload_dir(client, demo_model.served, bucket, "models/digits/1")
    container = lambda_image.start({
        **aws_env(moto_endpoint), "MODEL_URI": f"s3://{bucket}/models/digits/1/",
        "AWS_LAMBDA_FUNCTION_NAME": "predict", "AWS_LAMBDA_FUNCTION_TIMEOUT": "120",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}, log=tmp_path / "lambda.log")
    try:
        for name in ("httpapi-jpeg", "apigw-rest-png", "function-url-png"):
            event = json.loads((EVENTS / f"{name}.json").read_text())
            response = container.post(INVOKE_PATH, data=json.dumps(event), timeout=300)
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["statusCode"] == EXPECTED[name]["status"], result
            body = json.loads(result["body"])
            assert body["predictions"][0]["class_id"] == EXPECTED[name]["class_id"], name
    finally:
        container.stop()


# -- the thin function (compose.cpu.yaml's `function`) --------------------------------------


def compose_environment(compose: Path, service: str) -> dict[str, str]:
    spec = yaml.safe_load(compose.read_text())["services"][service]
    return {k: str(v) for k, v in (spec.get("environment") or {}).items()}


def test_compose_services_build_the_rehearsed_dockerfiles():
    tfserving = ROOT / "infra" / "tfserving"
    cpu = yaml.safe_load((tfserving / "compose.cpu.yaml").read_text())["services"]
    gpu = yaml.safe_load((tfserving / "compose.gpu.yaml").read_text())["services"]
    for spec, dockerfile in ((cpu["function"], THIN), (gpu["function-gpu"], GPU)):
        build_spec = spec["build"]
        assert (tfserving / build_spec["context"]).resolve() == ROOT
        assert ROOT / build_spec["dockerfile"] == dockerfile
        assert "command" not in spec and "image" not in spec and "working_dir" not in spec


@pytest.fixture(scope="module")
def thin_image(demo_model, tmp_path_factory) -> Image:
    """Built after the demo model: the image copies its metadata from build/."""
    return image_for(THIN, tmp_path_factory)


def test_thin_image_answers_through_tf_serving_grpc(thin_image, local_model_server, digits,
                                                    tmp_path):
    assert_installed_not_copied(thin_image, {"main.py", "model_metadata.json"})
    assert "tensorflow" not in " ".join(thin_image.installed())
    env = compose_environment(ROOT / "infra" / "tfserving" / "compose.cpu.yaml", "function")
    assert env["TFSERVING_URL"] == "tfserving:8500"
    env["TFSERVING_URL"] = local_model_server.grpc_target  # the `tfserving` service, here
    container = thin_image.start(env, log=tmp_path / "thin.log")
    try:
        container.wait_ready()
        for label, png in digit_requests(digits):
            response = container.post(files={"file": ("d.png", png, "image/png")})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["predictions"][0]["class_id"] == label
            assert body["model"]["name"] == "digits"
    finally:
        container.stop()


# -- the in-process GPU function (compose.gpu.yaml's `function-gpu`) ------------------------


@pytest.fixture(scope="module")
def gpu_image(tmp_path_factory) -> Image:
    return image_for(GPU, tmp_path_factory)


def test_gpu_image_answers_with_the_mounted_model(gpu_image, demo_model, digits, tmp_path):
    assert_installed_not_copied(gpu_image, {"main.py"})
    compose = yaml.safe_load((ROOT / "infra/tfserving/compose.gpu.yaml").read_text())
    (volume,) = compose["services"]["function-gpu"]["volumes"]
    assert volume == "./models/digits/1:/model:ro"
    env = compose_environment(ROOT / "infra" / "tfserving" / "compose.gpu.yaml", "function-gpu")
    container = gpu_image.start(env, volumes={"/model": demo_model.served},
                                log=tmp_path / "gpu.log")
    try:
        container.wait_ready()
        for label, png in digit_requests(digits):
            response = container.post(files={"file": ("d.png", png, "image/png")})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["class_id"] == label
    finally:
        container.stop()


# -- the Tencent SCF image function ---------------------------------------------------------


@pytest.fixture(scope="module")
def scf_image(tmp_path_factory) -> Image:
    return image_for(SCF_IMAGE, tmp_path_factory)


def test_scf_image_answers_on_the_port_scf_calls(scf_image, demo_model, digits, tmp_path):
    assert scf_image.exposed == [9000]
    site = next((scf_image.venv / "lib").glob("python3.*/site-packages"))
    assert (site / "functions" / "main.py").is_file(), "the project is installed"
    container = scf_image.start({"MODEL_URI": "/opt/model"},
                                volumes={"/opt/model": demo_model.served},
                                log=tmp_path / "scf.log")
    try:
        container.wait_ready()
        for label, png in digit_requests(digits):
            response = container.post(files={"file": ("d.png", png, "image/png")})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["class_id"] == label
    finally:
        container.stop()
