"""Cold start and peak memory: the litert function against the in-process TF function.

    python -m bench.litert_cold_start [--rounds 5] [--json bench/results/litert.json]

Each round starts, one after the other and in a rotating order, the function as
`make serve` runs it (`python -m functions.serving`, demo digits model) three ways:

* ``BACKEND=litert LITERT_FLAVOUR=float`` and ``int8``: the model's LiteRT
  flavours, no TensorFlow in the process;
* the default in-process backend: TensorFlow and the wrapped SavedModel.

Cold start is the time from spawning the process to the first 200 for a real
PNG request (the worker loads the model as soon as it is forked, as it does
in production; the request waits for it). Peak memory is the sum of the
peaks (``VmHWM``) of the server's processes at that moment. Goal:
the litert function under 1 s, and at least 3x faster than in-process TF.

With ``--lambda``, the same comparison for a Lambda-style start, without a web
server: a fresh Python imports ``functions.aws``, builds the app and answers one
HTTP API event through ``lambda_handler`` (what Lambda's init phase plus the first
invoke do). The litert one runs from the unzipped package `bench.litert_package`
builds (``python -S -E``: nothing but the standard library and the package); the
TF one from this virtualenv. Peak memory is the child's ``ru_maxrss``.

Models: the demo (``modelprep demo``) and its LiteRT flavours, exported once to
``build/bench/litert/digits`` in a child process, so this one stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

from bench import procs
from bench.client import Request
from bench.server import ROOT, start_function

LITERT_OUT = ROOT / "build" / "bench" / "litert" / "digits"
DEMO_SERVED = ROOT / "build" / "models" / "digits" / "served"
GOAL_SECONDS = 1.0
GOAL_SPEEDUP = 3.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Mode:
    label: str
    model_uri: Path
    env: dict[str, str]


@dataclass
class Result:
    label: str
    seconds: list[float]
    peak_rss: list[int]

    @property
    def median_s(self) -> float:
        return median(self.seconds)

    @property
    def median_rss_mib(self) -> float:
        return median(self.peak_rss) / MIB


def prepare_models() -> None:
    """The demo model, then its LiteRT flavours when missing or older than it."""
    cli = [sys.executable, "-m", "modelprep.cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([*cli, "demo"], cwd=ROOT, env=env, check=True)
    stamp = (DEMO_SERVED / "saved_model.pb").stat().st_mtime
    wanted = [LITERT_OUT / f"model_{f}.{ext}" for f in ("float", "int8")
              for ext in ("tflite", "json")]
    if all(p.is_file() and p.stat().st_mtime > stamp for p in wanted):
        return
    subprocess.run([*cli, "litert", str(DEMO_SERVED), "--out", str(LITERT_OUT)], cwd=ROOT,
                   env=env, check=True, stdout=subprocess.DEVNULL)


def digit_request() -> tuple[Request, int]:
    """One held-out digit as a PNG upload, and its label."""
    import io

    from PIL import Image

    from modelprep.digits import digit_images

    data = digit_images()
    buf = io.BytesIO()
    Image.fromarray(data.x_test[0]).save(buf, format="PNG")
    label = int(data.y_test[0])

    def check(body: bytes) -> None:
        answer = json.loads(body)["predictions"][0]["class_id"]
        if answer != label:
            raise AssertionError(f"expected class {label}, got {answer}")

    return Request("/", buf.getvalue(), {"Content-Type": "image/png"}, check), label


def measure(modes: list[Mode], rounds: int, log_dir: Path,
            log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> list[Result]:
    request, _ = digit_request()
    results = {m.label: Result(m.label, [], []) for m in modes}
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            server = start_function(str(mode.model_uri), log_dir, mode.env,
                                    name=mode.label.replace(" ", "-"))
            try:
                seconds = server.wait_ready(request, timeout=300)
                peak = server.peak_rss() or 0
            finally:
                server.stop()
            results[mode.label].seconds.append(seconds)
            results[mode.label].peak_rss.append(peak)
            log(f"round {r + 1}/{rounds} {mode.label}: {seconds:.3f} s, {peak / MIB:.0f} MiB")
    return [results[m.label] for m in modes]


LAMBDA_SCRIPT = """
import base64, json, sys
if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[2])
from functions.platforms.aws import lambda_handler
event = {"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
         "headers": {"content-type": "image/png"},
         "requestContext": {"http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                                     "sourceIp": "127.0.0.1", "userAgent": "bench"},
                            "requestId": "bench", "stage": "$default"},
         "body": sys.argv[1], "isBase64Encoded": True}
