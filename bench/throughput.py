"""Item 4 (and 7's throughput): requests per second at concurrency 1, 4 and 8.

The baseline is the model's own sequential throughput: the direct call back
to back in `bench.bare`, measured right before each burst of the same size.
Each burst is a fixed number of requests shared by N client threads, timed
from the first send to the last answer.
"""

from __future__ import annotations

from bench import client, peer
from bench.client import Request
from bench.context import MODEL_LABELS, Context
from bench.report import Goal, Row
from bench.stats import Paired, throughput

MODELS = ("mobilenet_v2", "digits")
GOALS = {"mobilenet_v2": Goal(">=", 0.9)}
"""Goal for MobileNetV2. The digits model answers in well under a millisecond, faster
than any HTTP round trip on loopback: its rows show the adapter's own ceiling."""


def throughput_rows(group: int, label: str, levels: tuple[int, ...],
                    ours: dict[int, list[float]], direct: dict[int, list[float]],
                    goal: Goal | None, notes: dict[int, str] | None = None) -> list[Row]:
    """One row per concurrency level, from per-round req/s (pure: tested without servers)."""
    rows = []
    for level in levels:
        paired = Paired.of(ours[level], direct[level])
        rows.append(Row(group, f"{label} c={level}", paired.value, "req/s", paired.baseline,
                        "direct, sequential", paired.ratio, goal,
                        note=(notes or {}).get(level, ""),
                        detail={"rounds": paired.rounds, "ratio_min": paired.ratio_min,
                                "ratio_max": paired.ratio_max, "ours_rps": ours[level],
                                "direct_rps": direct[level]}))
    return rows


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in MODELS:
        rows += _measure(ctx, model)
    return rows


def _burst_rps(port: int, request: Request, level: int, count: int, what: str) -> float:
    result = client.burst(port, request, level, count, what=what)
    return throughput(result.requests, result.seconds)


def _measure(ctx: Context, model: str) -> list[Row]:
    plan = ctx.plan
    count = plan.throughput_requests[model]
    label = MODEL_LABELS[model]
    worker = ctx.bare_worker(model)
    server = ctx.function_server(model)
    request = ctx.function_request(model)
    peer_server, peer_error = None, ""
    if model == "mobilenet_v2":
        try:
            peer_server = ctx.peer_server()
        except peer.PeerUnavailable as exc:
            peer_error = str(exc)

    direct: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    ours: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    theirs: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    for i in range(plan.rounds):
        ctx.log(f"throughput {label}: round {i + 1}/{plan.rounds}, {count} requests per burst")
        for level in plan.concurrency:
            # The baseline right before each burst: drifts in the machine's load hit both.
            direct[level].append(throughput(count, worker.sequential_seconds(count)))
            ours[level].append(_burst_rps(server.port, request, level, count, "the function"))
            if peer_server is not None:
                theirs[level].append(_burst_rps(peer_server.port, ctx.peer_request(model),
                                                level, count, "the peer"))

    rows = throughput_rows(4, f"throughput {label}, function", plan.concurrency, ours, direct,
                           GOALS.get(model))
    if model == "mobilenet_v2":
        if peer_server is not None:
            ours_by_level = {level: row.value for level, row in zip(plan.concurrency, rows,
                                                                    strict=True)}
            rows += throughput_rows(7, f"peer BentoML {label} throughput", plan.concurrency,
                                    theirs, direct, None,
                                    notes={level: f"ours {ours_by_level[level]:.1f} req/s"
                                           for level in plan.concurrency})
        else:
            rows.append(Row(7, f"peer BentoML {label} throughput", status="failed",
                            note=peer_error))
    return rows
