"""Item 2 (and 7's latency): warm latency over loopback HTTP against the direct call.

Each round times, taking turns request by request: the model's concrete
function called directly on the already-decoded tensor (in `bench.bare`), the
same photo sent as ``wx.request`` sends it (JSON base64) through the real
function over HTTP, and for MobileNetV2 the peer server. Taking turns keeps
the comparison fair on a machine whose other load comes and goes: whatever
slows one side for a second slows the others too. p50 and p99 are taken per round; the
table shows the median over rounds, and each ratio is the median of the
per-round ratios. Before timing, the answers are compared: the function, the
peer and the direct call must name the same class.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from bench import client, peer
from bench.client import BenchError, Request
from bench.context import MODEL_LABELS, Context
from bench.report import Goal, Row
from bench.server import ROOT, quiet_env
from bench.stats import Latency, Paired

MODELS = ("mobilenet_v2", "digits")
GOALS = {"mobilenet_v2": Goal("<=", 1.05)}
"""The issue's goal is for MobileNetV2; digits shows what the adapter costs on a model
that takes well under a millisecond, where any HTTP round trip is a large ratio."""


def latency_rows(group: int, label: str, ours: list[Latency], direct: list[Latency],
                 goal: Goal | None, note: str = "") -> list[Row]:
    """p50 and p99 rows from per-round summaries (pure: tested without servers)."""
    rows = []
    for stat in ("p50", "p99"):
        paired = Paired.of([getattr(r, stat) * 1000 for r in ours],
                           [getattr(r, stat) * 1000 for r in direct])
        rows.append(Row(group, f"{label} {stat}", paired.value, "ms", paired.baseline,
                        "direct call", paired.ratio, goal, note=note,
                        detail={"rounds": paired.rounds, "ratio_min": paired.ratio_min,
                                "ratio_max": paired.ratio_max,
                                "requests_per_round": ours[0].count,
                                "ours_ms": [getattr(r, stat) * 1000 for r in ours],
                                "direct_ms": [getattr(r, stat) * 1000 for r in direct]}))
    return rows


HEALTH = Request("/healthz", b"", {}, method="GET")
"""The HTTP floor: a round trip through the same server that runs no model."""


def floor_row(label: str, floor: list[Latency], ours: list[Latency]) -> Row:
    """The HTTP floor's p50, as a share of the function's p50 (pure)."""
    paired = Paired.of([r.p50 * 1000 for r in floor], [r.p50 * 1000 for r in ours])
    return Row(2, f"{label}: where the time goes: HTTP round trip alone (GET /healthz)",
               paired.value, "ms", paired.baseline, "function p50", paired.ratio,
               note="gunicorn, Flask, functions-framework, loopback: no model, no body",
               detail={"rounds": paired.rounds, "p50_ms": [r.p50 * 1000 for r in floor]})


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in MODELS:
        rows += _measure(ctx, model)
    return rows


def _measure(ctx: Context, model: str) -> list[Row]:
    plan = ctx.plan
    count = plan.latency_requests[model]
    label = MODEL_LABELS[model]
    worker = ctx.bare_worker(model)
    server = ctx.function_server(model)
    peer_server, peer_error = None, ""
    if model == "mobilenet_v2":
        try:
            peer_server = ctx.peer_server()
        except peer.PeerUnavailable as exc:
            peer_error = str(exc)
    agree = _agreement(ctx, model, worker.ready, server.port,
                       peer_server.port if peer_server else None)

    samplers: dict[str, Callable[[], float]] = {
        "direct": worker.one,
        "ours": client.Sampler(server.port, ctx.function_request(model), "the function"),
        "floor": client.Sampler(server.port, HEALTH, "the function's /healthz")}
    if peer_server is not None:
        samplers["peer"] = client.Sampler(peer_server.port, ctx.peer_request(model),
                                          "the peer")
    rounds: dict[str, list[Latency]] = {name: [] for name in samplers}
    try:
        for i in range(plan.rounds):
            ctx.log(f"latency {label}: round {i + 1}/{plan.rounds}, {count} requests each, "
                    f"taking turns: {', '.join(samplers)}")
            taken = client.interleaved(samplers, count, plan.warmup if i == 0 else 0)
            for name, seconds in taken.items():
                rounds[name].append(Latency.of(seconds))
    finally:
        for sampler in samplers.values():
            if isinstance(sampler, client.Sampler):
                sampler.close()

    rows = latency_rows(2, f"warm latency {label}, function over HTTP", rounds["ours"],
                        rounds["direct"], GOALS.get(model), note=agree)
    rows.append(floor_row(label, rounds["floor"], rounds["ours"]))
    if model == "mobilenet_v2":
        if "peer" in rounds:
            peer_rows = latency_rows(7, f"peer BentoML {label} latency", rounds["peer"],
                                     rounds["direct"], None)
            ours_p = {"p50": rows[0].value, "p99": rows[1].value}
            rows += [_with_note(r, f"ours {ours_p[r.label[-3:]]:.1f} ms") for r in peer_rows]
        else:
            rows.append(Row(7, f"peer BentoML {label} latency", status="failed",
                            note=peer_error))
        rows += _breakdown(ctx, model)
    return rows


BREAKDOWN = (
    ("graph", "where the time goes: wrapped model on the JPEG bytes, no server",
     "adds the in-graph decode, resize and normalisation"),
    ("backend", "where the time goes: + InProcessBackend.predict",
     "adds numpy to tensor and back"),
    ("app", "where the time goes: + App.handle (no HTTP)",
     "adds parsing, EXIF check, top-5, JSON, request logs"),
    ("preprocess", "where the time goes: the preprocessing graph alone",
     "decode, resize, normalise of one 224x224 JPEG"),
)


def breakdown_rows(label: str, p50_ms: dict[str, list[float]]) -> list[Row]:
    """Diagnostic rows from `bench.breakdown`'s per-round p50s (pure)."""
    rows = []
    for stage, title, note in BREAKDOWN:
        paired = Paired.of(p50_ms[stage], p50_ms["direct"])
        rows.append(Row(2, f"{label}: {title}", paired.value, "ms", paired.baseline,
                        "direct call", paired.ratio, note=note,
                        detail={"rounds": paired.rounds, "ratio_min": paired.ratio_min,
                                "ratio_max": paired.ratio_max, "p50_ms": p50_ms[stage]}))
    return rows


