"""Cold start of the thin function: process start to first 200 through functions-framework.

    .venv/bin/python -m bench.thin_cold_start [--runs 5] [--inprocess]

Starts infra.modelserver on loopback with the demo model (not timed), then, for each
TF Serving backend, starts ``functions-framework --target predict`` as `make serve`
does and times from process start until a POST of a digit answers 200. The goal is
under one second on a 2-core machine. ``--inprocess`` adds the TensorFlow backend for
comparison (several seconds: importing TensorFlow alone takes most of it).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, format="PNG")
    return buf.getvalue()


def cold_start(env: dict[str, str], timeout: float = 120.0) -> tuple[float, float]:
    """Seconds from spawning the function to its first 200 answer to a prediction, and the
    CPU seconds its processes used in all (wall time alone suffers on a busy machine)."""
    cpu_before = _children_cpu()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    body = _png()
    command = [str(Path(sys.executable).parent / "functions-framework"), "--target", "predict",
            "--host", "127.0.0.1",
               "--port", str(port)]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with requests.Session() as session:
            while time.monotonic() - started < timeout:
                try:
                    response = session.post(url, data=body,
                                            headers={"Content-Type": "image/png"}, timeout=timeout)
                    if response.status_code == 200:
                        wall = time.monotonic() - started
                        break
                except requests.ConnectionError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"function exited with {process.returncode}")
                time.sleep(0.005)
            else:
                raise RuntimeError(f"no 200 within {timeout} s")
    finally:
        process.terminate()
        process.wait(timeout=30)
    return wall, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=5)
    args.add_argument("--inprocess", action="store_true",
                      help="also time the in-process TensorFlow backend (one run)")
    options = args.parse_args(argv)

    from infra.modelserver.repository import ModelEntry
    from infra.modelserver.server import ModelServer, ServerOptions
    from modelprep.demo import build_demo

    served = build_demo().served
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "digits"
        repo.mkdir()
        (repo / "1").symlink_to(served, target_is_directory=True)
        server = ModelServer(ServerOptions(port=0, rest_api_port=0, models=(
            ModelEntry(name="digits", base_path=repo),))).start()
        try:
            base = {"MODEL_URI": str(repo / "1"), "LOG_LEVEL": "WARNING",
                    "TF_CPP_MIN_LOG_LEVEL": "2"}
            plans = [("tfserving-rest", {"BACKEND": "tfserving-rest",
                                         "TFSERVING_URL": server.rest_url}, options.runs),
                     ("tfserving-grpc", {"BACKEND": "tfserving-grpc",
                                         "TFSERVING_URL": server.grpc_target}, options.runs)]
            if options.inprocess:
                plans.append(("inprocess", {"BACKEND": "inprocess"}, 1))
            rows = []
            for name, env, runs in plans:
                cold_start({**base, **env})  # once untimed: page cache, .pyc files
                results = [cold_start({**base, **env}) for _ in range(runs)]
                times = [wall for wall, _ in results]
                rows.append((name, runs, min(times), statistics.median(times), max(times),
                             statistics.median(cpu for _, cpu in results)))
        finally:
            server.stop()
    print(f"cold start: process start -> first 200 (goal < {GOAL_SECONDS:.1f} s), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'backend':<16}{'runs':>5}{'min s':>9}{'median s':>10}{'max s':>9}"
          f"{'cpu s':>8}  goal")
    for name, runs, low, mid, high, cpu in rows:
        verdict = "met" if mid < GOAL_SECONDS else "missed"
        print(f"{name:<16}{runs:>5}{low:>9.3f}{mid:>10.3f}{high:>9.3f}{cpu:>8.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
