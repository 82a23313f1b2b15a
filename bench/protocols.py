"""Item 2, protocols: what each protocol adds to the native API's warm latency, same image.

    .venv/bin/python -m bench.protocols [--rounds 3] [--requests 300]

One function server (the in-process digits model, as `bench.latency` runs it) gets the
same held-out digit PNG, one request after the other on kept-alive connections, taking
turns request by request: the native API (``{"image": "<base64>"}`` on /), TF Serving
REST (row ``{"instances": [{"b64": ...}]}``), the Open Inference Protocol as JSON (the
image's base64 in a BYTES tensor) and with the binary tensor data extension (the PNG
itself, the scores back as binary), and Simple TF Serving's mini-program body. Each
row is the median over rounds of (protocol p50 - native p50) within the round, in ms;
the goal is at most 0.2 ms. Before timing, every protocol must name the native API's
class.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import replace

from bench import client
from bench.client import BenchError, Request
from bench.context import MODEL_LABELS, Context
from bench.report import Goal, Row
from bench.stats import Latency, median

MODEL = "digits"
GOAL = Goal("<=", 0.2, on="value")
NATIVE = "native API"
_JSON = {"Content-Type": "application/json"}


TF_SERVING = "TF Serving REST (row, b64)"
V2_JSON = "Open Inference Protocol v2 (JSON)"
V2_BINARY = "Open Inference Protocol v2 (binary)"
SIMPLE = "Simple TF Serving"


def requests_for(image: bytes, model_name: str) -> dict[str, Request]:
    """The same image in every protocol's request, each checked to carry 10 scores."""
    text = base64.b64encode(image).decode("ascii")
    header = json.dumps({
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": len(image) + 4}}],
        "parameters": {"binary_data_output": True}}).encode()
    requests = {
        NATIVE: Request("/", _dumps({"image": text}), _JSON),
        TF_SERVING: Request(f"/v1/models/{model_name}:predict",
                            _dumps({"instances": [{"b64": text}]}), _JSON),
        V2_JSON: Request(f"/v2/models/{model_name}/infer", _dumps({"inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [text]}]}), _JSON),
        V2_BINARY: Request(f"/v2/models/{model_name}/infer",
                           header + struct.pack("<I", len(image)) + image,
                           {"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(len(header))}),
        SIMPLE: Request("/", _dumps({"model_name": "default", "data": {"image": text}}), _JSON),
    }
    return {name: replace(request, check=_CLASS_OF[name]) for name, request in requests.items()}


def _dumps(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def _argmax(scores: list[float]) -> int:
    if len(scores) != 10:
        raise BenchError(f"expected 10 scores, got {len(scores)}")
    return max(range(len(scores)), key=scores.__getitem__)


def _class_of_native(body: bytes) -> int:
    return int(json.loads(body)["predictions"][0]["class_id"])


def _binary_class(body: bytes) -> int:
    import numpy as np

    end = body.index(b"}]}") + 3  # the JSON header, then 10 little-endian floats
    return int(np.frombuffer(body[end:], "<f4").argmax())


_CLASS_OF: dict[str, Callable[[bytes], int]] = {
    NATIVE: _class_of_native,
    TF_SERVING: lambda body: _argmax(json.loads(body)["predictions"][0]),
    V2_JSON: lambda body: _argmax(json.loads(body)["outputs"][0]["data"]),
    V2_BINARY: _binary_class,
    SIMPLE: lambda body: _argmax(json.loads(body)["scores"][0]),
}
"""The class each answer names; raises when the answer is not the protocol's."""


def difference_rows(p50_ms: dict[str, list[float]], label: str) -> list[Row]:
    """One row per protocol: median over rounds of its p50 minus the native p50 (pure)."""
    native = p50_ms[NATIVE]
    rows = []
    for name, values in p50_ms.items():
        if name == NATIVE:
            continue
        differences = [v - n for v, n in zip(values, native, strict=True)]
        value, baseline = median(values), median(native)
        rows.append(Row(2, f"{label}, {name}: p50 minus the native API's", median(differences),
                        "ms", baseline, f"{NATIVE} p50", value / baseline, GOAL,
                        note=f"p50 {value:.2f} ms; same PNG, taking turns",
                        detail={"rounds": len(values), "difference_ms": differences,
                                "p50_ms": values, "native_p50_ms": native}))
    return rows


def run(ctx: Context) -> list[Row]:
    server = ctx.function_server(MODEL)
    requests = requests_for(ctx.image_file(MODEL).read_bytes(), MODEL)
    classes = {name: _CLASS_OF[name](client.post_once(server.port, request, name))
               for name, request in requests.items()}
    if len(set(classes.values())) != 1:
        raise BenchError(f"the protocols disagree on the class: {classes}")
    samplers: dict[str, Callable[[], float]] = {
        name: client.Sampler(server.port, request, name) for name, request in requests.items()}
    count = ctx.plan.latency_requests[MODEL]
    p50_ms: dict[str, list[float]] = {name: [] for name in samplers}
    try:
        for i in range(ctx.plan.rounds):
            ctx.log(f"protocols: round {i + 1}/{ctx.plan.rounds}, {count} requests each, "
                    f"taking turns: {', '.join(samplers)}")
            taken = client.interleaved(samplers, count, ctx.plan.warmup if i == 0 else 0)
            for name, seconds in taken.items():
                p50_ms[name].append(Latency.of(seconds).p50 * 1000)
    finally:
        for sampler in samplers.values():
            if isinstance(sampler, client.Sampler):
                sampler.close()
    return difference_rows(p50_ms, f"warm latency {MODEL_LABELS[MODEL]}")


def main(argv: list[str] | None = None) -> int:
    """These rows alone, without the rest of the bench."""
    import subprocess
    import time

    from bench.context import Plan, run_dir
    from bench.models import BenchModel
    from bench.report import markdown_table
    from bench.server import ROOT, quiet_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="per protocol per round")
    options = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[bench.protocols {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
              flush=True)

    plan = replace(Plan(), rounds=options.rounds,
                   latency_requests={**Plan().latency_requests, MODEL: options.requests})
    work_dir = run_dir() / time.strftime("protocols-%Y%m%d-%H%M%S")
    work_dir.mkdir(parents=True, exist_ok=True)
    log("preparing the digits model (cached under build/)")
    built = subprocess.run(  # in a child: TensorFlow stays out of the timing client
        [sys.executable, "-c", "import json; from bench.models import digits_model; "
         "print(json.dumps(digits_model().to_dict()))"], cwd=ROOT, env=quiet_env({}),
        capture_output=True, text=True, timeout=1800, check=True)
    model = BenchModel.from_dict(json.loads(built.stdout.strip().splitlines()[-1]))
    ctx = Context(plan=plan, models={MODEL: model}, work_dir=work_dir, log=log)
    try:
        rows = run(ctx)
    finally:
        ctx.close()
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
