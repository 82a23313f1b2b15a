"""Rows built from measured rounds: the figures, ratios and goals the table shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.latency import breakdown_rows, floor_row, latency_rows
from bench.memory import memory_rows
from bench.registry import GROUPS, Group, select
from bench.report import Goal
from bench.stats import Latency
from bench.throughput import (
    DirectWays,
    Tally,
    baselines,
    client_share,
    direct_rows,
    throughput_rows,
)

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def _lat(p50_ms: float, p99_ms: float) -> Latency:
    return Latency(p50=p50_ms / 1000, p99=p99_ms / 1000, mean=p50_ms / 1000, count=100)


def test_latency_rows_pair_rounds_and_apply_the_goal():
    ours = [_lat(31.0, 40.0), _lat(62.0, 90.0), _lat(30.0, 36.0)]
    direct = [_lat(30.0, 38.0), _lat(60.0, 80.0), _lat(29.0, 35.0)]
    p50, p99 = latency_rows(2, "MobileNetV2", ours, direct, Goal("<=", 1.05))
    assert (p50.label, p50.unit, p50.baseline_label) == ("MobileNetV2 p50", "ms", "direct call")
    assert p50.value == pytest.approx(31.0)
    assert p50.baseline == pytest.approx(30.0)
    assert p50.ratio == pytest.approx(31.0 / 30.0)
    assert p50.met is True
    assert p99.ratio == pytest.approx(40.0 / 38.0)  # median of 1.053, 1.125, 1.029
    assert p99.met is False
    assert p99.detail["ours_ms"] == pytest.approx([40.0, 90.0, 36.0])


def test_throughput_rows_one_per_level():
    ours = {1: [27.0, 26.0], 4: [30.0, 31.0]}
    direct = {1: [30.0, 29.0], 4: [30.0, 30.0]}
    rows = throughput_rows(4, "MobileNetV2", (1, 4), ours, direct, Goal(">=", 0.9),
                           notes={4: "ours 30.5 req/s"})
    assert [r.label for r in rows] == ["MobileNetV2 c=1", "MobileNetV2 c=4"]
    assert rows[0].ratio == pytest.approx((27 / 30 + 26 / 29) / 2)
    assert rows[0].met is False  # 0.898
    assert rows[1].met is True and rows[1].note == "ours 30.5 req/s"


def _ways() -> DirectWays:
    ways = DirectWays()
    for way, values in {"sequential": [77.0, 70.0], "threads2": [131.0, 120.0],
                        "threads4": [151.0, 125.0], "batch8": [166.0, 118.0]}.items():
        for value in values:
            ways.keep(way, value)
    return ways


def test_throughput_baseline_is_sequential_at_c1_and_the_models_best_above():
    ways = _ways()
    assert ways.best() == [166.0, 125.0]  # each round's best way, batching included
    assert ways.best_way() == "batch8"  # best median: 142 images/s
    values, labels = baselines((1, 4), ways)
    assert values == {1: [77.0, 70.0], 4: [166.0, 125.0]}
    assert labels == {1: "direct, sequential",
                      4: "direct, best way (batches of 8 images)"}
    rows = throughput_rows(4, "m", (1, 4), {1: [70.0, 63.0], 4: [100.0, 100.0]}, values,
                           Goal(">=", 0.85), baseline_labels=labels)
    assert rows[0].ratio == pytest.approx((70 / 77 + 63 / 70) / 2) and rows[0].met is True
    assert rows[1].baseline_label == "direct, best way (batches of 8 images)"
    assert rows[1].ratio == pytest.approx((100 / 166 + 100 / 125) / 2)
    assert rows[1].met is False


def test_direct_rows_show_each_way_against_the_sequential_call():
    rows = direct_rows("m", _ways())
    assert [r.label for r in rows] == [
        "throughput m, direct call, 2 threads at once",
        "throughput m, direct call, 4 threads at once",
        "throughput m, direct call, batches of 8 images"]
    assert rows[2].note.startswith("images/s")
    assert rows[0].ratio == pytest.approx((131 / 77 + 120 / 70) / 2)


def test_versus_peer_asks_a_five_percent_lead_paired_by_round():
    from bench.report import versus_peer

    p50 = versus_peer("m warm p50", [18.0, 20.0, 17.0], [19.0, 21.5, 18.0], "ms",
                      higher_is_better=False)
    assert (p50.group, p50.label, p50.baseline_label) == (7, "ours against the peer: m warm p50",
                                                         "peer BentoML")
    assert p50.ratio == pytest.approx(17 / 18)  # median of 0.947, 0.930, 0.944
    assert p50.met is True  # 0.944 <= 0.95
    level = versus_peer("m warm p50", [19.0, 21.0], [19.5, 21.5], "ms", higher_is_better=False)
    assert level.met is False  # 2-3 % ahead is level, not ahead
    c1 = versus_peer("m c=1", [80.0, 82.0], [75.0, 78.0, 70.0], "req/s", higher_is_better=True)
    assert c1.detail["rounds"] == 2
    assert c1.goal is not None and c1.goal.describe() == "≥ 1.05x"
    assert c1.met is True  # 1.067 and 1.051


def test_client_share_is_cpu_over_wall_time_on_every_core():
    tally = Tally()
    tally.add(16, 0.5, client_cpu=0.2)
    tally.add(16, 0.5, client_cpu=0.1)
    assert tally.rate() == 32.0
    assert client_share(tally, 2) == pytest.approx(0.15)
    assert client_share(Tally(), 2) == 0.0


def test_memory_rows_compare_with_the_model_alone_when_measured():
    memory = {"bare model (m), warm": 500 * MIB, "function (m), warm": 600 * MIB,
              "thin adapter": 40 * MIB}
    rows = memory_rows(memory, {"function (m), warm": "bare model (m), warm",
                                "thin adapter": "not measured"})
    by_label = {r.label: r for r in rows}
    fn = by_label["peak memory: function (m), warm"]
    assert (fn.value, fn.baseline, fn.ratio) == (600.0, 500.0, 1.2)
    assert fn.baseline_label == "bare model (m), warm"
    thin = by_label["peak memory: thin adapter"]
    assert (thin.value, thin.baseline, thin.ratio, thin.baseline_label) == (40.0, None, None, "")


P50 = {"direct": [29.0, 30.0, 20.0], "constants": [20.0, 21.0, 14.0],
       "graph": [29.5, 30.7, 20.4], "backend": [29.4, 30.9, 20.5],
       "app": [30.4, 31.4, 21.5], "preprocess": [1.0, 1.1, 0.9]}


def test_breakdown_rows_give_each_layers_own_cost_per_round():
    rows = breakdown_rows("MobileNetV2", P50)
    assert [r.label.split(": ")[-1] for r in rows] == [
        "weights as constants (modelprep wrap's freeze)",
        "in-graph decode, resize, normalise", "InProcessBackend (numpy to tensor and back)",
        "App.handle (parse, EXIF check, top-5, JSON)",
        "the preprocessing graph called alone"]
    assert [r.value for r in rows] == pytest.approx([-9.0, 0.5, 0.1, 1.0, 1.0])
    assert all(r.baseline == 29.0 and r.unit == "ms" and r.goal is None for r in rows)
    assert rows[1].ratio == pytest.approx(0.5 / 29.0)
    assert rows[2].detail["cost_ms"] == pytest.approx([-0.1, 0.2, 0.1])
    assert rows[1].note.endswith("(variables)")


def test_breakdown_of_a_frozen_model_takes_its_decoding_over_the_frozen_call():
    graph = breakdown_rows("MobileNetV2", P50, weights="constants")[1]
    assert graph.detail["cost_ms"] == pytest.approx([9.5, 9.7, 6.4])
    assert graph.value == pytest.approx(9.5) and graph.note.endswith("(constants)")


def test_floor_row_is_the_share_of_the_function_latency():
    row = floor_row("MobileNetV2", [_lat(1.5, 3.0), _lat(2.0, 4.0)],
                    [_lat(30.0, 40.0), _lat(40.0, 50.0)])
    assert row.value == pytest.approx(1.75)
    assert row.baseline == pytest.approx(35.0)
    assert row.ratio == pytest.approx(0.05)
    assert row.unit == "ms" and row.goal is None


def test_registry_runs_cold_start_first_and_memory_last():
    assert GROUPS[0].target == "bench.cold_start:run"
    assert GROUPS[-1].target == "bench.memory:run"
    assert {g.number for g in GROUPS} == {1, 2, 3, 4, 5, 6}  # 7 comes from 2 and 4


def test_every_required_group_imports_without_tensorflow():
    # In a fresh interpreter: other tests of the suite may have loaded TensorFlow here.
    code = ("import sys; from bench.registry import GROUPS; "
            "[g.load() for g in GROUPS if not g.optional]; "
            "import bench.run; print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_select_groups_by_item():
    assert select(None) == GROUPS
    assert [g.number for g in select({1})] == [1]
    assert {g.number for g in select({7})} == {2, 4}


def test_select_groups_by_module_name():
    from bench.registry import modules

    assert modules(" throughput, bench.batch_request ,") == {"throughput", "batch_request"}
    picked = select(None, modules("throughput,batch_request"))
    assert [g.target for g in picked] == ["bench.batch_request:run", "bench.throughput:run"]
    assert select({3}, {"throughput"}) == ()


def test_a_batch_request_carries_eight_copies_and_is_checked_for_eight_answers():
    import base64
    import json

    from bench.batch_request import batch_body, check_function, check_peer
    from bench.client import BenchError

    doc = json.loads(batch_body(b"\xff\xd8jpeg"))
    assert doc == {"images": [base64.b64encode(b"\xff\xd8jpeg").decode()] * 8}
    check_function(json.dumps({"predictions": [{"class_id": 1}] * 8}).encode())
    check_peer(json.dumps([{"class_id": 1}] * 8).encode())
    with pytest.raises(BenchError, match="answered 8 images"):
        check_function(json.dumps({"predictions": [{"class_id": 1}]}).encode())
    with pytest.raises(BenchError, match="answered 8 images"):
        check_peer(b"{}")


def test_an_unwritten_optional_group_is_a_pending_row():
    group = Group(5, "masks", "bench.not_written_yet:run", optional=True, pending_note="later")
    assert not group.available()
    row = group.pending_row()
    assert (row.group, row.status, row.note) == (5, "pending", "later")


def test_worker_model_load_is_read_from_the_servers_json_log():
    from bench.cold_start import model_load_seconds

    log = ('{"time": "2026-11-22T04:38:07.512Z", "severity": "INFO", "logger": '
           '"functions.model", "message": "model \'mobilenet_v2\' loaded in 11.19 s"}\n'
           '{"message": "POST / 200"}\n')
    assert model_load_seconds(log) == 11.19
    assert model_load_seconds('{"message": "model failed to load"}') is None


def test_serving_stack_table_shows_medians_per_server():
    from bench.serving_stack import STACKS, format_table

    results = {"ff": {"p50_ms": [2.0, 1.0, 3.0], "c1": [500.0, 520.0, 480.0],
                      "c4": [600.0, 610.0, 590.0], "c8": [640.0, 650.0, 630.0],
                      "peak_rss_mib": 690.4}}
    assert format_table(results, "digits", 3).splitlines()[-1] == (
        "| ff | 2.00 ms | 500 req/s | 600 req/s | 640 req/s | 690 MiB |")
    assert STACKS[0].module == "functions_framework"
    assert {s.module for s in STACKS[1:]} == {"functions.serving"}
