"""Item 4 (and 7's throughput): requests per second at concurrency 1, 4 and 8.

The baseline is the model's own best throughput on this machine, not one
sequential caller: in every burst the bare process (`bench.bare`) runs the
concrete function back to back, from 2, 4 and 8 threads at once, and on
tensors of 8 images (from one thread) and of 4 and 8 images from two threads
at once. At concurrency 1 the function is compared with the model called back
to back (one caller can do no better); at 4 and 8 with the best of all those
ways of calling the model, batching included, in the same round. Every
TensorFlow process runs with the intra-op threads the function picks
(`bench.server.tf_threads_env`).

A burst is a fixed number of requests shared by N client threads, timed from
the first send to the last answer. Within a round, short bursts take turns
(direct ways, function, peer, direct ways, ...) and each side's throughput is
its requests over its summed seconds, so a second of someone else's load on the
machine lands on every side alike.

The load generator (this process's client threads) runs on the same 2 cores as
the server. Its CPU time during the function's bursts is counted
(`time.process_time`, every thread of this process) and shown in each row's
note as a share of the cores, so a reader can tell how much of the machine the
client took from the server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

from bench import client
from bench.context import MODEL_LABELS, Context
from bench.report import Goal, Row, versus_peer
from bench.stats import Paired, median, throughput

MODELS = ("mobilenet_v2", "digits")
GOALS = {"mobilenet_v2": Goal(">=", 0.85)}
"""Goal for MobileNetV2. The digits model answers in well under a millisecond, faster
than any HTTP round trip on loopback: its rows show the adapter's own ceiling."""
DIRECT_THREADS = (2, 4, 8)
"""Threads calling the model at once, beside the sequential caller."""
DIRECT_BATCHES = ((8, 1), (4, 2), (8, 2))
"""Batched direct ways: (images per call, threads calling at once). On 2 cores with one
intra-op thread a call keeps one core busy, so batches from two threads are the model's
best (about 150 images/s for MobileNetV2 224 here, against 75 from one thread)."""


@dataclass
class Tally:
    """Requests and seconds summed over a round's bursts, and the client's CPU seconds."""

    requests: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0

    def add(self, requests: int, seconds: float, client_cpu: float = 0.0) -> None:
        self.requests += requests
        self.seconds += seconds
        self.client_cpu += client_cpu

    def rate(self) -> float:
        return throughput(self.requests, self.seconds)


@dataclass
class DirectWays:
    """Per-round throughput of each way of calling the model directly."""

    by_way: dict[str, list[float]] = field(default_factory=dict)

    def keep(self, way: str, value: float) -> None:
        self.by_way.setdefault(way, []).append(value)

    def sequential(self) -> list[float]:
        return self.by_way["sequential"]

    def best(self) -> list[float]:
        """Each round's best way (the model's best throughput in that round)."""
        rounds = len(self.sequential())
        return [max(values[i] for values in self.by_way.values()) for i in range(rounds)]

    def best_way(self) -> str:
        return max(self.by_way, key=lambda way: median(self.by_way[way]))


def direct_way_label(way: str) -> str:
    if way == "sequential":
        return "1 thread, sequential"
    if way.startswith("threads"):
        return f"{way.removeprefix('threads')} threads at once"
    size, _, threads = way.removeprefix("batch").partition("x")
    return f"batches of {size} images" + (f" from {threads} threads at once" if threads else "")


def throughput_rows(group: int, label: str, levels: tuple[int, ...],
                    ours: dict[int, list[float]], direct: dict[int, list[float]],
                    goal: Goal | None, notes: dict[int, str] | None = None,
                    baseline_labels: dict[int, str] | None = None) -> list[Row]:
    """One row per concurrency level, from per-round req/s (pure: tested without servers)."""
    rows = []
    for level in levels:
        paired = Paired.of(ours[level], direct[level])
        rows.append(Row(group, f"{label} c={level}", paired.value, "req/s", paired.baseline,
                        (baseline_labels or {}).get(level, "direct, sequential"), paired.ratio,
                        goal, note=(notes or {}).get(level, ""),
                        detail={"rounds": paired.rounds, "ratio_min": paired.ratio_min,
                                "ratio_max": paired.ratio_max, "ours_rps": ours[level],
                                "direct_rps": direct[level]}))
    return rows


def baselines(levels: tuple[int, ...], ways: DirectWays) -> tuple[dict[int, list[float]],
                                                                  dict[int, str]]:
    """Per level, the per-round baseline and its label: the sequential call at concurrency
    1, the model's best way at higher concurrency (pure)."""
    best_label = f"direct, best way ({direct_way_label(ways.best_way())})"
    values = {level: ways.sequential() if level == 1 else ways.best() for level in levels}
    labels = {level: "direct, sequential" if level == 1 else best_label for level in levels}
    return values, labels


