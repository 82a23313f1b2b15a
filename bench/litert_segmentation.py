"""The segmentation demo under LiteRT against in-process TF: cold start, p50, peak memory.

    python -m bench.litert_segmentation [--rounds 5] [--requests 20] [--json FILE]

Two functions as `make serve` runs them (`python -m functions.serving`), serving the segmentation
demo (Mask R-CNN's contract: int8 pixels, image meta and anchors in; detections and
uint8 masks out):

* ``BACKEND=litert``: its float LiteRT flavour (``modelprep litert``), no TensorFlow;
* the default in-process backend: TensorFlow and the prepared SavedModel.

Cold start is the time from spawning the process to the first 200 for a real request
(a 640x480 PNG of drawn shapes, uploaded as ``wx.uploadFile`` does, every shape found),
in rounds that alternate the order; peak memory is the sum of the peaks (``VmHWM``) of
the server's processes at that moment. Then both run side by side and take the same
request in turn (``--requests`` each, after two warm-ups) for the warm p50. Goal: the
LiteRT function's cold start under 1 s.

It writes the bench's JSON contract (``BENCH_RESULT`` or ``--json``; see
`bench.external`). Models: the demo (``modelprep demo --segmentation``) and its float
flavour, exported once to ``build/bench/litert/segmentation`` in child processes, so
this one stays light.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import client, procs
from bench.client import BenchError, Request
from bench.server import ROOT, start_function
from bench.stats import Latency, Paired, median

LITERT_OUT = ROOT / "build" / "bench" / "litert" / "segmentation"
SERVED = ROOT / "build" / "models" / "segmentation" / "served"
LOG_DIR = ROOT / "build" / "bench" / "litert" / "logs"
GOAL_SECONDS = 1.0
LITERT = "litert float"
TF = "in-process TF"
MIB = 1024 * 1024


@dataclass
class Figures:
    label: str
    seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


def prepare_models() -> None:
    """The demo, then its float flavour when missing or older than it."""
    cli = [sys.executable, "-m", "modelprep.cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([*cli, "demo", "--segmentation"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    stamp = (SERVED / "saved_model.pb").stat().st_mtime
    wanted = [LITERT_OUT / "model_float.tflite", LITERT_OUT / "model_float.json"]
    if all(p.is_file() and p.stat().st_mtime > stamp for p in wanted):
        return
    subprocess.run([*cli, "litert", str(SERVED), "--flavour", "float", "--out",
                    str(LITERT_OUT), "--verify-count", "8"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def scene_request() -> Request:
    """A 640x480 PNG of 4 drawn shapes; the answer must hold one instance per shape."""
    from PIL import Image

    from modelprep.segmentation import random_scene

    scene = random_scene(101, 480, 640)
    buf = io.BytesIO()
    Image.fromarray(scene.image).save(buf, format="PNG")
    boundary = "benchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"tmp.png\"\r\nContent-Type: image/png\r\n\r\n").encode() \
        + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    want = [shape.kind for shape in scene.shapes]

    def check(answer: bytes) -> None:
        labels = sorted(i["label"] for i in json.loads(answer)["predictions"][0]["instances"])
        if labels != sorted(want):
            raise BenchError(f"expected instances {sorted(want)}, got {labels}")

    return Request("/", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                   check)


def modes() -> dict[str, tuple[Path, dict[str, str]]]:
    return {LITERT: (LITERT_OUT, {"BACKEND": "litert", "LITERT_FLAVOUR": "float"}),
            TF: (SERVED, {"BACKEND": "inprocess"})}


def measure(rounds: int, requests: int, log=lambda msg: print(msg, file=sys.stderr,
                                                              flush=True)) -> list[Figures]:
    request = scene_request()
    figures = {label: Figures(label) for label in modes()}
    labels = list(figures)
    for r in range(rounds):
        for label in labels[r % 2:] + labels[:r % 2]:
            uri, env = modes()[label]
            server = start_function(str(uri), LOG_DIR, env, name=label.replace(" ", "-"))
            try:
                seconds = server.wait_ready(request, timeout=300)
                peak = server.peak_rss() or 0
            finally:
                server.stop()
            figures[label].seconds.append(seconds)
            figures[label].peak_rss.append(peak)
            log(f"round {r + 1}/{rounds} {label}: {seconds:.3f} s, {peak / MIB:.0f} MiB")
    servers = {label: start_function(str(uri), LOG_DIR, env, name=label.replace(" ", "-"))
               for label, (uri, env) in modes().items()}
    try:
        samplers: dict[str, client.Sampler] = {}
        for label, server in servers.items():
            server.wait_ready(request, timeout=300)
            samplers[label] = client.Sampler(server.port, request, label)
        timings = client.interleaved({label: sampler.__call__ for label, sampler
                                      in samplers.items()}, requests, warmup=2)
        for label, sampler in samplers.items():
            sampler.close()
            figures[label].latency = timings[label]
    finally:
        for server in servers.values():
            server.stop()
    log("warm p50: " + ", ".join(f"{label} {Latency.of(f.latency).p50 * 1000:.0f} ms"
                                  for label, f in figures.items()))
    return [figures[label] for label in labels]


def result_rows(figures: list[Figures], note: str) -> dict:
    """The bench's JSON contract (`bench.external`): rows and peak memory per mode."""
    by = {f.label: f for f in figures}
    litert, tf = by[LITERT], by[TF]
    start = Paired.of(litert.seconds, tf.seconds)
    warm, warm_tf = Latency.of(litert.latency), Latency.of(tf.latency)
    rows = [
        {"group": 3, "label": "cold start segmentation, litert float function "
                              "(spawn → first 200)",
         "value": start.value, "unit": "s", "baseline": start.baseline, "baseline_label": TF,
         "ratio": start.ratio, "goal": {"op": "<", "limit": GOAL_SECONDS, "on": "value"},
         "note": f"{1 / start.ratio:.1f}x faster than in-process TF; {note}",
         "detail": {"rounds": start.rounds, "seconds": litert.seconds,
                    "tf_seconds": tf.seconds}},
        {"group": 2, "label": "warm p50 segmentation 640x480 PNG, litert float function",
         "value": warm.p50 * 1000, "unit": "ms", "baseline": warm_tf.p50 * 1000,
         "baseline_label": TF, "ratio": warm.p50 / warm_tf.p50,
         "note": f"{warm.count} requests each, in turn; p99 {warm.p99 * 1000:.0f} ms "
                 f"against {warm_tf.p99 * 1000:.0f} ms; {note}",
         "detail": {"seconds": litert.latency, "tf_seconds": tf.latency}},
    ]
    memory = {f"function {f.label} (segmentation), at first 200": int(median(f.peak_rss))
              for f in figures}
    return {"rows": rows, "memory": memory}


