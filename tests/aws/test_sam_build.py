"""`sam build` of the zip functions, then their built artifacts invoked as Lambda runs them.

`sam build` is the real one (.venv-tools): for a zip function it needs no Docker, only the
runtime's Python (python3.12) on PATH, with which it pip-installs the function's
requirements.txt into the artifact beside the code. Each artifact is then run under the
real Lambda Runtime Interface Emulator (the aws-sam-cli wheel's) by that Python, through
`awslambdaric`, with nothing on its path but the artifact and the runtime client: what
`sam local invoke` runs inside its container, without the container. The environment is
the one `sam local invoke --env-vars events/env/local.json` gives (the template's
variables, the env file's values for those it names), the model copied into the artifact
where that file's relative MODEL_URI points, and the request a recorded event.

One pip cache (build/pip-cache) serves every build of a run, and later runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.check_template import condition_value, load_template
from tests.aws.rie import INVOKE_PATH, find_emulator, find_sam
from tests.conftest import ROOT, free_port
from tests.deploy.dockerfile_rehearsal import find_python
from tests.processes import stop, wait_listening

EVENTS = ROOT / "events"
ENV_FILE = EVENTS / "env" / "local.json"
PIP_CACHE = ROOT / "build" / "pip-cache"
PARAMETERS = {"ModelBucket": "models", "TfServingUrl": "http://tfserving:8501",
              "LiteRTFlavour": "float"}
SAM_ENV = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "PIP_CACHE_DIR": str(PIP_CACHE)}


PYTHON = find_python("3.12")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_sam() is None, reason=(
        "sam is missing: `make tools` installs aws-sam-cli (requirements-tools.lock) into "
        ".venv-tools")),
    pytest.mark.skipif(PYTHON is None, reason=(
        "python3.12 is missing: `sam build` builds the zip functions (Runtime: python3.12) "
        "with python3.12 from PATH; install it (e.g. pyenv install 3.12)")),
    pytest.mark.skipif(find_emulator() is None, reason=(
        "the Lambda Runtime Interface Emulator is missing: install aws-sam-cli "
        "(requirements-tools.lock) into .venv-tools, or set AWS_LAMBDA_RIE")),
]


def sam_build(function: str, build_dir: Path) -> Path:
    """``sam build FUNCTION`` into ``build_dir``; the artifact's folder."""
    env = {**os.environ, **SAM_ENV, "PATH": f"{PYTHON.parent}{os.pathsep}{os.environ['PATH']}"}
    overrides = " ".join(f"{k}={v}" for k, v in PARAMETERS.items())
    result = subprocess.run(
        [find_sam(), "build", function, "--template", str(ROOT / "template.yaml"),
         "--build-dir", str(build_dir), "--parameter-overrides", overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Build Succeeded" in result.stdout + result.stderr
    return build_dir / function


def local_environment(template: dict[str, Any], function: str,
                      overrides: dict[str, dict[str, str]]) -> dict[str, str]:
    """The variables ``sam local invoke --env-vars`` gives ``function``: the template's own
    (Globals, then the function's), resolved for PARAMETERS, then the env file's values,
    the function's section over "Parameters", for variables the template declares (SAM
    ignores the others)."""
    params = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    params.update(PARAMETERS)
    conditions = template.get("Conditions") or {}

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            ((key, arg),) = value.items()
            if key == "Ref":
                return params.get(arg, arg)
            if key == "Fn::Sub":
                text = arg
                for name, param in params.items():
                    text = text.replace("${" + name + "}", str(param))
                return text
            if key == "Fn::If":
                return resolve(arg[1] if condition_value(conditions, arg[0], params) else arg[2])
        return value

    declared = {**((template["Globals"]["Function"].get("Environment") or {})["Variables"]),
                **template["Resources"][function]["Properties"]["Environment"]["Variables"]}
    resolved = {name: resolve(value) for name, value in declared.items()}
    environment = {name: str(value) for name, value in resolved.items()
                   if value != "AWS::NoValue"}
    for section in ("Parameters", function):
        for name, value in overrides.get(section, {}).items():
            if name in environment:
                environment[name] = value
    return environment


class Runtime:
    """A built artifact run by the emulator under python3.12, as Lambda runs it."""

    def __init__(self, artifact: Path, client: Path, handler: str, env: dict[str, str],
                 log: Path) -> None:
        port, api_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}{INVOKE_PATH}"
        self.log = log
        full_env = {"PATH": os.environ["PATH"], "HOME": str(artifact), "LANG": "C.UTF-8",
                    "PYTHONPATH": f"{artifact}{os.pathsep}{client}", "PYTHONNOUSERSITE": "1",
                    "LAMBDA_TASK_ROOT": str(artifact), "AWS_LAMBDA_FUNCTION_NAME": "built",
                    "AWS_LAMBDA_FUNCTION_TIMEOUT": "120", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", **env}
        self.process = subprocess.Popen(
            [str(find_emulator()), "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
             "--runtime-api-address", f"127.0.0.1:{api_port}", "--log-level", "info",
             str(PYTHON), "-m", "awslambdaric", handler],
            cwd=artifact, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        wait_listening(self.process, port, log, "the Lambda Runtime Interface Emulator")

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.url, data=json.dumps(event), timeout=180)
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> None:
        stop(self.process)


@pytest.fixture(scope="module")
def runtime_client(tmp_path_factory) -> Path:
    """awslambdaric (Lambda's Python runtime client) for python3.12: the runtime brings
    it on Lambda; the artifact does not."""
    target = tmp_path_factory.mktemp("runtime-client")
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line.lower().startswith(
        ("awslambdaric==", "simplejson==", "snapshot-restore-py=="))]
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--target", str(target), *pins],
                   env={**os.environ, "PIP_CACHE_DIR": str(PIP_CACHE)}, check=True, timeout=600,
                   capture_output=True)
    return target


