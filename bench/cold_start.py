"""Item 3: cold start, from spawning the process to the first 200, against a bare script.

Each round starts, one after the other and nothing else of ours running:

* the bare script (`bench.bare`): import TensorFlow, load the original
  SavedModel, call it once on a decoded tensor: the least any server must do;
* the bare script on the wrapped SavedModel, fed the JPEG: the same without a
  server, to tell what the in-graph decoding costs from what the server costs;
* the function as `make serve` starts it (`python -m functions.serving`, in-process
  backend), timed to the first 200 for a real JSON base64 request;
* the peer (``bentoml serve``, item 7), timed the same way to the first 200
  for the same photo, when its virtualenv can be had.

The peak memory of each is kept for item 6.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench import peer
from bench.client import BenchError
from bench.context import MODEL_LABELS, Context
from bench.direct import bare_argv, cold_start
from bench.report import Goal, Row, versus_peer
from bench.server import start_function
from bench.stats import Paired, median

MODEL = "mobilenet_v2"
GOAL = Goal("<=", 1.10)


def run(ctx: Context) -> list[Row]:
    model = ctx.models[MODEL]
    label = MODEL_LABELS[MODEL]
    image = ctx.image_file(MODEL)
    request = ctx.function_request(MODEL)
    bare_s, wrapped_s, ours_s = [], [], []
    bare_rss, wrapped_rss, ours_rss = [], [], []
    phases: dict[str, list[float]] = {"import_s": [], "load_s": [], "first_call_s": []}
    listening: list[float] = []
    worker_load: list[float] = []
    bentoml, peer_error = _peer_executable(ctx)
    peer_s: list[float] = []
    for i in range(ctx.plan.cold_starts):
        ctx.log(f"cold start {label}: round {i + 1}/{ctx.plan.cold_starts}")
        bare = cold_start(bare_argv(model, image))
        bare_s.append(bare.seconds)
        bare_rss.append(bare.peak_rss)
        for key in phases:
            phases[key].append(bare.ready[key])
        wrapped = cold_start(bare_argv(model, image, wrapped=True))
        wrapped_s.append(wrapped.seconds)
        wrapped_rss.append(wrapped.peak_rss)
        server = start_function(model.served, ctx.work_dir / "logs", name="function-cold")
        try:
            ours_s.append(server.wait_ready(request))
            ours_rss.append(server.peak_rss())
        finally:
            server.stop()
        if server.listening_after is not None:
            listening.append(server.listening_after)
        loaded = model_load_seconds(server.log.read_text(errors="replace"))
        if loaded is not None:
            worker_load.append(loaded)
        if bentoml is not None and peer_error is None:
            try:
                peer_s.append(_peer_cold_start(ctx, bentoml))
            except BenchError as exc:
                peer_error = str(exc)[:300]

    ours = Paired.of(ours_s, bare_s)
    wrapped_pair = Paired.of(wrapped_s, bare_s)
    breakdown = ", ".join(f"{k[:-2].replace('_', ' ')} {median(v):.2f} s"
                          for k, v in phases.items())
    bare_label = f"bare script ({label}), one call"
    ctx.keep_memory(bare_label, _median(bare_rss))
    ctx.keep_memory(f"bare script, wrapped model ({label}), one call", _median(wrapped_rss),
                    bare_label)
    ctx.keep_memory(f"function in-process ({label}), at first 200", _median(ours_rss),
                    bare_label)
    detail = {"rounds": ours.rounds, "ratio_min": ours.ratio_min, "ratio_max": ours.ratio_max,
              "ours_s": ours_s, "bare_s": bare_s, "wrapped_s": wrapped_s,
              "bare_phases_s": phases, "listening_s": listening,
              "worker_model_load_s": worker_load}
    function_phases = []
    if listening:
        function_phases.append(f"listening {median(listening):.2f} s")
    if worker_load:
        function_phases.append(f"worker's model load and warm-up {median(worker_load):.2f} s")
    peer_label = f"peer BentoML {label} cold start (spawn → first 200)"
    if peer_error is None and peer_s:
        theirs = Paired.of(peer_s[:len(bare_s)], bare_s[:len(peer_s)])
        peer_row = Row(7, peer_label, theirs.value, "s", theirs.baseline, "bare script",
                       theirs.ratio, note=f"ours {ours.value:.2f} s",
                       detail={"rounds": theirs.rounds, "peer_s": peer_s})
    else:
        peer_row = Row(7, peer_label, status="failed", note=peer_error or "no round ran")
    peer_rows = [peer_row]
    if peer_row.status == "ok":
        peer_rows.append(versus_peer(f"{label} cold start", ours_s, peer_s, "s",
                                     higher_is_better=False))
    return [
        *peer_rows,
        Row(3, f"cold start {label}, function in-process (spawn → first 200)", ours.value, "s",
            ours.baseline, "bare script", ours.ratio, GOAL,
            note=f"function: {', '.join(function_phases) or 'no phases logged'}; "
                 f"bare script: {breakdown}", detail=detail),
        Row(3, f"cold start {label}, bare script on the wrapped model (diagnostic)",
            wrapped_pair.value, "s", wrapped_pair.baseline, "bare script", wrapped_pair.ratio,
            note="in-graph JPEG decoding and resize, no server",
            detail={"rounds": wrapped_pair.rounds, "ratio_min": wrapped_pair.ratio_min,
                    "ratio_max": wrapped_pair.ratio_max}),
    ]


def _peer_executable(ctx: Context) -> tuple[Path | None, str | None]:
    """The peer's ``bentoml`` (installed on first use) and no error, or None and why."""
    try:
        bentoml, seconds = peer.ensure_venv(ctx.work_dir / "logs" / "peer-install.log", ctx.log)
    except peer.PeerUnavailable as exc:
        return None, str(exc)
    if seconds is not None:
        ctx.peer_install_seconds = seconds
    return bentoml, None


def _peer_cold_start(ctx: Context, bentoml: Path) -> float:
    """Seconds from spawning ``bentoml serve`` to its first 200 for the photo."""
    server = peer.start_peer(bentoml, ctx.models[MODEL], ctx.work_dir / "logs")
    try:
        return server.wait_ready(ctx.peer_request(MODEL))
    finally:
        server.stop()


_LOADED = re.compile(r"model .* loaded in (\d+(?:\.\d+)?) s")


def model_load_seconds(log_text: str) -> float | None:
    """The worker's own "model ... loaded in X s" (import, load, warm-up), from its log."""
    match = _LOADED.search(log_text)
    return float(match.group(1)) if match else None


def _median(values: list[int | None]) -> int | None:
    known = [v for v in values if v]
    return int(median(known)) if known else None