def format_table(figures: list[Figures], note: str) -> str:
    lines = [f"segmentation demo: {note}",
             f"{'function':<16}{'cold start s (median, min-max)':>32}{'peak RSS MiB':>14}"
             f"{'warm p50 ms':>13}{'p99 ms':>8}"]
    for f in figures:
        warm = Latency.of(f.latency)
        start = f"{median(f.seconds):.3f} ({min(f.seconds):.2f}-{max(f.seconds):.2f})"
        lines.append(f"{f.label:<16}{start:>32}{median(f.peak_rss) / MIB:>14.0f}"
                     f"{warm.p50 * 1000:>13.0f}{warm.p99 * 1000:>8.0f}")
    litert = next(f for f in figures if f.label == LITERT)
    met = median(litert.seconds) < GOAL_SECONDS
    lines.append(f"goal: litert cold start < {GOAL_SECONDS:g} s: {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2 if os.environ.get("BENCH_QUICK") == "1"
                        else 5)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path(os.environ["BENCH_RESULT"])
                        if os.environ.get("BENCH_RESULT") else None,
                        help="write the bench's JSON result here (default: BENCH_RESULT)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50 or not 1 <= args.requests <= 1000:
        parser.error("--rounds must be 1..50 and --requests 1..1000")
    prepare_models()
    started = time.monotonic()
    figures = measure(args.rounds, args.requests)
    load = ", ".join(f"{x:.1f}" for x in procs.load_average())
    note = (f"{args.rounds} rounds; {procs.machine().describe()}; load average {load} "
            "(a shared machine)")
    print(format_table(figures, note))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
    result = result_rows(figures, note)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
