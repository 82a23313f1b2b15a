"""Item 2 (and 7's latency): warm latency over loopback HTTP against the direct call.

Each round times, taking turns request by request: the model's concrete
function called directly on the already-decoded tensor (in `bench.bare`), the
same photo sent as ``wx.request`` sends it (JSON base64) through the real
function over HTTP, a ``GET /healthz`` to the same server (the HTTP floor),
and for MobileNetV2 the peer server. Taking turns keeps the comparison fair on
a machine whose other load comes and goes: whatever slows one side for a
second slows the others too. p50 and p99 are taken per round; the table shows
the median over rounds, and each ratio is the median of the per-round ratios.
Before timing, the answers are compared: the function, the peer and the direct
call must name the same class.

For MobileNetV2, `bench.breakdown` then splits the function's own cost into
layers, in one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace

from bench import client
from bench.client import BenchError, Request
from bench.context import MODEL_LABELS, Context
from bench.direct import BareWorker, bare_argv
from bench.report import Goal, Row, versus_peer
from bench.server import ROOT, quiet_env, start_function, tf_threads_env
from bench.stats import Latency, Paired, median

MODELS = ("mobilenet_v2", "digits")
GOALS = {"mobilenet_v2": Goal("<=", 1.10)}
"""The latency goal is for MobileNetV2; digits shows what the adapter costs on a model
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
               note="python -m functions.serving (gunicorn, the plain WSGI binding), loopback: "
                    "no model, no body",
               detail={"rounds": paired.rounds, "p50_ms": [r.p50 * 1000 for r in floor]})


def tf_default_row(label: str, default: list[Latency], direct: list[Latency]) -> Row:
    """The direct call on TensorFlow's default intra-op threads, against the direct call on
    the function's setting (a diagnostic of what INTRA_OP_THREADS gives; pure)."""
    paired = Paired.of([r.p50 * 1000 for r in default], [r.p50 * 1000 for r in direct])
    return Row(2, f"{label}: direct call p50 on TensorFlow's default intra-op threads",
               paired.value, "ms", paired.baseline,
               f"direct call, {tf_threads_env()['TF_NUM_INTRAOP_THREADS']} intra-op thread(s)",
               paired.ratio, note="what the function's INTRA_OP_THREADS default saves here; "
               "every other row runs all sides on the function's setting",
               detail={"rounds": paired.rounds, "p50_ms": [r.p50 * 1000 for r in default]})


def _tf_default_worker(ctx: Context, model: str) -> BareWorker | None:
    """A second bare process on TensorFlow's own default threads (MobileNetV2 only)."""
    if model != "mobilenet_v2":
        return None
    env = {k: v for k, v in quiet_env({}).items() if k != "TF_NUM_INTRAOP_THREADS"}
    ctx.log(f"starting a bare {MODEL_LABELS[model]} process on TensorFlow's default threads")
    return BareWorker(bare_argv(ctx.models[model], ctx.image_file(model), serve=True),
                      ctx.work_dir / "logs" / f"bare-{model}-tf-default.log", env)


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
    peer_server, peer_error = ctx.peer_for(model)
    agree = _agreement(ctx, model, worker.ready, server.port,
                       peer_server.port if peer_server else None)

    samplers: dict[str, Callable[[], float]] = {
        "direct": worker.one,
        "ours": client.Sampler(server.port, ctx.function_request(model), "the function"),
        "floor": client.Sampler(server.port, HEALTH, "the function's /healthz")}
    if peer_server is not None:
        samplers["peer"] = client.Sampler(peer_server.port, ctx.peer_request(model),
                                          "the peer")
    tf_default = _tf_default_worker(ctx, model) if tf_threads_env() else None
    if tf_default is not None:
        samplers["direct_tf_default"] = tf_default.one
    framework = None
    if model == "mobilenet_v2":  # what Cloud Functions runs: the same App inside Flask
        ctx.log("starting the function under functions-framework's own server")
        framework = start_function(ctx.models[model].served, ctx.work_dir / "logs",
                                   name=f"function-ff-{model}", server="functions-framework")
        framework.wait_ready(ctx.function_request(model))
        samplers["ours_ff"] = client.Sampler(framework.port, ctx.function_request(model),
                                             "the function under functions-framework")
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
        if tf_default is not None:
            tf_default.close()
        if framework is not None:
            framework.stop()

    rows = latency_rows(2, f"warm latency {label}, function over HTTP", rounds["ours"],
                        rounds["direct"], GOALS.get(model), note=agree)
    rows.append(floor_row(label, rounds["floor"], rounds["ours"]))
    if "ours_ff" in rounds:
        ff = latency_rows(2, f"warm latency {label}, under functions-framework (Cloud "
                          "Functions)", rounds["ours_ff"], rounds["direct"], None)[0]
        rows.append(replace(ff, note="the same App inside Flask, functions-framework's own "
                                     f"server; python -m functions.serving: "
                                     f"{rows[0].value:.1f} ms"))
    if "direct_tf_default" in rounds:
        rows.append(tf_default_row(label, rounds["direct_tf_default"], rounds["direct"]))
    if model == "mobilenet_v2":
        if "peer" in rounds:
            peer_rows = latency_rows(7, f"peer BentoML {label} latency", rounds["peer"],
                                     rounds["direct"], None)
            ours_p = {"p50": rows[0].value, "p99": rows[1].value}
            rows += [replace(r, note=f"ours {ours_p[r.label[-3:]]:.1f} ms") for r in peer_rows]
            rows.append(versus_peer(f"{label} warm p50",
                                    [r.p50 * 1000 for r in rounds["ours"]],
                                    [r.p50 * 1000 for r in rounds["peer"]], "ms",
                                    higher_is_better=False))
        else:
            rows.append(Row(7, f"peer BentoML {label} latency", status="failed",
                            note=peer_error))
        rows += _breakdown(ctx, model)
    return rows