result = lambda_handler(event, None)
print(json.dumps({"status": result["statusCode"], "body": result["body"]}))
"""


def lambda_start(argv: list[str], env: dict[str, str], cwd: Path,
                 label: int) -> tuple[float, int]:
    """Seconds from spawn to the handler's 200 (the process then exits), and peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    out = process.stdout.read() if process.stdout else b""
    if process.stdout:
        process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    answer = json.loads(out.decode().strip().splitlines()[-1])
    if answer["status"] != 200 or json.loads(answer["body"])["predictions"][0][
            "class_id"] != label:
        raise RuntimeError(f"{argv[:2]} answered {answer}")
    return seconds, usage.ru_maxrss * 1024


def measure_lambda(rounds: int, package: Path,
                   log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> list[Result]:
    import base64

    request, label = digit_request()
    body = base64.b64encode(request.body).decode()
    base = {"PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING", "TF_CPP_MIN_LOG_LEVEL": "3"}
    modes = [
        ("lambda litert int8 (zip)",
         [sys.executable, "-S", "-E", "-c", LAMBDA_SCRIPT, body, str(package)],
         {**base, "BACKEND": "litert", "LITERT_FLAVOUR": "int8",
          "MODEL_URI": str(package / "model")}, package),
        ("lambda in-process TF", [sys.executable, "-c", LAMBDA_SCRIPT, body],
         {**base, "BACKEND": "inprocess", "MODEL_URI": str(DEMO_SERVED)}, ROOT),
    ]
    results = {name: Result(name, [], []) for name, _, _, _ in modes}
    for r in range(rounds):
        for name, argv, env, cwd in modes[r % 2:] + modes[:r % 2]:
            seconds, peak = lambda_start(argv, env, cwd, label)
            results[name].seconds.append(seconds)
            results[name].peak_rss.append(peak)
            log(f"round {r + 1}/{rounds} {name}: {seconds:.3f} s, {peak / MIB:.0f} MiB")
    return list(results.values())


def unpacked_package(work: Path) -> Path:
    """The int8 litert function's zip, built from this environment and unzipped."""
    import zipfile

    from bench.litert_package import build

    package = build(work / "function.zip", LITERT_OUT, flavour="int8", from_venv=True,
                    compresslevel=1)
    target = work / "task"
    shutil.rmtree(target, ignore_errors=True)
    zipfile.ZipFile(package.zip_path).extractall(target)
    return target


def format_table(results: list[Result], rounds: int,
                 what: str = "cold start (spawn -> first 200)") -> str:
    machine = procs.machine()
    load = ", ".join(f"{x:.1f}" for x in procs.load_average())
    lines = [f"{what} and peak memory, demo digits model, "
             f"{rounds} rounds; {machine.describe()}; load average {load}",
             f"{'function':<22}{'median s':>10}{'min s':>8}{'max s':>8}{'peak RSS MiB':>14}"]
    for res in results:
        lines.append(f"{res.label:<22}{res.median_s:>10.3f}{min(res.seconds):>8.3f}"
                     f"{max(res.seconds):>8.3f}{res.median_rss_mib:>14.0f}")
    tf = next(r for r in results if "in-process" in r.label)
    for res in results:
        if res is tf:
            continue
        speedup = tf.median_s / res.median_s
        memory = tf.median_rss_mib / res.median_rss_mib
        met = res.median_s < GOAL_SECONDS and speedup >= GOAL_SPEEDUP
        lines.append(f"{res.label}: {speedup:.1f}x faster to first 200, {memory:.1f}x less "
                     f"memory than {tf.label}; goal (< {GOAL_SECONDS:g} s and >= "
                     f"{GOAL_SPEEDUP:g}x) {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--lambda", dest="lambda_", action="store_true",
                        help="also measure a Lambda-style start from the zip package")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be 1..50")
    prepare_models()
    modes = [
        Mode("litert float", LITERT_OUT, {"BACKEND": "litert", "LITERT_FLAVOUR": "float"}),
        Mode("litert int8", LITERT_OUT, {"BACKEND": "litert", "LITERT_FLAVOUR": "int8"}),
        Mode("in-process TF", DEMO_SERVED, {"BACKEND": "inprocess"}),
    ]
    started = time.monotonic()
    results = measure(modes, args.rounds, ROOT / "build" / "bench" / "litert" / "logs")
    print(format_table(results, args.rounds))
    if args.lambda_:
        with tempfile.TemporaryDirectory(prefix="litert-bench-") as work:
            package = unpacked_package(Path(work))
            lambda_results = measure_lambda(args.rounds, package)
        print()
        print(format_table(lambda_results, args.rounds,
                           "Lambda-style start (spawn -> handler's 200, no web server)"))
        results += lambda_results
    print(f"(measured in {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
