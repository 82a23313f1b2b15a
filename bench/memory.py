"""Item 6: peak resident memory of each mode, against the model alone.

The figures are collected by the groups that ran each mode (cold start, the
warm servers, external scripts); this group reads the live processes' peaks
last, so the warm figures include every burst of the run.
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.context import Context
from bench.procs import MIB
from bench.report import Row


def memory_rows(memory: Mapping[str, int], baselines: Mapping[str, str]) -> list[Row]:
    """One row per mode, compared with its baseline mode when both were measured (pure)."""
    rows = []
    for label in sorted(memory):
        base_label = baselines.get(label)
        base = memory.get(base_label) if base_label else None
        rows.append(Row(6, f"peak memory: {label}", memory[label] / MIB, "MiB",
                        base / MIB if base else None, (base_label or "") if base else "",
                        memory[label] / base if base else None))
    return rows


def run(ctx: Context) -> list[Row]:
    ctx.record_memory()
    if not ctx.memory:
        return [Row(6, "peak memory", status="skipped",
                    note="no mode was run (select groups 2, 3 or 4 with this one)")]
    return memory_rows(ctx.memory, ctx.memory_baseline)
