"""Rows, goals and the markdown table exactly as a reader sees them."""

from __future__ import annotations

import json

import pytest

from bench.report import (
    Goal,
    ReportError,
    Row,
    format_ratio,
    format_value,
    markdown_table,
    summary_lines,
)


@pytest.mark.parametrize(("op", "limit", "ratio", "met"), [
    ("<=", 1.05, 1.05, True), ("<=", 1.05, 1.0501, False),
    ("<", 1.0, 0.999, True), ("<", 1.0, 1.0, False),
    (">=", 0.9, 0.9, True), (">=", 0.9, 0.8999, False),
    (">", 2.0, 2.5, True), (">", 2.0, 2.0, False),
])
def test_goal_operators(op, limit, ratio, met):
    assert Row(2, "x", 1.0, "ms", 1.0, "b", ratio, Goal(op, limit)).met is met


def test_goal_on_value_ignores_the_ratio():
    row = Row(3, "thin", 0.8, "s", 8.0, "bare", 0.1, Goal("<", 1.0, on="value"))
    assert row.met is True
    assert Row(3, "thin", 1.2, "s", goal=Goal("<", 1.0, on="value")).met is False


def test_no_goal_or_no_figure_or_not_ok_means_no_verdict():
    assert Row(1, "x", 10.0, "B").met is None
    assert Row(1, "x", 10.0, "B", goal=Goal("<=", 1.0)).met is None  # no ratio
    assert Row(5, "masks", status="pending", goal=Goal("<=", 1.0)).met is None


def test_bad_goal_and_row_values_are_refused():
    with pytest.raises(ReportError, match="goal op"):
        Goal("=<", 1.0)
    with pytest.raises(ReportError, match="goal must be on"):
        Goal("<", 1.0, on="median")
    with pytest.raises(ReportError, match="finite"):
        Goal("<", float("nan"))
    with pytest.raises(ReportError, match="status"):
        Row(1, "x", status="meh")
    with pytest.raises(ReportError, match="unit"):
        Row(1, "x", 1.0, "KB")


@pytest.mark.parametrize(("value", "unit", "text"), [
    (26356, "B", "26,356 B"), (34.94, "ms", "34.9 ms"), (1234.5, "ms", "1,234 ms"),
    (6.127, "s", "6.13 s"), (26.08, "req/s", "26.1 req/s"), (1478.2, "req/s", "1,478 req/s"),
    (812.4, "MiB", "812 MiB"), (None, "ms", "—"), (3.0, "", "3"),
])
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


@pytest.mark.parametrize(("ratio", "text"), [
    (1 / 203.4, "1/203"), (0.5, "0.50x"), (0.96, "0.960x"), (1.0086, "1.009x"),
    (1.1526, "1.153x"), (0.8999, "0.900x"), (1.21, "1.21x"), (270.2, "270x"), (None, "—"),
])
def test_format_ratio(ratio, text):
    assert format_ratio(ratio) == text


def test_goal_descriptions():
    assert Goal("<=", 1 / 150).describe() == "≤ 1/150"
    assert Goal("<=", 1.05).describe() == "≤ 1.05x"
    assert Goal("<=", 1.01).describe() == "≤ 1.01x"
    assert Goal(">=", 0.9).describe() == "≥ 0.9x"
    assert Goal("<", 1.0, on="value").describe("s") == "< 1.00 s"


def test_markdown_table_orders_by_item_and_keeps_run_order_within_one():
    rows = [
        Row(3, "cold start", 6.5, "s", 6.0, "bare script", 6.5 / 6.0, Goal("<=", 1.15),
            note="a | b"),
        Row(1, "bytes b", 100.0, "B", 200.0, "float", 0.5),
        Row(1, "bytes a", 1.0, "B"),
        Row(5, "masks", status="pending", note="not built yet"),
    ]
    assert markdown_table(rows) == (
        "| # | measure | ours | baseline | ratio | goal | met | note |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| 1 | bytes b | 100 B | float: 200 B | 0.50x | — | — |  |\n"
        "| 1 | bytes a | 1 B | — | — | — | — |  |\n"
        "| 3 | cold start | 6.50 s | bare script: 6.00 s | 1.083x | ≤ 1.15x | yes | a \\| b |\n"
        "| 5 | masks | pending | — | — | — | — | not built yet |\n")


def test_summary_names_missed_goals_and_rows_without_figures():
    rows = [Row(2, "p50", 35.0, "ms", 29.0, "direct", 1.21, Goal("<=", 1.05)),
            Row(4, "c=1", 27.0, "req/s", 29.0, "direct", 0.93, Goal(">=", 0.9)),
            Row(7, "peer", status="failed", note="pip could not install bentoml")]
    assert summary_lines(rows) == [
        "goal missed: 2 p50: 1.21x (goal ≤ 1.05x)",
        "failed: 7 peer: pip could not install bentoml",
    ]


def test_row_json_round_trip():
    row = Row(3, "thin", 0.62, "s", 6.1, "bare script", 0.1, Goal("<", 1.0, "value"),
              note="no TensorFlow", detail={"rounds": 3})
    data = json.loads(json.dumps(row.to_dict()))
    assert data["met"] is True
    assert Row.from_dict(data) == row


def test_row_from_dict_needs_group_and_label_only():
    assert Row.from_dict({"group": 3, "label": "x"}) == Row(3, "x")


@pytest.mark.parametrize(("data", "message"), [
    ({"label": "x"}, "malformed row"),
    ({"group": 3, "label": "x", "value": "fast"}, "expected a number"),
    ({"group": 3, "label": "x", "value": True}, "expected a number"),
    ({"group": 3, "label": "x", "goal": {"op": "<"}}, "malformed row"),
    ({"group": 3, "label": "x", "unit": "parsecs"}, "unit"),
    (["not", "a", "row"], "must be a JSON object"),
])
def test_row_from_dict_refuses_malformed_rows(data, message):
    with pytest.raises(ReportError, match=message):
        Row.from_dict(data)
