"""Item 2: MobileNetV2 under LiteRT (float and int8) beside TensorFlow, warm, over HTTP.

The same bench MobileNetV2 is exported with ``modelprep litert`` (once, in a
child process, to ``build/bench/litert/mobilenet_v2``; redone when the model is
newer) and served by the function with ``BACKEND=litert`` in each flavour. Each
round times, taking turns request by request: the direct TensorFlow call
(`bench.bare`), the in-process TF function, the LiteRT float function and the
LiteRT int8 function, all over loopback HTTP with the same photo. The ratio is
against the TF function's p50 in the same round.

The bench model has random weights with calibrated batch-norm statistics and
int8 is calibrated on synthetic images, so the int8 flavour may miss
``modelprep``'s tolerance (its answers are near-uniform); the function is
started with ``LITERT_ALLOW_UNVERIFIED=true`` so its speed is still measured,
and the note says which class each side names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import client
from bench.client import BenchError
from bench.context import MODEL_LABELS, Context
from bench.report import Row
from bench.server import ROOT, ServerProcess, start_function
from bench.stats import Paired

MODEL = "mobilenet_v2"
LITERT_OUT = ROOT / "build" / "bench" / "litert" / MODEL
FLAVOURS = ("float", "int8")


def prepare(served: Path, log: Path) -> None:
    """Export the LiteRT flavours of ``served`` unless they are newer than it."""
    stamp = (served / "saved_model.pb").stat().st_mtime
    wanted = [LITERT_OUT / f"model_{f}.{ext}" for f in FLAVOURS for ext in ("tflite", "json")]
    if all(p.is_file() and p.stat().st_mtime > stamp for p in wanted):
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        done = subprocess.run([sys.executable, "-m", "modelprep.cli", "litert", str(served),
                               "--out", str(LITERT_OUT)], cwd=ROOT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=out,
                              stderr=subprocess.STDOUT, timeout=1800, check=False)
    # Exit 4: every flavour written, one missed its tolerance and says verified: false
    # (the int8 flavour of this random-weight model); the function is started with
    # LITERT_ALLOW_UNVERIFIED=true below, so its speed is still measured.
    if done.returncode not in (0, 4) or not all(p.is_file() for p in wanted):
        raise BenchError(f"modelprep litert failed ({done.returncode}); see {log}")


def run(ctx: Context) -> list[Row]:
    label = MODEL_LABELS[MODEL]
    prepare(Path(ctx.models[MODEL].served), ctx.work_dir / "logs" / "litert-mobilenet.log")
    worker = ctx.bare_worker(MODEL)
    tf_server = ctx.function_server(MODEL)
    request = ctx.function_request(MODEL)
    servers: dict[str, ServerProcess] = {}
    samplers: dict[str, Callable[[], float]] = {"direct": worker.one}
    try:
        for flavour in FLAVOURS:
            ctx.log(f"starting the LiteRT {flavour} function with {label}")
            server = start_function(str(LITERT_OUT), ctx.work_dir / "logs",
                                    {"BACKEND": "litert", "LITERT_FLAVOUR": flavour,
                                     "LITERT_ALLOW_UNVERIFIED": "true"},
                                    name=f"function-litert-{flavour}")
            servers[flavour] = server
            server.wait_ready(request)
        classes = {"direct TF": worker.ready["top"]}
        for name, port in [("TF", tf_server.port)] + [(f, s.port) for f, s in servers.items()]:
            answer = json.loads(client.post_once(port, request, f"the {name} function"))
            classes[name] = answer["predictions"][0]["class_id"]
        samplers["tf"] = client.Sampler(tf_server.port, request, "TF")
        for flavour, server in servers.items():
            samplers[flavour] = client.Sampler(server.port, request, f"LiteRT {flavour}")
        p50: dict[str, list[float]] = {name: [] for name in samplers}
        count = ctx.plan.latency_requests[MODEL] // 2
        for i in range(ctx.plan.rounds):
            ctx.log(f"latency {label} under LiteRT: round {i + 1}/{ctx.plan.rounds}, "
                    f"{count} requests each, taking turns: {', '.join(samplers)}")
            taken = client.interleaved(samplers, count, ctx.plan.warmup if i == 0 else 0)
            for name, seconds in taken.items():
                p50[name].append(sorted(seconds)[len(seconds) // 2] * 1000)
        for flavour, server in servers.items():
            ctx.keep_memory(f"function litert {flavour} ({label}), warm", server.peak_rss(),
                            f"function in-process ({label}), warm")
    finally:
        for sampler in samplers.values():
            if isinstance(sampler, client.Sampler):
                sampler.close()
        for server in servers.values():
            server.stop()
    named = ", ".join(f"{k} {v}" for k, v in classes.items())
    tf_vs_direct = Paired.of(p50["tf"], p50["direct"])
    rows = []
    for flavour in FLAVOURS:
        paired = Paired.of(p50[flavour], p50["tf"])
        direct = Paired.of(p50[flavour], p50["direct"])
        rows.append(Row(2, f"warm latency {label}, LiteRT {flavour} function over HTTP p50",
                        paired.value, "ms", paired.baseline, "TF function over HTTP",
                        paired.ratio,
                        note=f"{direct.ratio:.2f}x the direct TF call "
                             f"({direct.baseline:.1f} ms; TF function "
                             f"{tf_vs_direct.ratio:.2f}x); classes: {named}",
                        detail={"rounds": paired.rounds, "p50_ms": p50}))
    return rows
