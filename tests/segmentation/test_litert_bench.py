"""`bench.litert_segmentation`'s figures become the bench table's rows (pure: no servers)."""

from __future__ import annotations

import json

from bench.external import parse_result
from bench.litert_segmentation import LITERT, TF, Figures, format_table, result_rows


def figures() -> list[Figures]:
    return [Figures(LITERT, [0.6, 0.8, 0.7], [150 << 20, 160 << 20, 155 << 20],
                    [0.12, 0.14, 0.13, 0.2]),
            Figures(TF, [6.0, 7.0, 8.0], [900 << 20, 950 << 20, 925 << 20],
                    [0.5, 0.6, 0.55, 0.7])]


def test_rows_follow_the_bench_contract():
    rows, memory = parse_result(json.dumps(result_rows(figures(), "3 rounds; test")),
                                "bench/litert_segmentation.py")
    start, warm = rows
    assert (start.group, start.unit, start.value, start.baseline) == (3, "s", 0.7, 7.0)
    assert start.goal is not None and start.goal.met(start) is True
    assert start.note.startswith("10.0x faster than in-process TF; 3 rounds; test")
    assert (warm.group, warm.unit, warm.baseline_label) == (2, "ms", TF)
    assert warm.value is not None and warm.baseline is not None
    assert round(warm.value) == 135 and round(warm.baseline) == 575
    assert memory == {"function litert float (segmentation), at first 200": 155 << 20,
                      "function in-process TF (segmentation), at first 200": 925 << 20}


def test_the_printed_table_says_whether_the_goal_is_met():
    table = format_table(figures(), "3 rounds; test")
    assert "litert float                   0.700 (0.60-0.80)           155          135" in table
    assert table.endswith("goal: litert cold start < 1 s: met")
