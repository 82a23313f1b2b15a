"""Load and soak: the real server under concurrent clients, errors, latency and memory.

    .venv/bin/python -m bench.load_soak [--requests 2000] [--concurrency 16]
    .venv/bin/python -m bench.load_soak --mixed [--requests 4000]     # 20 % hostile, 32 clients
    .venv/bin/python -m bench.load_soak --slow-clients 50 [--slow-kind header|body|silent]
        [--server serving|functions-framework] [--threads N]

Starts the function as `make serve` does (``python -m functions.serving`` on a loopback
port, the demo model, the in-process backend), warms it up, then sends held-out digits as
multipart uploads, PNG and JPEG alternating, from N client threads. Every valid request
must be answered 200 with the right digit. Prints a markdown table: p50/p99 latency,
throughput, errors, and the worker's resident memory after warm-up and at the end (growth
must stay under 10 %).

``--mixed`` makes a share of the requests (``--hostile``, 20 %) hostile, in rotation: the
decoding bombs (GIFs of hundreds of frames or a huge later frame, JPEGs of thousands of
scans, a PNG claiming 30000x30000, a gzip bomb), option values that used to raise inside
``int()``, broken JSON and base64, and at the HTTP level malformed chunking, bodies shorter
than their Content-Length, megabyte request lines and heads sent in slow pieces. Each must
get a 4xx JSON answer (never a 5xx, never a dropped connection), while the valid requests
around them keep getting their 200s. The exit status is 0 only if all of that held.

``--slow-clients N`` instead holds N connections open that send their request a byte every
second (a header, a body, or nothing at all) and asks ``/livez`` and a predict ten times
meanwhile, on this server or (``--server functions-framework``) on functions-framework's
own, to compare how each copes; it prints the slowest answers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import io
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None,
                        help="requests to send (2000; 4000 with --mixed)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="client threads (16; 32 with --mixed)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--mixed", action="store_true",
                        help="make --hostile of the requests hostile")
    parser.add_argument("--hostile", type=float, default=0.2)
    parser.add_argument("--slow-clients", type=int, default=0)
    parser.add_argument("--slow-kind", choices=("header", "body", "silent"), default="header")
    parser.add_argument("--server", choices=("serving", "functions-framework"),
                        default="serving")
    parser.add_argument("--threads", type=int, default=0, help="THREADS for the server")
    args = parser.parse_args(argv)
    if args.slow_clients:
        return slow_clients(args.slow_clients, args.slow_kind, args.server, args.threads)
    total = args.requests or (4000 if args.mixed else 2000)
    concurrency = args.concurrency or (32 if args.mixed else 16)
    share = args.hostile if args.mixed else 0.0

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
    attacks = hostile_requests()
    every = round(1 / share) if share > 0 else 0

    with serve(demo.served) as (url, port, worker_pid):
        local = threading.local()

        def one(i: int) -> tuple[str, float, int, bool]:
            """(kind, seconds, status, right): kind is "valid" or the attack's name."""
            if every and i % every == every - 1:
                name, attack, expected = attacks[(i // every) % len(attacks)]
                start = time.perf_counter()
                status = attack(url, port)
                return name, time.perf_counter() - start, status, status in expected
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
            label, fmt, image = samples[i % len(samples)]
            start = time.perf_counter()
            try:
                response = session.post(url, files={"file": (f"d.{fmt.lower()}", image)},
                                        timeout=60)
            except requests.RequestException:
                return "valid", time.perf_counter() - start, 0, False
            elapsed = time.perf_counter() - start
            right = response.status_code == 200 and \
                response.json()["predictions"][0]["class_id"] == label
            return "valid", elapsed, response.status_code, right

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(args.warmup)))
            if every:  # every attack once in the warm-up, so first-use allocations count there
                list(pool.map(lambda attack: attack[1](url, port), attacks * 2))
            rss_start = rss_kib(worker_pid)
            started = time.perf_counter()
            results = list(pool.map(one, range(total)))
            wall = time.perf_counter() - started
        same_worker = Path(f"/proc/{worker_pid}").exists()
        rss_end = rss_kib(worker_pid)

    valid = [r for r in results if r[0] == "valid"]
    hostile = [r for r in results if r[0] != "valid"]
    latencies = sorted(r[1] * 1000 for r in valid)
    errors = sum(r[2] != 200 for r in valid)
    wrong = sum(r[2] == 200 and not r[3] for r in valid)
    server_errors = sum(r[2] >= 500 for r in results)
    unanswered = sum(r[2] == 0 for r in results)
    growth = (rss_end - rss_start) / rss_start * 100
    rows = [("requests", f"{total} at concurrency {concurrency}"
             + (f", {len(hostile)} of them hostile ({share:.0%})" if hostile else ""))]
    rows += [
        ("errors on valid requests (non-200)", str(errors)),
        ("wrong digit (of 200s)", f"{wrong} (model accuracy on JPEG/PNG held-out images)"),
        ("5xx answers", str(server_errors)),
        ("requests without an answer", str(unanswered)),
        ("p50 latency (valid)", f"{statistics.median(latencies):.1f} ms"),
        ("p99 latency (valid)", f"{latencies[max(0, int(len(latencies) * 0.99) - 1)]:.1f} ms"),
        ("throughput", f"{total / wall:.0f} requests/s"),
        ("worker RSS after warm-up", f"{rss_start / 1024:.0f} MiB"),
        ("worker RSS at the end", f"{rss_end / 1024:.0f} MiB ({growth:+.1f} %)"),
    ]
    if hostile:
        answers = Counter((r[0], r[2]) for r in hostile)
        rows.append(("hostile answers", "; ".join(
            f"{name} {status} x{count}" for (name, status), count in sorted(answers.items()))))
        rows.append(("hostile requests answered otherwise than designed",
                     str(sum(not r[3] for r in hostile))))
    print("| figure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"(client and server share them){'' if same_worker else '; the worker was replaced'}")
    ok = errors == 0 and server_errors == 0 and unanswered == 0 and growth < 10 \
        and all(r[3] for r in hostile)
    return 0 if ok else 1


# -- the hostile requests ------------------------------------------------------------------

Attack = Callable[[str, int], int]
CLIENT_ERROR = range(400, 500)
FIRST_FRAME = range(200, 201)
"""An animated GIF is served from its first frame: 200 is its designed answer."""


def hostile_requests() -> list[tuple[str, Attack, range]]:
    """(name, attack, designed statuses): each attack sends one hostile request and returns
    the answer's status (0 for none)."""
    gif_frames = _gif_with_frames(500, 400)
    gif_huge = _gif_with_frames(2, 60, huge_later=(65535, 65535))
    jpeg_scans = _jpeg_with_scans(1000, 3000)
    png_bomb = _png_claiming(30000, 30000)
    gzip_bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "PNG")
    image = base64.b64encode(buf.getvalue()).decode()

    def post(body: bytes, content_type: str, **headers: str) -> Attack:
        def attack(url: str, port: int) -> int:
            try:
                return requests.post(url, data=body, timeout=60, headers={
                    "Content-Type": content_type, **headers}).status_code
            except requests.RequestException:
                return 0
        return attack

    def raw(data: bytes, *, half_close: bool = False, pieces: int = 1) -> Attack:
        def attack(url: str, port: int) -> int:
            return _raw_status(port, data, half_close=half_close, pieces=pieces)
        return attack

    head = b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Type: image/png\r\n"
    return [
        ("gif 500 frames", post(gif_frames, "image/gif"), FIRST_FRAME),
        ("gif huge later frame", post(gif_huge, "image/gif"), FIRST_FRAME),
        ("jpeg 3000 scans", post(jpeg_scans, "image/jpeg"), CLIENT_ERROR),
        ("png 30000x30000", post(png_bomb, "image/png"), CLIENT_ERROR),
        ("gzip bomb", post(gzip_bomb, "image/png", **{"Content-Encoding": "gzip"}), CLIENT_ERROR),
        ("top_k unicode", post(json.dumps({"image": image, "top_k": "٣²"}).encode(),
                               "application/json"), CLIENT_ERROR),
        ("top_k 5000 digits", post(json.dumps({"image": image, "top_k": "9" * 5000}).encode(),
                                   "application/json"), CLIENT_ERROR),
        ("broken json", post(b'{"image": "abc', "application/json"), CLIENT_ERROR),
        ("bad base64", post(b'{"image": "abc$def"}', "application/json"), CLIENT_ERROR),
        ("bad chunking", raw(head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n"
                             b"\r\n"), CLIENT_ERROR),
        ("short body", raw(head + b"Content-Length: 5000\r\n\r\n\x89PNG", half_close=True),
         CLIENT_ERROR),
        ("3 MB request line", raw(b"GET /" + b"a" * 3_000_000 + b" HTTP/1.1\r\n\r\n"),
         CLIENT_ERROR),
        ("head in slow pieces", raw(b"GET /nothing-here HTTP/1.1\r\nHost: fn\r\nX-A: b\r\n\r\n",
                                    pieces=5), CLIENT_ERROR),
    ]


