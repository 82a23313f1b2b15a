"""One command for every figure: run the row groups, print a markdown table, write JSON.

    .venv/bin/python -m bench              # the full run, about 10 minutes on 2 cores
    .venv/bin/python -m bench --quick      # fewer rounds and requests, about 4 minutes
    .venv/bin/python -m bench --only 1,3   # some items of the table only
    .venv/bin/python -m bench --group batch_request,litert_latency   # some modules only

Progress goes to stderr; the table to stdout and, with the JSON of every row
(per-round values included), to ``bench/results/``. Exit status: 0 when every
group ran, 1 when one failed (its row says why), 2 with ``--check`` when a
goal was missed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench import procs
from bench.context import Context, Plan, build_models, run_dir
from bench.registry import GROUPS, Group, modules, select
from bench.report import Row, markdown_table, summary_lines

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and requests: same method, wider spread")
    parser.add_argument("--only", type=_numbers, default=None, metavar="N,N",
                        help="run only these items of the table (1-7)")
    parser.add_argument("--group", default="", metavar="MODULE,MODULE",
                        help="run only the groups of these bench modules (e.g. throughput)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR,
                        help="where to write the JSON and markdown (default: bench/results)")
    parser.add_argument("--check", action="store_true", help="exit 2 when a goal is missed")
    return parser.parse_args(argv)


def _numbers(value: str) -> set[int]:
    try:
        numbers = {int(v) for v in value.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected item numbers like 1,3, got {value!r}") \
            from None
    if not numbers or not numbers <= {1, 2, 3, 4, 5, 6, 7}:
        raise argparse.ArgumentTypeError(f"items are numbered 1 to 7, got {value!r}")
    return numbers


def run_groups(ctx: Context, groups: tuple[Group, ...]) -> tuple[list[Row], list[str]]:
    """Every group's rows; a group that fails gives one failed row and the run goes on."""
    rows: list[Row] = []
    failures: list[str] = []
    for group in groups:
        if not group.available():
            rows.append(group.pending_row())
            continue
        started = time.monotonic()
        _log(f"item {group.number}: {group.title}")
        try:
            rows += group.load()(ctx)
        except Exception as exc:  # one broken group must not cost the others' figures
            _log(f"item {group.number} failed:\n{traceback.format_exc()}")
            rows.append(Row(group.number, group.title, status="failed",
                            note=f"{type(exc).__name__}: {str(exc).strip()[:300]}"))
            failures.append(group.title)
        _log(f"item {group.number} took {time.monotonic() - started:.0f} s")
    return rows, failures


def header(command: str, machine: procs.Machine, started: datetime, seconds: float,
           load: tuple[tuple[float, float, float], tuple[float, float, float]],
           quick: bool) -> str:
    before, after = load
    return (f"Bench of {started.strftime('%Y-%m-%d %H:%M UTC')}, `{command}`"
            f"{' (quick)' if quick else ''}, {seconds / 60:.1f} min\n"
            f"Machine: {machine.describe()}; load average {before[0]:.2f} before, "
            f"{after[0]:.2f} after\n")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (
        sys.argv[1:] if argv is None else argv))
    started_at = datetime.now(timezone.utc)
    started = time.monotonic()
    load_before = procs.load_average()
    machine = procs.machine()
    plan = Plan.for_run(args.quick)
    work_dir = run_dir() / started_at.strftime("%Y%m%d-%H%M%S")
    work_dir.mkdir(parents=True, exist_ok=True)
    models = build_models(_log)
    ctx = Context(plan=plan, models=models, work_dir=work_dir, log=_log)
    try:
        rows, failures = run_groups(ctx, select(args.only, modules(args.group)))
    finally:
        ctx.close()
    seconds = time.monotonic() - started
    load = (load_before, procs.load_average())
    text = header(command.strip(), machine, started_at, seconds, load, plan.quick) + "\n" \
        + markdown_table(rows)
    notes = summary_lines(rows)
    if notes:
        text += "\n" + "\n".join(f"- {line}" for line in notes) + "\n"
    print(text)
    path = write_results(args.results, started_at, {
        "date": started_at.isoformat(timespec="seconds"),
        "command": command.strip(),
        "seconds": round(seconds, 1),
        "machine": machine.__dict__,
        "load_average": {"before": load_before, "after": load[1]},
        "plan": plan.__dict__,
        "peer_install_seconds": ctx.peer_install_seconds,
        "rows": [row.to_dict() for row in rows],
        "markdown": text,
    })
    _log(f"wrote {path}")
    if failures:
        return 1
    if args.check and any(row.met is False for row in rows):
        return 2
    return 0


def write_results(directory: Path, started_at: datetime, doc: dict) -> Path:
    """``bench-<time>.json`` plus ``latest.json`` and ``latest.md`` beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{started_at.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(doc, indent=2, default=list) + "\n"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    (directory / "latest.md").write_text(doc["markdown"])
    return path


__all__ = ["GROUPS", "main"]
