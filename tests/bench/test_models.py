"""The bench's model cache: what decides a rebuild (no TensorFlow here)."""

from __future__ import annotations

from bench.models import WRAP_CODE, BenchModel, wrap_fingerprint


def test_wrap_fingerprint_follows_the_wrapping_code(tmp_path):
    for name in WRAP_CODE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    before = wrap_fingerprint(tmp_path)
    assert wrap_fingerprint(tmp_path) == before
    (tmp_path / "modelprep" / "input_ops.py").write_text("# changed\n")
    assert wrap_fingerprint(tmp_path) != before
    (tmp_path / "modelprep" / "input_ops.py").unlink()
    assert wrap_fingerprint(tmp_path) != before  # a missing file counts too


def test_bench_model_json_round_trip():
    model = BenchModel("m", "/o", "/s", "images", (1, 224, 224, 3), "symmetric", 3, 224, 224)
    assert BenchModel.from_dict(model.to_dict()) == model