BREAKDOWN = (
    ("constants", "direct", "weights as constants (modelprep wrap's freeze)",
     "the original with its variables frozen, minus the original, both on the decoded tensor"),
    ("graph", "weights", "in-graph decode, resize, normalise",
     "the wrapped model on the JPEG bytes minus the original on the decoded tensor, its "
     "weights held as the wrapped model holds them ({weights})"),
    ("backend", "graph", "InProcessBackend (numpy to tensor and back)",
     "InProcessBackend.predict minus the bare wrapped call"),
    ("app", "backend", "App.handle (parse, EXIF check, top-5, JSON)",
     "App.handle on the JSON request minus InProcessBackend.predict; its log line and "
     "metrics untimed, written after the answer as the servers do"),
)


def breakdown_rows(label: str, p50_ms: dict[str, list[float]],
                   weights: str = "variables") -> list[Row]:
    """What each layer adds, from `bench.breakdown`'s per-round p50s (pure).

    A layer's cost is the difference between its stage and the one below,
    taken within each round (the stages took turns call by call) and then the
    median over rounds; the ratio is that cost as a share of the direct call.
    Noise can make a small cost come out negative: that says it is below what
    this machine can resolve. Freezing the weights is a saving: negative.
    """
    rows = []
    direct = median(p50_ms["direct"])
    for stage, below, title, how in BREAKDOWN:
        if below == "weights":
            below = "constants" if weights == "constants" else "direct"
            how = how.format(weights=weights)
        costs = [a - b for a, b in zip(p50_ms[stage], p50_ms[below], strict=True)]
        cost = median(costs)
        rows.append(Row(2, f"{label}: where the time goes: {title}", cost, "ms", direct,
                        "direct call", cost / direct, note=how,
                        detail={"rounds": len(costs), "cost_ms": costs,
                                "p50_ms": p50_ms[stage]}))
    pre = median(p50_ms["preprocess"])
    rows.append(Row(2, f"{label}: where the time goes: the preprocessing graph called alone",
                    pre, "ms", direct, "direct call", pre / direct,
                    note="one 224x224 JPEG through its own tf.function, call overhead included",
                    detail={"p50_ms": p50_ms["preprocess"]}))
    return rows


def _breakdown(ctx: Context, model: str) -> list[Row]:
    """Run `bench.breakdown` in a child process (it loads TensorFlow) and turn it into rows."""
    m = ctx.models[model]
    count = max(20, ctx.plan.latency_requests[model] // 2)
    ctx.log(f"latency {MODEL_LABELS[model]}: where the time goes, {ctx.plan.rounds} rounds "
            f"of {count} calls per layer")
    log = ctx.work_dir / "logs" / f"breakdown-{model}.log"
    title = f"{MODEL_LABELS[model]}: where the time goes"
    try:
        with log.open("wb") as err:
            done = subprocess.run(
                [sys.executable, "-m", "bench.breakdown", m.original, m.served,
                 "--image", str(ctx.image_file(model)), "--input", m.input_name,
                 "--count", str(count), "--rounds", str(ctx.plan.rounds)],
                cwd=ROOT, env=quiet_env({}), stdout=subprocess.PIPE, stderr=err, timeout=900,
                check=False)
    except subprocess.TimeoutExpired:
        return [Row(2, title, status="failed", note=f"bench.breakdown ran over 900 s; see {log}")]
    if done.returncode != 0:
        return [Row(2, title, status="failed",
                    note=f"bench.breakdown exited {done.returncode}; see {log}")]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return breakdown_rows(MODEL_LABELS[model], result["p50_ms"], result["weights"])


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
