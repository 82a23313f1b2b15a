"""The peer server: BentoML in a virtualenv of its own, serving the same SavedModel.

BentoML pins its own world (pydantic, starlette, opentelemetry, protobuf...), so
it goes into ``build/bench/peer-venv``, built on first use with pip from PyPI
and reused after; the project's pinned dependencies are never touched. The
service is `bench.peer_service`; its API is ``POST /predict`` with
``{"image": "<base64>"}``, the same body our function takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.models import BENCH_BUILD, BenchModel
from bench.server import ROOT, ServerProcess, free_port, quiet_env, spawn

PEER_VENV = BENCH_BUILD / "peer-venv"
PEER_HOME = BENCH_BUILD / "bentoml-home"
PEER_PACKAGES = ("bentoml==1.4.39", "tensorflow-cpu==2.21.0")
"""BentoML 1.4.40, the newest, needs a certifi release not on PyPI yet; 1.4.39 installs.
TensorFlow is the project's version, so both servers run the same kernels."""
INSTALL_TIMEOUT = 1200.0


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or started here; the message says why."""


def _stamp() -> dict:
    return {"packages": list(PEER_PACKAGES), "python": sys.version.split()[0]}


def ensure_venv(log: Path, progress=lambda _msg: None) -> tuple[Path, float | None]:
    """The peer virtualenv's ``bentoml`` executable, and the seconds spent installing it
    (None when it was already there)."""
    bentoml = PEER_VENV / "bin" / "bentoml"
    stamp = PEER_VENV / "bench-stamp.json"
    try:
        if bentoml.is_file() and json.loads(stamp.read_text()) == _stamp():
            return bentoml, None
    except (OSError, json.JSONDecodeError):
        pass
    progress(f"installing the peer ({', '.join(PEER_PACKAGES)}) into {PEER_VENV}; "
             "once, a few minutes")
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    with log.open("wb") as out:
        for argv in ([base_python, "-m", "venv", "--clear", str(PEER_VENV)],
                     [str(PEER_VENV / "bin" / "python"), "-m", "pip", "install",
                      "--disable-pip-version-check", "--quiet", *PEER_PACKAGES]):
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=INSTALL_TIMEOUT, check=False)
            except subprocess.TimeoutExpired as exc:
                raise PeerUnavailable(f"installing the peer took over {INSTALL_TIMEOUT:.0f} s; "
                                      f"see {log}") from exc
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise PeerUnavailable(f"`{' '.join(argv[-3:])}` failed: {' / '.join(tail)}")
    if not bentoml.is_file():
        raise PeerUnavailable(f"pip installed the peer but {bentoml} is missing")
    stamp.write_text(json.dumps(_stamp()))
    return bentoml, time.monotonic() - started


def start_peer(bentoml: Path, model: BenchModel, log_dir: Path) -> ServerProcess:
    """``bentoml serve`` of `bench.peer_service` on a free loopback port."""
    port = free_port()
    PEER_HOME.mkdir(parents=True, exist_ok=True)
    env = quiet_env({
        "PEER_MODEL_DIR": model.served,
        "BENTOML_HOME": str(PEER_HOME),
        "BENTOML_DO_NOT_TRACK": "True",
        # The peer venv's own packages only: never the project's checkout on the path.
        "PYTHONPATH": "",
    })
    argv = [str(bentoml), "serve", "bench.peer_service:MobileNet", "--host", "127.0.0.1",
            "--port", str(port), "--working-dir", str(ROOT)]
    return spawn("peer-bentoml", argv, env, log_dir, port)
