"""Item 2 (and 7): a batch of 8 photos in one request, against one direct call on 8 images.

A client with several photos (a gallery upload) sends them in one request,
``{"images": ["<base64>", ...]}``; the function decodes them all and calls the
model once. The baseline is the model's concrete function called once on a
tensor of the same 8 images, already decoded (`bench.bare`). The peer gets
the same body at its ``/predict_batch`` API (`bench.peer_service`: one model
call too). The three take turns request by request, like the latency rows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace

from bench import client
from bench.client import BenchError, Request
from bench.context import MODEL_LABELS, Context
from bench.latency import latency_rows
from bench.report import Row
from bench.stats import Latency

MODEL = "mobilenet_v2"
BATCH = 8


def batch_body(image: bytes, count: int = BATCH) -> bytes:
    """``{"images": [...]}`` with ``count`` copies of the image in standard base64."""
    encoded = base64.b64encode(image).decode("ascii")
    return json.dumps({"images": [encoded] * count}, separators=(",", ":")).encode("ascii")


def check_function(body: bytes) -> None:
    doc = json.loads(body)
    if len(doc.get("predictions", ())) != BATCH:
        raise BenchError(f"the function answered {BATCH} images with {body[:200]!r}")


def check_peer(body: bytes) -> None:
    doc = json.loads(body)
    if not (isinstance(doc, list) and len(doc) == BATCH):
        raise BenchError(f"the peer answered {BATCH} images with {body[:200]!r}")


def run(ctx: Context) -> list[Row]:
    label = f"{MODEL_LABELS[MODEL]}, {BATCH} images in one request"
    worker = ctx.bare_worker(MODEL)
    server = ctx.function_server(MODEL)
    peer_server, peer_error = ctx.peer_for(MODEL)
    body = batch_body(ctx.image_file(MODEL).read_bytes())
    headers = {"Content-Type": "application/json"}
    count = max(10, ctx.plan.latency_requests[MODEL] // 4)

    def direct() -> float:
        return worker.batched(1, BATCH)[1]

    samplers: dict[str, Callable[[], float]] = {
        "direct": direct,
        "ours": client.Sampler(server.port, Request("/", body, headers, check=check_function),
                               "the function")}
    if peer_server is not None:
        samplers["peer"] = client.Sampler(
            peer_server.port, Request("/predict_batch", body, headers, check=check_peer),
            "the peer")
    rounds: dict[str, list[Latency]] = {name: [] for name in samplers}
    try:
        for i in range(ctx.plan.rounds):
            ctx.log(f"latency {label}: round {i + 1}/{ctx.plan.rounds}, {count} requests each")
            taken = client.interleaved(samplers, count, 3 if i == 0 else 0)
            for name, seconds in taken.items():
                rounds[name].append(Latency.of(seconds))
    finally:
        for sampler in samplers.values():
            if isinstance(sampler, client.Sampler):
                sampler.close()

    rows = latency_rows(2, f"warm latency {label}, function over HTTP", rounds["ours"],
                        rounds["direct"], None,
                        note=f"baseline: one direct call on a tensor of {BATCH} images")
    rows = [replace(r, baseline_label=f"direct call, {BATCH} images") for r in rows]
    if "peer" in rounds:
        ours_p = {"p50": rows[0].value, "p99": rows[1].value}
        rows += [replace(r, baseline_label=f"direct call, {BATCH} images",
                         note=f"ours {ours_p[r.label[-3:]]:.1f} ms")
                 for r in latency_rows(7, f"peer BentoML {label} latency", rounds["peer"],
                                       rounds["direct"], None)]
    else:
        rows.append(Row(7, f"peer BentoML {label} latency", status="failed", note=peer_error))
    return rows