def direct_rows(label: str, ways: DirectWays) -> list[Row]:
    """The model's throughput called each way, against its sequential throughput (pure)."""
    rows = []
    for way, values in ways.by_way.items():
        if way == "sequential":
            continue
        paired = Paired.of(values, ways.sequential())
        unit_note = "images/s" if way.startswith("batch") else "calls/s"
        rows.append(Row(4, f"throughput {label}, direct call, {direct_way_label(way)}",
                        paired.value, "req/s", paired.baseline, "direct, sequential",
                        paired.ratio, note=f"{unit_note}; the model alone, no HTTP",
                        detail={"rounds": paired.rounds, "rps": values}))
    return rows


def client_share(tally: Tally, cores: int) -> float:
    """The load generator's CPU as a share of the machine during the bursts (pure)."""
    return tally.client_cpu / (tally.seconds * cores) if tally.seconds > 0 else 0.0


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in MODELS:
        rows += _measure(ctx, model)
    return rows


def _timed_burst(tally: Tally, port: int, request: client.Request, level: int, count: int,
                 what: str) -> None:
    cpu = time.process_time()
    result = client.burst(port, request, level, count, what=what)
    tally.add(result.requests, result.seconds, time.process_time() - cpu)


def _direct_burst(ctx: Context, model: str, count: int, tallies: dict[str, Tally]) -> None:
    worker = ctx.bare_worker(model)
    tallies.setdefault("sequential", Tally()).add(count, worker.sequential_seconds(count))
    for threads in DIRECT_THREADS:
        tallies.setdefault(f"threads{threads}", Tally()).add(
            count, worker.threaded_seconds(count, threads))
    for size, threads in DIRECT_BATCHES:
        images, seconds = worker.batched(max(threads, count // size), size, threads)
        way = f"batch{size}" + (f"x{threads}" if threads > 1 else "")
        tallies.setdefault(way, Tally()).add(images, seconds)


def _measure(ctx: Context, model: str) -> list[Row]:
    plan = ctx.plan
    count = plan.throughput_requests[model]
    label = MODEL_LABELS[model]
    server = ctx.function_server(model)
    request = ctx.function_request(model)
    peer_server, peer_error = ctx.peer_for(model)
    cores = os.cpu_count() or 1

    ways = DirectWays()
    ours: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    theirs: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    shares: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    cpu_per_request: dict[int, list[float]] = {level: [] for level in plan.concurrency}
    for i in range(plan.rounds):
        ctx.log(f"throughput {label}: round {i + 1}/{plan.rounds}, {plan.throughput_bursts} "
                f"bursts of {count} requests per level and direct way, taking turns")
        direct: dict[str, Tally] = {}
        mine = {level: Tally() for level in plan.concurrency}
        peer = {level: Tally() for level in plan.concurrency}
        for _ in range(plan.throughput_bursts):
            # Short bursts taking turns: drifts in the machine's load hit every side.
            _direct_burst(ctx, model, count, direct)
            for level in plan.concurrency:
                _timed_burst(mine[level], server.port, request, level, count, "the function")
                if peer_server is not None:
                    _timed_burst(peer[level], peer_server.port, ctx.peer_request(model),
                                 level, count, "the peer")
        for way, tally in direct.items():
            ways.keep(way, tally.rate())
        for level in plan.concurrency:
            ours[level].append(mine[level].rate())
            shares[level].append(client_share(mine[level], cores))
            cpu_per_request[level].append(mine[level].client_cpu / mine[level].requests)
            if peer_server is not None:
                theirs[level].append(peer[level].rate())

    base, base_labels = baselines(plan.concurrency, ways)
    notes = {level: f"load generator: {median(shares[level]) * 100:.0f} % of {cores} cores, "
                    f"{median(cpu_per_request[level]) * 1e6:.0f} µs CPU a request"
             for level in plan.concurrency}
    rows = throughput_rows(4, f"throughput {label}, function", plan.concurrency, ours, base,
                           GOALS.get(model), notes=notes, baseline_labels=base_labels)
    rows = [replace(row, detail={**row.detail, "client_cpu_share": shares[level],
                                 "client_cpu_s_per_request": cpu_per_request[level],
                                 "direct_ways_rps": ways.by_way})
            for row, level in zip(rows, plan.concurrency, strict=True)]
    ours_by_level = {level: row.value for level, row in zip(plan.concurrency, rows,
                                                            strict=True)}
    rows += direct_rows(label, ways)
    if model == "mobilenet_v2":
        if peer_server is not None:
            rows += throughput_rows(7, f"peer BentoML {label} throughput", plan.concurrency,
                                    theirs, base, None,
                                    notes={level: f"ours {ours_by_level[level]:.1f} req/s"
                                           for level in plan.concurrency},
                                    baseline_labels=base_labels)
            rows.append(versus_peer(f"{label} throughput c={plan.concurrency[0]}",
                                    ours[plan.concurrency[0]], theirs[plan.concurrency[0]],
                                    "req/s", higher_is_better=True))
        else:
            rows.append(Row(7, f"peer BentoML {label} throughput", status="failed",
                            note=peer_error))
    return rows