@pytest.fixture(scope="module")
def env_file() -> dict[str, dict[str, str]]:
    return json.loads(ENV_FILE.read_text())


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def answer(result: dict[str, Any]) -> dict[str, Any]:
    assert result["statusCode"] == 200, result
    return json.loads(result["body"])


def test_the_env_file_names_only_variables_the_template_declares(env_file):
    """SAM applies an env file's value only to a variable the template declares; any other
    name would be silently ignored."""
    template = load_template(ROOT / "template.yaml")
    globals_ = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for section, values in env_file.items():
        if section == "Parameters":
            assert set(values) <= globals_
            continue
        own = set(template["Resources"][section]["Properties"]["Environment"]["Variables"])
        assert set(values) <= globals_ | own, section


def test_built_litert_function_answers_from_a_local_model(tmp_path, env_file, runtime_client,
                                                          demo_model):
    from modelprep.litert import LiteRTOptions, export_litert

    artifact = sam_build("LiteRTFunction", tmp_path / "build")
    assert not (artifact / "functions").is_symlink()  # copied, as the zip will hold it
    assert (artifact / "ai_edge_litert").is_dir() and not (artifact / "tensorflow").exists()
    template = load_template(tmp_path / "build" / "template.yaml")
    env = local_environment(template, "LiteRTFunction", env_file)
    assert (env["BACKEND"], env["MODEL_URI"], env["LITERT_FLAVOUR"]) == \
        ("litert", "model", "float")
    export_litert(demo_model.served, LiteRTOptions(out=artifact / env["MODEL_URI"],
                                                   flavours=("float",)))
    handler = template["Resources"]["LiteRTFunction"]["Properties"]["Handler"]
    runtime = Runtime(artifact, runtime_client, handler, env, tmp_path / "litert.log")
    try:
        expected = json.loads((EVENTS / "expected.json").read_text())
        for name in ("httpapi-json", "httpapi-jpeg", "function-url-png"):
            (prediction,) = answer(runtime.invoke(event(name)))["predictions"]
            assert prediction["class_id"] == expected[name]["class_id"], name
    finally:
        runtime.stop()


def test_built_adapter_function_answers_through_tf_serving(tmp_path, env_file, runtime_client,
                                                           demo_model, local_model_server):
    artifact = sam_build("AdapterFunction", tmp_path / "build")
    assert (artifact / "requests").is_dir() and not (artifact / "tensorflow").exists()
    template = load_template(tmp_path / "build" / "template.yaml")
    env = local_environment(template, "AdapterFunction", env_file)
    assert (env["BACKEND"], env["MODEL_URI"]) == ("tfserving-rest", "model")
    # host.docker.internal is the machine running sam local's container; the function runs
    # on this machine here, so it calls the local model server directly.
    assert env["TFSERVING_URL"] == "http://host.docker.internal:8501"
    env["TFSERVING_URL"] = local_model_server.rest_url
    shutil.copytree(demo_model.served / "assets.extra", artifact / "model" / "assets.extra")
    handler = template["Resources"]["AdapterFunction"]["Properties"]["Handler"]
    runtime = Runtime(artifact, runtime_client, handler, env, tmp_path / "adapter.log")
    try:
        expected = json.loads((EVENTS / "expected.json").read_text())
        for name in ("httpapi-json", "apigw-rest-png"):
            (prediction,) = answer(runtime.invoke(event(name)))["predictions"]
            assert prediction["class_id"] == expected[name]["class_id"], name
    finally:
        runtime.stop()
