"""Rows measured by other scripts in ``bench/``, run as child processes.

A script joins the table with one `Script` line in `SCRIPTS` below and a line in
`bench.registry`. It is run as ``python -m bench.NAME ARGS`` from the project
root, with ``BENCH_RESULT`` set to a file path, ``BENCH_QUICK=1`` for a short
run and ``BENCH_WORK_DIR`` a directory it may use. Its figures are read in the
first of these ways that works:

1. the contract: it writes to ``BENCH_RESULT`` (or prints as its last stdout
   line) one JSON object

       {"rows": [{"group": 3, "label": "cold start, thin adapter (spawn → first 200)",
                  "value": 0.62, "unit": "s", "baseline": 6.1,
                  "baseline_label": "in-process TF", "ratio": 0.10,
                  "goal": {"op": "<", "limit": 1.0, "on": "value"},
                  "note": "...", "detail": {...}}],
        "memory": {"thin adapter (digits), at first 200": 41943040}}

   with the fields of `bench.report.Row` (only ``group`` and ``label`` are
   required) and, optionally, peak resident bytes per mode for item 6;
2. an adapter for the output the script has today (its ``--json`` file or its
   printed table), written here so the table has its figures until it does 1.

Exit status 0 is expected; anything else becomes a "failed" row with the tail
of stderr, and a script that is not there yet a "pending" row.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.context import Context
from bench.report import Goal, ReportError, Row
from bench.server import ROOT
from bench.stats import Paired, StatsError, median

SCRIPT_TIMEOUT = 600.0


def parse_result(text: str, script: str) -> tuple[list[Row], dict[str, int]]:
    """Rows and memory figures from a script's JSON (pure: tested on strings)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{script} wrote no JSON result: {exc.msg}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ReportError(f'{script} must write {{"rows": [...]}}, got {text[:120]!r}')
    rows = [Row.from_dict(item) for item in doc["rows"]]
    memory = doc.get("memory") or {}
    if not isinstance(memory, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in memory.values()):
        raise ReportError(f"{script}: memory must map mode names to byte counts")
    return rows, {str(k): v for k, v in memory.items()}


def last_json_line(stdout: str) -> str | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.strip().startswith("{"):
            return line
    return None


@dataclass(frozen=True)
class Adapted:
    rows: list[Row]
    memory: dict[str, int] = field(default_factory=dict)
    memory_baseline: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Script:
    module: str
    """``bench.NAME``: run as ``python -m bench.NAME``."""
    group: int
    title: str
    args: Callable[[bool, Path], list[str]] = lambda _quick, _work: []
    """Command-line arguments, from (quick, work directory)."""
    adapter: Callable[[str, Path], Adapted] | None = None
    """Figures from (stdout, work directory) when the script does not write the contract."""

    @property
    def file(self) -> str:
        return self.module.replace(".", "/") + ".py"


def run_script(ctx: Context, script: Script) -> list[Row]:
    path = ROOT / script.file
    if not path.is_file():
        return [Row(script.group, script.title, status="pending",
                    note=f"{script.file} is not written yet")]
    result = ctx.work_dir / f"{script.module}.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_RESULT": str(result), "BENCH_WORK_DIR": str(ctx.work_dir),
           "BENCH_QUICK": "1" if ctx.plan.quick else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = [sys.executable, "-m", script.module, *script.args(ctx.plan.quick, ctx.work_dir)]
    ctx.log(f"running {' '.join(argv[1:])}")
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True,
                              timeout=SCRIPT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return [_failed(script, f"{script.file} ran over {SCRIPT_TIMEOUT:.0f} s")]
    stdout = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return [_failed(script, f"{script.file} exited {done.returncode}: {' / '.join(tail)}")]
    text = result.read_text() if result.is_file() else last_json_line(stdout)
    try:
        if text is not None:
            rows, memory = parse_result(text, script.file)
            adapted = Adapted(rows, memory)
        elif script.adapter is not None:
            adapted = script.adapter(stdout, ctx.work_dir)
        else:
            last = stdout.strip().splitlines()[-1:] or ["(nothing)"]
            return [_failed(script, f"{script.file} gave no JSON result; it printed: "
                                    f"{last[0][:200]}")]
    except (ReportError, StatsError, ValueError, KeyError, OSError) as exc:
        return [_failed(script, f"cannot read {script.file}'s figures: {exc}")]
    for label, rss in adapted.memory.items():
        ctx.keep_memory(label, rss, adapted.memory_baseline.get(label))
    return adapted.rows or [_failed(script, f"{script.file} reported no rows")]


