"""The serving stack: functions-framework against the project's server, by their settings.

    python -m bench.serving_stack [--model digits|mobilenet_v2] [--rounds 3]
                                  [--requests 300] [--json PATH]

Cloud Functions (and Cloud Run from source) run ``functions-framework`` itself;
``make serve``, the container images and the tests run the project's gunicorn
(``python -m functions.serving``: a buffering worker, a request-line limit, memory
recycling). Both are gunicorn with one worker process and threads; this measures
what each costs per request and how they scale, with the same app and model:

* ``functions-framework`` with its defaults (1 worker, 4 threads per CPU);
* ``functions.serving`` with its defaults (the same counts), with ``THREADS=2``,
  and with ``WORKERS=2 THREADS=4`` (two processes, each loading the model).

Each round takes, server by server in turn: a sequential p50 (one keep-alive
client, requests taking turns across the servers), then bursts at concurrency 1,
4 and 8 (`bench.client.burst`). The table shows medians over rounds and each
server's peak resident memory (all its processes). The demo digits model by
default: it answers in under a millisecond, so the stack's own cost is what is
measured; ``--model mobilenet_v2`` shows it against a 15 ms model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import client
from bench.context import run_dir, sample_image
from bench.models import BenchModel
from bench.payloads import base64_json
from bench.server import ServerProcess, free_port, quiet_env, spawn
from bench.stats import median, percentile, throughput

MIB = 1024 * 1024
LEVELS = (1, 4, 8)


@dataclass(frozen=True)
class Stack:
    label: str
    module: str
    """``functions_framework`` or ``functions.serving``."""
    env: dict[str, str] = field(default_factory=dict)


STACKS = (
    Stack("functions-framework (1 worker, 8 threads)", "functions_framework"),
    Stack("functions.serving (1 worker, 8 threads)", "functions.serving"),
    Stack("functions.serving THREADS=2", "functions.serving", {"THREADS": "2"}),
    Stack("functions.serving WORKERS=2 THREADS=4", "functions.serving",
          {"WORKERS": "2", "THREADS": "4"}),
)


def start(stack: Stack, model_dir: str, log_dir: Path) -> ServerProcess:
    port = free_port()
    if stack.module == "functions_framework":
        argv = [str(Path(sys.executable).parent / "functions-framework"), "--target", "predict",
                "--host", client.HOST, "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "functions.serving", "--host", client.HOST,
                "--port", str(port)]
    env = quiet_env({"MODEL_URI": model_dir, **stack.env})
    return spawn(stack.label.split(" ")[0], argv, env, log_dir, port)


def measure(stacks: tuple[Stack, ...], model: BenchModel, rounds: int, requests: int,
            log: Callable[[str], None]) -> dict[str, dict]:
    work = run_dir() / time.strftime("stack-%Y%m%d-%H%M%S")
    request = client.Request("/", *_body(model))
    servers = {s.label: start(s, model.served, work / "logs") for s in stacks}
    results: dict[str, dict] = {s.label: {"p50_ms": [], **{f"c{c}": [] for c in LEVELS}}
                                for s in stacks}
    try:
        for label, server in servers.items():
            seconds = server.wait_ready(request)
            log(f"{label}: first 200 after {seconds:.1f} s")
        samplers: dict[str, Callable[[], float]] = {
            label: client.Sampler(s.port, request, label) for label, s in servers.items()}
        try:
            for r in range(rounds):
                log(f"round {r + 1}/{rounds}: {requests} sequential requests each, in turn")
                taken = client.interleaved(samplers, requests, 20 if r == 0 else 0)
                for label, times in taken.items():
                    results[label]["p50_ms"].append(percentile(times, 50) * 1000)
                for level in LEVELS:
                    for label, server in servers.items():
                        done = client.burst(server.port, request, level, requests, what=label)
                        results[label][f"c{level}"].append(throughput(done.requests,
                                                                      done.seconds))
        finally:
            for sampler in samplers.values():
                if isinstance(sampler, client.Sampler):
                    sampler.close()
        for label, server in servers.items():
            results[label]["peak_rss_mib"] = (server.peak_rss() or 0) / MIB
    finally:
        for server in servers.values():
            server.stop()
    return results


def _body(model: BenchModel) -> tuple[bytes, dict[str, str]]:
    payload = base64_json(sample_image(model))
    return payload.body, payload.headers


def format_table(results: dict[str, dict], model: str, rounds: int) -> str:
    lines = [f"Serving stack, {model} model, medians of {rounds} rounds",
             "", "| server | p50 | c=1 | c=4 | c=8 | peak RSS |", "|---|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} | {median(r['p50_ms']):.2f} ms | "
                     + " | ".join(f"{median(r[f'c{c}']):.0f} req/s" for c in LEVELS)
                     + f" | {r['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_stack",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("digits", "mobilenet_v2"), default="digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=0,
                        help="requests per measure (default: 300 for digits, 60 MobileNetV2)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from bench.context import build_models

    def log(message: str) -> None:
        print(f"[stack {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    model = build_models(log)[args.model]
    requests = args.requests or (300 if args.model == "digits" else 60)
    results = measure(STACKS, model, args.rounds, requests, log)
    print(format_table(results, args.model, args.rounds))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