def _breakdown(ctx: Context, model: str) -> list[Row]:
    """Run `bench.breakdown` in a child process (it loads TensorFlow) and turn it into rows."""
    m = ctx.models[model]
    count = max(20, ctx.plan.latency_requests[model] // 2)
    ctx.log(f"latency {MODEL_LABELS[model]}: where the time goes, {ctx.plan.rounds} rounds "
            f"of {count} calls per layer")
    log = ctx.work_dir / "logs" / f"breakdown-{model}.log"
    with log.open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-m", "bench.breakdown", m.original, m.served,
             "--image", str(ctx.image_file(model)), "--input", m.input_name,
             "--count", str(count), "--rounds", str(ctx.plan.rounds)],
            cwd=ROOT, env=quiet_env({}), stdout=subprocess.PIPE, stderr=err, timeout=900,
            check=False)
    if done.returncode != 0:
        raise BenchError(f"bench.breakdown failed ({done.returncode}); see {log}")
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return breakdown_rows(MODEL_LABELS[model], result["p50_ms"])


def _with_note(row: Row, note: str) -> Row:
    from dataclasses import replace

    return replace(row, note=note)


def _agreement(ctx: Context, model: str, ready: dict, port: int,
               peer_port: int | None) -> str:
    """Check the function (and the peer) name the class the direct call names."""
    ours = json.loads(client.post_once(port, ctx.function_request(model), "the function"))
    ours_class = ours["predictions"][0]["class_id"]
    classes = {"direct": ready["top"], "function": ours_class}
    if peer_port is not None:
        theirs = json.loads(client.post_once(peer_port, ctx.peer_request(model), "the peer"))
        classes["peer"] = theirs["class_id"]
    if len(set(classes.values())) != 1:
        raise BenchError(f"{MODEL_LABELS[model]}: the answers disagree: {classes}")
    return f"all answer class {ready['top']}"
