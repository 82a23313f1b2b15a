"""deploy/scf/: the code packages SCF runs, rehearsed here, and their serverless.yml files.

SCF's runtime cannot run here, so each package is run the way SCF runs it:

- Web function: `deploy/scf/package.py web litert` builds the package (the code, the LiteRT
  model, Python 3.10 wheels for Linux x86-64 unpacked beside it); its ``scf_bootstrap`` is
  executed from the package folder (SCF's /var/user) with the variables SCF sets and the
  function's own from serverless.yml, and real digits are POSTed to port 9000. Two things
  differ from SCF, through the variables the bootstrap reads for this: the interpreter is
  this machine's CPython 3.10 (``SCF_PYTHON``; SCF's is /var/lang/python310/bin/python3.10),
  and the server listens on 127.0.0.1 (``HOST``; SCF wants 0.0.0.0), since servers here stay
  on loopback.
- Event function: the event package's ``index.main_handler`` is imported by CPython 3.10 in
  the package folder, with nothing else on its path, and called with the recorded API
  Gateway events of events/ (SCF's documented trigger format), as SCF's Python runtime calls
  it.

The serverless.yml files are checked against a JSON schema written from the scf component's
documentation (tests/scf/fixtures/scf-component.schema.json says which, and what it adds).
"""

from __future__ import annotations

import base64
import glob
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

from tests.conftest import ROOT, encode

SCF = ROOT / "deploy" / "scf"
EVENTS = ROOT / "events"
SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "scf-component.schema.json")
                    .read_text())
SCF_ENVIRONMENT = {
    # SCF's documented built-in variables, as an instance of this function would see them.
    "SCF_RUNTIME": "Python3.10", "SCF_FUNCTIONNAME": "tf-image-predict-web",
    "SCF_FUNCTIONVERSION": "$LATEST", "SCF_NAMESPACE": "default", "SCF_MEMORY_SIZE": "1024",
    "SCF_TIMEOUT": "30", "TENCENTCLOUD_REGION": "ap-guangzhou",
    "TENCENTCLOUD_APPID": "1250000000", "TENCENTCLOUD_UIN": "100000000001",
    "TENCENTCLOUD_RUNENV": "SCF", "USER_CODE_ROOT": "/var/user",
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
}
PORT = 9000


def python310() -> str:
    """CPython 3.10, SCF's newest standard Python, or skip saying why (pyenv's shim refuses
    to run a version that is not selected, so each candidate is tried)."""
    root = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
    candidates = [*sorted(glob.glob(f"{root}/versions/3.10.*/bin/python3.10"), reverse=True),
                  shutil.which("python3.10")]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return candidate
    pytest.skip("no python3.10 that runs, on PATH or under pyenv: the SCF packages are for "
                "SCF's Python 3.10 runtime")


def serverless(variant: str) -> dict:
    return yaml.safe_load((SCF / variant / "serverless.yml").read_text())


def function_environment(variant: str, package: Path) -> dict[str, str]:
    """The function's variables from serverless.yml, /var/user being the package folder."""
    variables = serverless(variant)["inputs"]["environment"]["variables"]
    return {key: str(value).replace("/var/user", str(package)) for key, value in
            variables.items()}


@pytest.fixture(scope="module")
def litert_model(demo_model, tmp_path_factory) -> Path:
    from modelprep.litert import LiteRTOptions, export_litert

    out = tmp_path_factory.mktemp("scf-model")
    export_litert(demo_model.served, LiteRTOptions(out=out, flavours=("float",)))
    return out


