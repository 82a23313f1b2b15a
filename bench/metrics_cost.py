"""What metrics cost a request: App.handle's p50 with METRICS off, prometheus and emf.

    .venv/bin/python -m bench.metrics_cost [--rounds 15] [--requests 200]

Three apps serve the demo digits model in process (build/models/digits/served, made by
`modelprep demo`), the same JSON request each; in every round each app answers
``--requests`` requests, the apps taking turns request by request, so other load on the
machine slows them alike. A row gives the median over rounds of each app's p50 and of its
per-round difference to METRICS=off. The EMF app writes its lines to /dev/null (on
Lambda, stdout is a pipe to the log agent). The goal is under 50 µs on the p50.

Two more rows time the recording alone, with no model: the recorder's ``finish`` plus
what App.handle adds around a request (the request's metrics object and its context
variable), per request.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import time
from dataclasses import replace

from bench.stats import percentile

GOAL_MICROSECONDS = 50.0
KINDS = ("off", "prometheus", "emf")
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - a real write per line, as to a pipe


def _request():
    from PIL import Image

    from functions.httpio import Headers, HttpRequest

    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="PNG")
    body = json.dumps({"image": base64.b64encode(buf.getvalue()).decode()}).encode()
    return HttpRequest("POST", "/predict", Headers({"Content-Type": "application/json"}), body)


def _apps(model_uri: str):
    from functions import metrics
    from functions.app import App
    from functions.config import Settings

    base = Settings(model_uri=model_uri, log_level="WARNING", preload=False)
    apps = {}
    for kind in KINDS:
        app = App(replace(base, metrics=kind))
        if kind == "emf":
            app.metrics = metrics.EmfRecorder(base.backend, stream=_DEVNULL)
            app.model = apps["off"].model  # one loaded model, shared
        elif kind == "prometheus":
            app.model = apps["off"].model
        apps[kind] = app
    return apps


def latency_rows(model_uri: str, rounds: int, requests: int) -> list[tuple[str, str, str]]:
    apps = _apps(model_uri)
    request = _request()
    for app in apps.values():  # load, warm up
        for _ in range(20):
            assert app.handle(request).status == 200
    p50s: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(rounds):
        times: dict[str, list[float]] = {k: [] for k in KINDS}
        for _ in range(requests):
            for kind, app in apps.items():
                started = time.perf_counter()
                app.handle(request)
                times[kind].append(time.perf_counter() - started)
        for kind in KINDS:
            p50s[kind].append(percentile(times[kind], 50) * 1e6)
    rows = []
    for kind in KINDS:
        diffs = [a - b for a, b in zip(p50s[kind], p50s["off"], strict=True)]
        cost = statistics.median(diffs)
        rows.append((f"App.handle p50, digits, METRICS={kind}",
                     f"{statistics.median(p50s[kind]):,.0f} µs",
                     "—" if kind == "off" else
                     f"{cost:+.1f} µs ({'met' if cost < GOAL_MICROSECONDS else 'missed'})"))
    return rows


def recording_rows(iterations: int = 20000) -> list[tuple[str, str, str]]:
    from functions import metrics

    rows = []
    for kind in ("prometheus", "emf"):
        recorder = (metrics.EmfRecorder("inprocess", stream=_DEVNULL)
                    if kind == "emf" else metrics.create(kind, "inprocess"))
        outcome = metrics.Outcome(200, None, 0.002, 120, 300, "r" * 32)
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(iterations):
                measured, token = metrics.begin()
                measured.route, measured.images = "/predict", 1
                measured.parse_seconds = measured.model_seconds = 0.001
                measured.answer_seconds = 0.0002
                measured.batches.append(1)
                recorder.finish(measured, outcome)
                metrics.end(token)
            samples.append((time.perf_counter() - started) / iterations * 1e6)
        rows.append((f"recording one request alone, METRICS={kind}",
                     f"{statistics.median(samples):.1f} µs", "no model, no HTTP"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", default=None, help="prepared model (default: the demo)")
    args = parser.parse_args(argv)
    from functions.config import DEMO_MODEL_DIR

    model = args.model or str(DEMO_MODEL_DIR)
    if not os.path.isdir(model):
        print(f"no model at {model}: run `.venv/bin/modelprep demo` first", file=sys.stderr)
        return 1
    started = time.monotonic()
    rows = latency_rows(model, args.rounds, args.requests) + recording_rows()
    print(f"| measure | value | cost against METRICS=off (goal < {GOAL_MICROSECONDS:.0f} µs) |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n{args.rounds} rounds x {args.requests} requests per app, "
          f"{time.monotonic() - started:.0f} s, {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
