"""The contract with bench scripts written elsewhere: their JSON, their failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import external
from bench.context import Context, Plan
from bench.report import ReportError, Row

RESULT = {
    "rows": [{"group": 3, "label": "cold start, thin adapter", "value": 0.62, "unit": "s",
              "goal": {"op": "<", "limit": 1.0, "on": "value"},
              "note": "TensorFlow never imported"}],
    "memory": {"thin adapter, at first 200": 41943040},
}


def test_parse_result_gives_rows_and_memory():
    rows, memory = external.parse_result(json.dumps(RESULT), "bench/x.py")
    assert rows == [Row(3, "cold start, thin adapter", 0.62, "s",
                        goal=rows[0].goal, note="TensorFlow never imported")]
    assert rows[0].met is True
    assert memory == {"thin adapter, at first 200": 41943040}


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "wrote no JSON result"),
    ('{"figures": []}', 'must write {"rows"'),
    ('{"rows": [{"label": "x"}]}', "malformed row"),
    ('{"rows": [], "memory": {"a": -1}}', "byte counts"),
    ('{"rows": [], "memory": {"a": true}}', "byte counts"),
])
def test_parse_result_refuses_what_it_cannot_read(text, message):
    with pytest.raises(ReportError, match=message):
        external.parse_result(text, "bench/x.py")


def test_last_json_line_skips_chatter():
    assert external.last_json_line('loading\n{"rows": []}\nbye\n') == '{"rows": []}'
    assert external.last_json_line("nothing\n") is None


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setattr(external, "ROOT", tmp_path)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    return Context(plan=Plan.for_run(quick=True), models={}, work_dir=tmp_path,
                   log=lambda _msg: None)


def _script(root: Path, name: str, body: str, **kwargs) -> external.Script:
    (root / "bench" / f"{name}.py").write_text(body)
    return external.Script(f"bench.{name}", 3, f"cold start, {name}", **kwargs)


def test_a_missing_script_is_a_pending_row(ctx):
    rows = external.run_script(ctx, external.Script("bench.nope", 3, "cold start, nope"))
    assert rows == [Row(3, "cold start, nope", status="pending",
                        note="bench/nope.py is not written yet")]


def test_a_script_writing_its_result_file_joins_the_table(ctx, tmp_path):
    script = _script(tmp_path, "good", f"""
import json, os, sys
assert os.environ["BENCH_QUICK"] == "1" and sys.argv[1:] == ["--runs", "2"]
open(os.environ["BENCH_RESULT"], "w").write(json.dumps({RESULT!r}))
""", args=lambda quick, _work: ["--runs", "2" if quick else "5"])
    rows = external.run_script(ctx, script)
    assert [r.label for r in rows] == ["cold start, thin adapter"]
    assert ctx.memory == {"thin adapter, at first 200": 41943040}


def test_a_script_printing_its_result_joins_the_table(ctx, tmp_path):
    script = _script(tmp_path, "printer",
                     f"import json; print('hi'); print(json.dumps({RESULT!r}))")
    assert external.run_script(ctx, script)[0].value == 0.62


def test_a_crashing_script_is_a_failed_row_with_its_last_words(ctx, tmp_path):
    script = _script(tmp_path, "bad", "raise SystemExit('no TF Serving binary here')")
    (row,) = external.run_script(ctx, script)
    assert row.status == "failed"
    assert row.note == "bench/bad.py exited 1: no TF Serving binary here"


def test_a_script_without_json_or_adapter_is_a_failed_row(ctx, tmp_path):
    script = _script(tmp_path, "quiet", "print('took 0.6 s')")
    (row,) = external.run_script(ctx, script)
    assert row.status == "failed"
    assert row.note == "bench/quiet.py gave no JSON result; it printed: took 0.6 s"


THIN_OUTPUT = """\
cold start: process start -> first 200 (goal < 1.0 s), 2 cores, load average 1.2
backend          runs    min s  median s    max s   cpu s  goal
tfserving-rest      5    0.712     0.801    0.950   0.655  met
tfserving-grpc      5    2.519     2.949    4.445   0.839  missed
"""


def test_thin_adapter_reads_the_printed_table(ctx, tmp_path):
    script = _script(tmp_path, "thin", f"print({THIN_OUTPUT!r})", adapter=external.adapt_thin)
    rest, grpc = external.run_script(ctx, script)
    assert rest.label == "cold start digits, thin adapter, BACKEND=tfserving-rest " \
        "(spawn → first 200)"
    assert (rest.value, rest.unit, rest.met) == (0.801, "s", True)
    assert (grpc.value, grpc.met) == (2.949, False)
    assert grpc.note == "median of 5 runs, min 2.52 s, max 4.45 s, 0.84 CPU s"


def test_thin_adapter_without_figures_is_a_failed_row(ctx, tmp_path):
    script = _script(tmp_path, "thin2", "print('starting...')", adapter=external.adapt_thin)
    (row,) = external.run_script(ctx, script)
    assert row.status == "failed"
    assert row.note == "cannot read bench/thin2.py's figures: its output has no line of figures"


def test_litert_adapter_pairs_rounds_against_in_process_tf(tmp_path):
    mib = 1024 * 1024
    (tmp_path / external.LITERT_JSON).write_text(json.dumps([
        {"label": "litert int8", "seconds": [0.5, 0.6, 0.4], "peak_rss": [60 * mib] * 3},
        {"label": "in-process TF", "seconds": [5.0, 5.0, 6.0], "peak_rss": [600 * mib] * 3},
    ]))
    adapted = external.adapt_litert("", tmp_path)
    (row,) = adapted.rows
    assert row.value == pytest.approx(0.5)
    assert row.baseline == pytest.approx(5.0)
    assert row.ratio == pytest.approx(0.1)  # median of 0.1, 0.12, 0.0667
    assert row.met is True
    assert row.note.startswith("10.0x faster than in-process TF")
    assert adapted.memory == {"function in-process TF (digits), at first 200": 600 * mib,
                              "function litert int8 (digits), at first 200": 60 * mib}
    assert adapted.memory_baseline == {
        "function litert int8 (digits), at first 200":
            "function in-process TF (digits), at first 200"}
