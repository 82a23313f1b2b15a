"""Shared fixtures: the real demo model, real images, and a real server on loopback."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests.processes import stop

ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def demo_model():
    """The demo digits model, built by `modelprep demo` once and cached under build/."""
    from modelprep.demo import build_demo

    return build_demo()


@pytest.fixture(scope="session")
def digits():
    from modelprep.digits import digit_images

    return digit_images()


WSGI_BINDINGS = ("functions-framework", "wsgi")
"""The two WSGI bindings: functions-framework's Flask app (main.py) and the plain one."""


@contextlib.contextmanager
def wsgi_client(binding: str) -> Iterator[Any]:
    """werkzeug's test client on one of `WSGI_BINDINGS`, in process, with a process app
    built afresh from the environment as it is now (and forgotten after)."""
    import functions_framework
    from werkzeug.test import Client

    from functions.platforms import wsgi

    wsgi.process_app.forget()
    try:
        if binding == "wsgi":
            yield Client(wsgi.app)
        else:
            app = functions_framework.create_app(target="predict", source=str(ROOT / "main.py"))
            yield app.test_client()
    finally:
        wsgi.process_app.forget()


def encode(pixels: np.ndarray, fmt: str = "PNG", **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **save_args)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def post(self, path: str = "/", **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return requests.post(self.url + path, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return requests.get(self.url + path, **kwargs)


def start_server(tmp: Path, env: dict[str, str], ready_status: int = 200,
                 timeout: float = 120) -> Server:
    """Start the function's server exactly as `make serve` does (`python -m functions.serving`:
    gunicorn as the project configures it), on a free loopback port."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if server.get("/healthz", timeout=10).status_code == ready_status:
                return server
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or its one worker busy importing TensorFlow
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server not ready in {timeout} s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    stop(server.process)


@pytest.fixture(scope="session")
def server(demo_model, tmp_path_factory):
    """The function serving the demo model, as `make serve` runs it."""
    srv = start_server(tmp_path_factory.mktemp("server"),
                       {"MODEL_URI": str(demo_model.served), "MAX_IMAGES": "8"})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def local_model_server(demo_model, tmp_path_factory):
    """infra.modelserver on loopback (REST and gRPC), serving a TF Serving repository:
    ``digits/1`` (the demo model, label ``stable``) and TF Serving's own test models
    ``half_plus_two`` (version 123) and ``half_plus_three``."""
    from tests.infra.repository import start_local_model_server

    server = start_local_model_server(tmp_path_factory.mktemp("tfserving"), demo_model.served)
    yield server
    server.stop()