def _failed(script: Script, note: str) -> Row:
    return Row(script.group, script.title, status="failed", note=note)


# -- adapters for today's outputs ----------------------------------------------------------

_THIN_LINE = re.compile(r"^(?P<backend>[\w-]+)\s+(?P<runs>\d+)\s+(?P<min>[\d.]+)\s+"
                        r"(?P<median>[\d.]+)\s+(?P<max>[\d.]+)\s+(?P<cpu>[\d.]+)\s+"
                        r"(?P<verdict>met|missed)\s*$")


def adapt_thin(stdout: str, _work: Path) -> Adapted:
    """`bench.thin_cold_start`'s printed table: one line per backend, medians of its runs."""
    rows = []
    for line in stdout.splitlines():
        match = _THIN_LINE.match(line.strip())
        if match is None:
            continue
        m = match.groupdict()
        rows.append(Row(3, f"cold start digits, thin adapter, BACKEND={m['backend']} "
                           "(spawn → first 200)", float(m["median"]), "s",
                        goal=Goal("<", 1.0, on="value"),
                        note=f"median of {m['runs']} runs, min {float(m['min']):.2f} s, "
                             f"max {float(m['max']):.2f} s, {float(m['cpu']):.2f} CPU s",
                        detail={k: m[k] for k in ("runs", "min", "max", "cpu")}))
    if not rows:
        raise ValueError("its output has no line of figures")
    return Adapted(rows)


LITERT_JSON = "litert_cold_start-figures.json"
LITERT_TF = "in-process TF"


def adapt_litert(_stdout: str, work: Path) -> Adapted:
    """`bench.litert_cold_start`'s ``--json`` file: per mode, seconds and peaks per round."""
    results = {r["label"]: r for r in json.loads((work / LITERT_JSON).read_text())}
    tf = results.pop(LITERT_TF)
    tf_label = "function in-process TF (digits), at first 200"
    memory = {tf_label: int(median(tf["peak_rss"]))}
    baselines = {}
    rows = []
    for label, result in results.items():
        paired = Paired.of(result["seconds"], tf["seconds"])
        rows.append(Row(3, f"cold start digits, {label} function (spawn → first 200)",
                        paired.value, "s", paired.baseline, "in-process TF", paired.ratio,
                        Goal("<", 1.0, on="value"),
                        note=f"{1 / paired.ratio:.1f}x faster than in-process TF "
                             "(goal: at least 3x)",
                        detail={"rounds": paired.rounds, "seconds": result["seconds"],
                                "tf_seconds": tf["seconds"]}))
        mode = f"function {label} (digits), at first 200"
        memory[mode] = int(median(result["peak_rss"]))
        baselines[mode] = tf_label
    return Adapted(rows, memory, baselines)


SCRIPTS = {
    "thin": Script("bench.thin_cold_start", 3,
                   "cold start, thin adapter with a remote backend (goal < 1 s)",
                   args=lambda quick, _work: ["--runs", "2" if quick else "5"],
                   adapter=adapt_thin),
    "litert": Script("bench.litert_cold_start", 3, "cold start, LiteRT function",
                     args=lambda quick, work: ["--rounds", "2" if quick else "5",
                                               "--json", str(work / LITERT_JSON)],
                     adapter=adapt_litert),
    "litert_segmentation": Script("bench.litert_segmentation", 3,
                                  "cold start and warm p50, segmentation under LiteRT",
                                  args=lambda quick, _work: ["--rounds", "2" if quick else "5"]),
}


def thin_cold_start(ctx: Context) -> list[Row]:
    return run_script(ctx, SCRIPTS["thin"])


def litert_cold_start(ctx: Context) -> list[Row]:
    return run_script(ctx, SCRIPTS["litert"])


def litert_segmentation(ctx: Context) -> list[Row]:
    return run_script(ctx, SCRIPTS["litert_segmentation"])