def _raw_status(port: int, data: bytes, *, half_close: bool, pieces: int) -> int:
    """Send raw bytes (in ``pieces`` with 50 ms between them); the answer's status, or 0."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                try:
                    sock.sendall(data[i:i + step])
                except OSError:
                    break  # the server answered and closed before reading it all
                if pieces > 1:
                    time.sleep(0.05)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    return 0
                answer += chunk
            return int(answer.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


def _gif_with_frames(copies: int, size: int, huge_later: tuple[int, int] | None = None
                     ) -> bytes:
    pixels = np.full((size, size), 60, np.uint8)
    pixels[size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "GIF")
    data = buf.getvalue()
    flags = data[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[start] == 0x21:  # extensions before the frame
        start += 2
        while data[start]:
            start += 1 + data[start]
        start += 1
    end = start + 11
    while data[end]:
        end += 1 + data[end]
    end += 1
    block = data[start:end]
    extra = block * copies
    if huge_later is not None:
        extra += block[:5] + struct.pack("<HH", *huge_later) + block[9:]
    return data[:end] + extra + data[end:]


def _jpeg_with_scans(size: int, copies: int) -> bytes:
    import re

    buf = io.BytesIO()
    Image.new("RGB", (size, size)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    spans, pos = [], 2
    while data[pos + 1] != 0xD9:
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] == 0xDA:
            found = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end)
            assert found is not None  # Pillow's JPEG ends with EOI
            end = found.start()
            spans.append((pos, end))
        pos = end
    first, last = min(spans[1:], key=lambda s: s[1] - s[0]), spans[-1][1]
    return data[:last] + data[first[0]:first[1]] * copies + data[last:]


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                             0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


# -- slow clients --------------------------------------------------------------------------


def slow_clients(count: int, kind: str, server: str, threads: int) -> int:
    """Hold ``count`` slow connections; print the slowest /livez and predict meanwhile."""
    from modelprep.demo import build_demo
    from modelprep.digits import digit_images

    buf = io.BytesIO()
    Image.fromarray(digit_images().x_test[0]).save(buf, format="PNG")
    png = buf.getvalue()
    starts = {"header": b"POST / HTTP/1.1\r\nHost: fn\r\n",
              "body": b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 100000\r\n\r\n", "silent": b""}
    with serve(build_demo().served, server, threads) as (url, port, _):
        stop = threading.Event()
        sockets = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(starts[kind])
            sockets.append(sock)

        def trickle() -> None:
            while not stop.wait(1.0):
                for sock in sockets if kind != "silent" else ():
                    with contextlib.suppress(OSError):
                        sock.send(b"X" if kind == "header" else b"\0")

        dripper = threading.Thread(target=trickle, daemon=True)
        dripper.start()
        time.sleep(2)
        slowest, failures = {"livez": 0.0, "predict": 0.0}, 0
        for _ in range(10):
            if failures >= 2:
                break  # starved: the rest would only wait out their timeouts too
            for name in slowest:
                started = time.perf_counter()
                try:
                    response = requests.get(url + "livez", timeout=15) if name == "livez" \
                        else requests.post(url, files={"file": ("d.png", png)}, timeout=15)
                    failures += response.status_code != 200
                except requests.RequestException:
                    failures += 1
                slowest[name] = max(slowest[name], time.perf_counter() - started)
        stop.set()
        dripper.join()
        for sock in sockets:
            sock.close()
    print(f"{server} (THREADS={threads or 'default'}), {count} {kind} connections: slowest "
          f"/livez {slowest['livez'] * 1000:.0f} ms, slowest predict "
          f"{slowest['predict'] * 1000:.0f} ms, {failures} unanswered or not 200 (15 s "
          f"timeout; two end the run); load average {os.getloadavg()[0]:.2f}")
    return 0 if failures == 0 else 1


# -- the server ----------------------------------------------------------------------------


class serve:
    """The function on a free loopback port (``python -m functions.serving``, or
    functions-framework's own server); yields (url, port, worker pid)."""

    def __init__(self, model_dir: Path, server: str = "serving", threads: int = 0) -> None:
        self.model_dir = model_dir
        self.server = server
        self.threads = threads

    def __enter__(self) -> tuple[str, int, int]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "MODEL_URI": str(self.model_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
               "LOG_LEVEL": "WARNING"}
        if self.threads:
            env["THREADS"] = str(self.threads)
        command = [sys.executable, "-m", "functions.serving"] if self.server == "serving" \
            else [str(Path(sys.executable).parent / "functions-framework"), "--target", "predict"]
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "healthz", timeout=2).status_code == 200:
                    self.worker = worker_pid(self.process.pid)
                    return url, port, self.worker
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("the server did not become ready in 180 s")

    def __exit__(self, *exc: object) -> None:
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
