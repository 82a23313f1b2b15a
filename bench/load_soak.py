"""Load and soak: the real server under concurrent clients, errors, latency and memory.

    .venv/bin/python -m bench.load_soak [--requests 2000] [--concurrency 16]

Starts the function with functions-framework on a loopback port (the demo model, the
in-process backend), warms it up, then sends held-out digits as multipart uploads,
PNG and JPEG alternating, from N client threads. Every answer must be a 200 with the
right digit. Prints a markdown table: p50/p99 latency, throughput, errors, and the
worker's resident memory after warm-up and at the end (growth must stay under 10 %).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)

    from modelprep.demo import build_demo
    from modelprep.digits import digit_images

    demo = build_demo()
    data = digit_images()
    samples = []
    for i in range(len(data.x_test)):
        fmt = "PNG" if i % 2 else "JPEG"
        buf = io.BytesIO()
        Image.fromarray(data.x_test[i]).save(buf, format=fmt)
        samples.append((int(data.y_test[i]), fmt, buf.getvalue()))

    with serve(demo.served) as (url, worker_pid):
        local = threading.local()

        def one(i: int) -> tuple[float, bool, bool]:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            label, fmt, data = samples[i % len(samples)]
            start = time.perf_counter()
            response = session.post(url, files={"file": (f"d.{fmt.lower()}", data)},
                                    timeout=60)
            elapsed = time.perf_counter() - start
            ok = response.status_code == 200
            right = ok and response.json()["predictions"][0]["class_id"] == label
            return elapsed, ok, right

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.warmup)))
            rss_start = rss_kib(worker_pid)
            started = time.perf_counter()
            results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - started
        rss_end = rss_kib(worker_pid)

    latencies = sorted(r[0] * 1000 for r in results)
    errors = sum(not r[1] for r in results)
    wrong = sum(r[1] and not r[2] for r in results)
    growth = (rss_end - rss_start) / rss_start * 100
    rows = [
        ("requests", f"{args.requests} at concurrency {args.concurrency}"),
        ("errors (non-200)", str(errors)),
        ("wrong digit (of 200s)", f"{wrong} (model accuracy on JPEG/PNG held-out images)"),
        ("p50 latency", f"{statistics.median(latencies):.1f} ms"),
        ("p99 latency", f"{latencies[int(len(latencies) * 0.99) - 1]:.1f} ms"),
        ("throughput", f"{args.requests / wall:.0f} requests/s"),
        ("worker RSS after warm-up", f"{rss_start / 1024:.0f} MiB"),
        ("worker RSS at the end", f"{rss_end / 1024:.0f} MiB ({growth:+.1f} %)"),
    ]
    print("| figure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0 if errors == 0 and growth < 10 else 1


class serve:
    """functions-framework on a free loopback port; yields (url, worker pid)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def __enter__(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "MODEL_URI": str(self.model_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
               "LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "functions-framework"), "--target", "predict",
            "--host", "127.0.0.1",
             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "healthz", timeout=2).status_code == 200:
                    return url, worker_pid(self.process.pid)
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("the server did not become ready in 120 s")

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def worker_pid(master: int) -> int:
    """gunicorn forks one worker; the model lives there."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0]) if children else master


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


if __name__ == "__main__":
    sys.exit(main())