def build(variant: str, model: Path, out: Path) -> tuple[Path, subprocess.CompletedProcess]:
    result = subprocess.run(
        [sys.executable, str(SCF / "package.py"), variant, "litert", "--model", str(model),
         "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


@pytest.fixture(scope="module")
def web_package(litert_model, tmp_path_factory):
    return build("web", litert_model, tmp_path_factory.mktemp("scf") / "web")


@pytest.fixture(scope="module")
def event_package(litert_model, tmp_path_factory):
    return build("event", litert_model, tmp_path_factory.mktemp("scf") / "event")


def digit_files(digits) -> list[tuple[int, bytes]]:
    picked = []
    for label in (0, 3, 7):
        index = int((digits.y_test == label).argmax())
        picked.append((label, encode(digits.x_test[index])))
    return picked


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the Web function ----------------------------------------------------------------------


@pytest.mark.slow
def test_web_function_runs_scf_bootstrap_on_port_9000_and_answers(web_package, digits,
                                                                  tmp_path):
    package, built = web_package
    if not port_free(PORT):
        pytest.fail(f"port {PORT} is taken: the Web function rehearsal needs SCF's port")
    env = {**SCF_ENVIRONMENT, **function_environment("web", package),
           "SCF_PYTHON": python310(), "HOST": "127.0.0.1",
           "MODEL_CACHE_DIR": str(tmp_path / "models"), "LOG_FORMAT": "text"}
    log = tmp_path / "scf_bootstrap.log"
    process = subprocess.Popen(["./scf_bootstrap"], cwd=package, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert health.json() == {"status": "ready", "model": {"name": "digits",
                                                              "version": None}}
        for label, png in digit_files(digits):
            as_json = requests.post(f"{base}/predict", timeout=30, json={
                "image": base64.b64encode(png).decode(), "top_k": 3})
            upload = requests.post(f"{base}/", timeout=30, files={"file": ("tmp.png", png)})
            raw = requests.post(f"{base}/predict", timeout=30, data=png,
                                headers={"Content-Type": "image/png"})
            for answer in (as_json, upload, raw):
                assert answer.status_code == 200, answer.text
                assert answer.json()["predictions"][0]["class_id"] == label
            assert len(as_json.json()["predictions"][0]["top_k"]) == 3
        bad = requests.post(f"{base}/predict", timeout=30, json={"image": "bm90IGFuIGltYWdl"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_image"
        # gunicorn, not Flask's development server: the bootstrap's process (exec'd into
        # functions-framework) is a master with a forked worker serving the requests.
        assert len(children(process.pid)) == 1, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "LiteRT float model" in log.read_text()


@pytest.mark.slow
def test_web_package_fits_scf_and_holds_what_scf_needs(web_package):
    package, built = web_package
    assert "SCF's limit is 500 MiB" in built.stdout and "TOO LARGE" not in built.stderr
    bootstrap = package / "scf_bootstrap"
    assert os.access(bootstrap, os.X_OK)
    assert (package / "functions_framework").is_dir() and (package / "ai_edge_litert").is_dir()
    assert not (package / "tensorflow").exists()
    assert (package / "model" / "model_float.tflite").is_file()
    with __import__("zipfile").ZipFile(package.with_suffix(".zip")) as archive:
        mode = archive.getinfo("scf_bootstrap").external_attr >> 16
    assert mode & 0o755 == 0o755  # SCF wants 755 or 777 inside the zip, too


def test_scf_bootstrap_is_what_scf_requires():
    raw = (SCF / "web" / "scf_bootstrap").read_bytes()
    assert raw.startswith(b"#!/bin/bash\n") and b"\r\n" not in raw and raw.endswith(b"\n")
    assert os.stat(SCF / "web" / "scf_bootstrap").st_mode & 0o755 == 0o755
    text = raw.decode()
    assert "${SCF_PYTHON:-/var/lang/python310/bin/python3.10}" in text
    assert '--host "${HOST:-0.0.0.0}" --port 9000' in text
    assert "--target predict --source main.py" in text


# -- the event function --------------------------------------------------------------------

DRIVER = """
import json, sys
sys.path[:] = [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p]
sys.path.insert(0, ".")
import index
out = {}
for name in sys.argv[1:]:
    with open(name) as f:
        event = json.load(f)
    result = index.main_handler(event, {"request_id": "scf-rehearsal-1",
                                        "function_name": "tf-image-predict-event"})
    out[name] = result
print(json.dumps(out))
"""


@pytest.mark.slow
def test_event_function_answers_recorded_gateway_events(event_package, tmp_path):
    package, built = event_package
    assert not (package / "functions_framework").exists()  # the event package has no server
    names = ["scf-apigw-json", "scf-apigw-multipart-jpeg", "scf-url-png"]
    env = {**SCF_ENVIRONMENT, **function_environment("event", package),
           "MODEL_CACHE_DIR": str(tmp_path / "models"), "LOG_FORMAT": "text"}
    result = subprocess.run(
        [python310(), "-I", "-c", DRIVER, *[str(EVENTS / f"{name}.json") for name in names]],
        cwd=package, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    expected = json.loads((EVENTS / "expected.json").read_text())
    for name in names:
        answer = answers[str(EVENTS / f"{name}.json")]
        assert list(answer) == ["isBase64Encoded", "statusCode", "headers", "body"]
        assert answer["statusCode"] == 200, answer["body"]
        body = json.loads(answer["body"])
        assert body["predictions"][0]["class_id"] == expected[name]["class_id"], name
        assert answer["headers"]["X-Request-Id"] == "scf-rehearsal-1"


# -- the size check ------------------------------------------------------------------------


def test_size_check_fails_loudly_over_500_mb(tmp_path):
    big = tmp_path / "package"
    big.mkdir()
    with open(big / "weights.bin", "wb") as f:  # sparse: 501 MiB counted, nothing written
        f.truncate(501 * 1024 * 1024)
    (big / "index.py").write_text("def main_handler(event, context):\n    return {}\n")
    result = subprocess.run([sys.executable, str(SCF / "package.py"), "--check", str(big)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("TOO LARGE FOR AN SCF CODE PACKAGE: 501.0 MiB is over "
                                    "SCF's 500 MiB limit by 1.0 MiB.")


@pytest.mark.slow
def test_tensorflow_alone_is_over_the_limit():
    """The in-process flavour cannot be a code package: measured on the installed wheel."""
    import tensorflow

    installed = Path(tensorflow.__file__).parent
    result = subprocess.run([sys.executable, str(SCF / "package.py"), "--check",
                             str(installed)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout
    assert "TOO LARGE FOR AN SCF CODE PACKAGE" in result.stderr
    print(result.stdout.strip())


# -- serverless.yml ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["web", "event", "image"])
def test_serverless_yml_validates_against_the_component_inputs(variant):
    jsonschema.validate(serverless(variant), SCHEMA)


def test_the_schema_catches_mistakes_a_deploy_would_hit():
    doc = serverless("web")
    for change, key in ((("runtime", "Python3.12"), "runtime"),
                        (("memorySize", 1000), "memorySize"),
                        (("handler", "index.main_handler"), "handler"),
                        (("timeOut", 30), "timeOut")):
        broken = json.loads(json.dumps(doc))
        broken["inputs"][change[0]] = change[1]
        errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(broken))
        assert errors, key


def test_the_variants_say_what_scf_needs():
    web, event, image = serverless("web"), serverless("event"), serverless("image")
    assert (web["inputs"]["type"], web["inputs"]["runtime"]) == ("web", "Python3.10")
    assert event["inputs"]["handler"] == "index.main_handler"
    endpoint = event["inputs"]["events"][0]["apigw"]["parameters"]["endpoints"][0]
    assert endpoint["isBase64Encoded"] is True  # images arrive intact
    assert endpoint["function"]["isIntegratedResponse"] is True  # the answer's shape
    assert image["inputs"]["image"]["imageUrl"] == "${env:IMAGE_URL}"
    assert "runtime" not in image["inputs"]
    for doc in (web, event):
        assert doc["inputs"]["src"]["src"].startswith("../../../build/scf/")
    assert (SCF / "event" / "index.py").read_text().count(
        "from functions.platforms.scf import main_handler") == 1


def test_image_dockerfile_installs_the_project_and_serves_on_9000():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO((SCF / "image" / "Dockerfile").read_bytes()))
    runs = [i["value"] for i in parser.structure if i["instruction"] == "RUN"]
    assert runs == ['pip install --no-cache-dir -c requirements.lock ".[serve,inprocess,aws]"']
    cmd = json.loads(next(i["value"] for i in parser.structure if i["instruction"] == "CMD"))
    assert cmd[-4:] == ["--host", "0.0.0.0", "--port", "9000"]
