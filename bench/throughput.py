"""Item 4 (and 7's throughput): requests per second at concurrency 1, 4 and 8.

The baseline is the model's own sequential throughput: the direct call back
to back in `bench.bare`. A burst is a fixed number of requests shared by N
client threads, timed from the first send to the last answer. Within a round,
short bursts take turns (direct, function, peer, direct, ...) and each side's
throughput is its requests over its summed seconds, so a second of someone
else's load on the machine lands on every side alike.
"""

from __future__ import annotations

from bench import client
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


def _add(tally: list, burst: client.Burst) -> None:
    tally[0] += burst.requests
    tally[1] += burst.seconds


def _measure(ctx: Context, model: str) -> list[Row]:
    plan = ctx.plan
    count = plan.throughput_requests[model]
    label = MODEL_LABELS[model]
    worker = ctx.bare_worker(model)
    server = ctx.function_server(model)
    request = ctx.function_request(model)
    peer_server, peer_error = ctx.peer_for(model)

    direct: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    ours: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    theirs: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    for i in range(plan.rounds):
        ctx.log(f"throughput {label}: round {i + 1}/{plan.rounds}, {plan.throughput_bursts} "
                f"bursts of {count} requests per level, taking turns")
        for level in plan.concurrency:
            tally = {"direct": [0, 0.0], "ours": [0, 0.0], "peer": [0, 0.0]}
            for _ in range(plan.throughput_bursts):
                # Short bursts taking turns: drifts in the machine's load hit every side.
                tally["direct"][0] += count
                tally["direct"][1] += worker.sequential_seconds(count)
                _add(tally["ours"], client.burst(server.port, request, level, count,
                                                 what="the function"))
                if peer_server is not None:
                    _add(tally["peer"], client.burst(peer_server.port, ctx.peer_request(model),
                                                     level, count, what="the peer"))
            direct[level].append(throughput(*tally["direct"]))
            ours[level].append(throughput(*tally["ours"]))
            if peer_server is not None:
                theirs[level].append(throughput(*tally["peer"]))

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
