"""The bench command itself: item selection, a failing group, the files it writes."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import pytest

from bench import run
from bench.context import Context, Plan
from bench.registry import Group
from bench.report import Row


def good_group(ctx: Context) -> list[Row]:
    return [Row(1, "bytes", 10.0, "B")]


def broken_group(ctx: Context) -> list[Row]:
    raise RuntimeError("the server answered 500")


def test_only_takes_item_numbers():
    assert run._numbers("1,3") == {1, 3}
    with pytest.raises(argparse.ArgumentTypeError, match="numbered 1 to 7"):
        run._numbers("0,8")
    with pytest.raises(argparse.ArgumentTypeError, match="like 1,3"):
        run._numbers("bytes")


def test_a_failing_group_is_a_failed_row_and_the_others_still_run(tmp_path):
    ctx = Context(plan=Plan.for_run(quick=True), models={}, work_dir=tmp_path,
                  log=lambda _msg: None)
    groups = (Group(2, "latency", f"{__name__}:broken_group"),
              Group(1, "bytes", f"{__name__}:good_group"),
              Group(5, "masks", f"{__name__}:not_there", optional=True, pending_note="later"))
    rows, failures = run.run_groups(ctx, groups)
    assert failures == ["latency"]
    assert rows == [Row(2, "latency", status="failed",
                        note="RuntimeError: the server answered 500"),
                    Row(1, "bytes", 10.0, "B"),
                    Row(5, "masks", status="pending", note="later")]


def test_results_are_written_as_json_and_markdown(tmp_path):
    when = datetime(2026, 11, 22, 4, 52, 58, tzinfo=timezone.utc)
    path = run.write_results(tmp_path, when, {"rows": [], "markdown": "| table |\n"})
    assert path.name == "bench-20261122-045258.json"
    assert json.loads(path.read_text()) == {"rows": [], "markdown": "| table |\n"}
    assert (tmp_path / "latest.json").read_text() == path.read_text()
    assert (tmp_path / "latest.md").read_text() == "| table |\n"


def test_plans_quick_is_smaller_with_the_same_method():
    full, quick = Plan.for_run(False), Plan.for_run(True)
    assert quick.concurrency == full.concurrency == (1, 4, 8)
    assert quick.rounds < full.rounds and quick.cold_starts < full.cold_starts
    for plan in (full, quick):
        assert all(n >= max(plan.concurrency) for n in plan.throughput_requests.values())
