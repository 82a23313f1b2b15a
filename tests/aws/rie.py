"""The real AWS Lambda Runtime Interface Emulator, run without Docker on loopback.

The emulator ships inside the aws-sam-cli wheel (samcli/local/rapid/aws-lambda-rie-*).
It serves Lambda's invoke API and the Runtime API, and runs the handler through
`awslambdaric`, Lambda's own Python runtime client, exactly as a container image does:

    aws-lambda-rie --runtime-interface-emulator-address 127.0.0.1:PORT \\
                   --runtime-api-address 127.0.0.1:PORT2 \\
                   python -m awslambdaric functions.platforms.aws.lambda_handler

Both addresses are given explicitly: the emulator listens on 0.0.0.0 by default.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.conftest import ROOT, free_port
from tests.processes import stop, wait_listening

INVOKE_PATH = "/2015-03-31/functions/function/invocations"


def find_emulator() -> Path | None:
    """The emulator binary for this machine: AWS_LAMBDA_RIE, else from an aws-sam-cli
    install (this environment's, or the tool environment .venv-tools)."""
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower())
    if os.environ.get("AWS_LAMBDA_RIE"):
        return Path(os.environ["AWS_LAMBDA_RIE"])
    if arch is None:
        return None
    name = f"aws-lambda-rie-{arch}"
    candidates = []
    spec = importlib.util.find_spec("samcli")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "local" / "rapid" / name)
    candidates += [Path(p) for p in glob.glob(str(
        ROOT / ".venv-tools" / "lib" / "python3*" / "site-packages" / "samcli" / "local" /
        "rapid" / name))]
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def find_sam() -> str | None:
    local = ROOT / ".venv-tools" / "bin" / "sam"
    return shutil.which("sam") or (str(local) if local.is_file() else None)


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen
    log: Path

    def invoke(self, event: Any, timeout: float = 180) -> tuple[int, Any]:
        """One synchronous invoke: the emulator's HTTP status and the decoded payload."""
        response = requests.post(self.url + INVOKE_PATH, data=json.dumps(event),
                                 timeout=timeout)
        return response.status_code, response.json()

    def stop(self) -> None:
        stop(self.process)


def start_emulator(tmp: Path, env: dict[str, str],
                   handler: str = "functions.platforms.aws.lambda_handler",
                   timeout: float = 30) -> Emulator:
    binary = find_emulator()
    assert binary is not None, "the Lambda Runtime Interface Emulator is not installed"
    port, api_port = free_port(), free_port()
    log = tmp / f"rie-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "AWS_LAMBDA_FUNCTION_TIMEOUT": "120", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
                "AWS_LAMBDA_FUNCTION_NAME": "predict", **env}
    process = subprocess.Popen(
        [str(binary), "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
         "--runtime-api-address", f"127.0.0.1:{api_port}", "--log-level", "info",
         sys.executable, "-m", "awslambdaric", handler],
        cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_listening(process, port, log, "the Lambda Runtime Interface Emulator", timeout)
    return Emulator(f"http://127.0.0.1:{port}", process, log)


def runtime_maps(emulator: Emulator) -> str:
    """The memory map of the runtime process the emulator started (its Python)."""
    children: list[str] = []
    for task in Path(f"/proc/{emulator.process.pid}/task").iterdir():
        children += (task / "children").read_text().split()
    assert children, "the emulator has not started the runtime yet"
    return "".join(Path(f"/proc/{pid}/maps").read_text() for pid in children)
