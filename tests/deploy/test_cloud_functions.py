"""Cloud Functions / Cloud Run from source, rehearsed as the platform does it, per Python.

    gcloud functions deploy predict --gen2 --runtime python3XX --trigger-http --source .

1. The committed tree alone (``git archive HEAD``), with the demo model where `make demo`
   leaves it in a checkout.
2. What gcloud uploads from it: the files .gcloudignore lets through (tests/deploy/
   source_upload.py), copied into a fresh folder standing for the platform's /workspace.
3. What the buildpack does: a fresh virtualenv of that Python and ``pip install -r
   requirements.txt`` from the upload, nothing else (the project is not installed).
4. What the platform runs: exactly ``functions-framework --target predict`` in that folder,
   with PORT set as the platform sets it (and HOST=127.0.0.1, to stay on loopback).
5. Digits POSTed; the right classes back. Then the same with ``MODEL_URI=gs://...`` (the
   Cloud Storage emulator on loopback) under the newest Python present.

On the tree before main.py and requirements.txt were at the root this fails at step 3 (no
requirements.txt) and step 4 (functions-framework: no main.py).

One pip cache (build/pip-cache) serves every virtualenv of a run, and later runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import ROOT, encode, free_port
from tests.deploy.dockerfile_rehearsal import find_python, pip_install
from tests.deploy.source_upload import committed_tree, upload
from tests.gcp.emulator import client_for, gcs_env, start_emulator, upload_dir
from tests.processes import stop

pytestmark = pytest.mark.slow

PIP_CACHE = ROOT / "build" / "pip-cache"
PYTHONS = ("3.11", "3.12", "3.13")
"""Cloud Functions runtimes python311, python312, python313: requires-python's range."""
PRESENT = [v for v in PYTHONS if find_python(v) is not None]


@pytest.fixture(scope="session")
def workspace(demo_model, tmp_path_factory) -> Path:
    """What gcloud uploads from the committed tree (plus the demo model a checkout has)."""
    tree = committed_tree(ROOT, tmp_path_factory.mktemp("tree"))
    shutil.copytree(demo_model.served, tree / "build" / "models" / "digits" / "served")
    workspace = tmp_path_factory.mktemp("workspace")
    upload(tree, workspace)
    return workspace


class Runtimes(dict):
    """Python version -> a virtualenv built as the buildpack builds it, made on first use
    and shared by the rehearsals of that Python (same requirements.txt, same upload)."""

    def __init__(self, workspace: Path, base: Path) -> None:
        super().__init__()
        self.workspace, self.base = workspace, base

    def __missing__(self, version: str) -> Path:
        python = find_python(version)
        assert python is not None
        venv = self.base / f"venv-{version}"
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
        pip_install(venv / "bin" / "python", ["-r", "requirements.txt"], self.workspace,
                    PIP_CACHE)
        self[version] = venv
        return venv


@pytest.fixture(scope="session")
def runtimes(workspace, tmp_path_factory) -> Runtimes:
    return Runtimes(workspace, tmp_path_factory.mktemp("runtimes"))


@dataclass
class Function:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop(self.process)


def start_function(venv: Path, workspace: Path, log: Path,
                   env: dict[str, str] | None = None, timeout: float = 180) -> Function:
    """``functions-framework --target predict`` in `workspace`, as the platform runs it:
    its environment is the platform's variables and the deploy's ``--set-env-vars``."""
    port = free_port()
    full_env = {"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": str(workspace),
                "LANG": "C.UTF-8", "PORT": str(port), "HOST": "127.0.0.1",
                "K_SERVICE": "predict", "FUNCTION_TARGET": "predict",
                "FUNCTION_SIGNATURE_TYPE": "http", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    process = subprocess.Popen(["functions-framework", "--target", "predict"], cwd=workspace,
                               env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    function = Function(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"functions-framework exited with {process.returncode}:\n"
                                 f"{log.read_text()[-5000:]}")
        try:
            if requests.get(function.url + "/healthz", timeout=2).status_code == 200:
                return function
        except requests.RequestException:
            pass
        time.sleep(0.3)
    function.stop()
    raise AssertionError(f"not ready after {timeout} s:\n{log.read_text()[-5000:]}")


def assert_digits_answered(function: Function, digits) -> None:
    for label in (1, 5, 7):
        index = int(np.flatnonzero(digits.y_test == label)[0])
        response = requests.post(function.url, files={
            "file": ("d.png", encode(digits.x_test[index]), "image/png")}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"][0]["class_id"] == label
        assert body["model"]["name"] == "digits"


def test_the_upload_is_the_function_and_its_model(workspace):
    files = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*")
                   if p.is_file())
    assert {"main.py", "requirements.txt", "modelmeta.py", "functions/main.py",
            "build/models/digits/served/saved_model.pb"} <= set(files)
    assert not [f for f in files if f.startswith(("tests/", "bench/", "modelprep/", "infra/",
                                                  ".venv", "deploy/", "examples/"))]
    assert not [f for f in files if "__pycache__" in f]


@pytest.mark.parametrize("version", PYTHONS)
def test_functions_framework_from_the_uploaded_source(version, workspace, runtimes, digits,
                                                      tmp_path):
    if version not in PRESENT:
        pytest.skip(f"python{version} is missing (runtime python{version.replace('.', '')}): "
                    f"install it (e.g. pyenv install {version}) to rehearse it")
    venv = runtimes[version]
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                                "--format=json"], capture_output=True, text=True, check=True)
    names = {re.sub(r"[-_.]+", "-", p["name"]).lower() for p in json.loads(installed.stdout)}
    assert "tf-image-functions" not in names, "the buildpack does not install the project"
    assert {"functions-framework", "tensorflow-cpu", "google-cloud-storage"} <= names
    function = start_function(venv, workspace, tmp_path / "function.log")
    try:
        assert_digits_answered(function, digits)
    finally:
        function.stop()


@pytest.mark.skipif(not PRESENT, reason="no Python 3.11-3.13 is present")
def test_model_from_gcs_with_set_env_vars(workspace, runtimes, demo_model, digits, tmp_path):
    """``--set-env-vars MODEL_URI=gs://BUCKET/digits/1/``: fetched at worker start through
    google-cloud-storage from the requirements.txt install."""
    emulator = start_emulator(tmp_path / "emulator.log")
    try:
        client = client_for(emulator.url)
        client.create_bucket("models")
        upload_dir(client, demo_model.served, "models", "digits/1")
        function = start_function(runtimes[PRESENT[-1]], workspace, tmp_path / "function.log",
                                  {**gcs_env(emulator.url), "MODEL_URI": "gs://models/digits/1/",
                                   "MODEL_CACHE_DIR": str(tmp_path / "cache")})
        try:
            assert_digits_answered(function, digits)
        finally:
            function.stop()
    finally:
        emulator.stop()
    assert list((tmp_path / "cache").glob("models-digits-1-*/*/saved_model.pb"))

