"""bench/masks.py on the real demo: its rows exist, with their goals."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_the_masks_bench_rows():
    from bench import masks as B

    out = B.model_outputs(log=lambda _m: None)
    rows = {r.label: r for r in [*B.byte_rows(out), *B.error_rows(out),
                                 *B.time_rows(out, rounds=1), B.accuracy_row(out)]}
    default = rows["masks: response in mask_format polygon (default)"]
    int8 = rows["masks: raw outputs as int8 JSON (the int8-JSON way)"]
    assert default.value < B.LAMBDA_LIMIT and default.met
    assert default.value < rows["masks: response in mask_format png"].value
    assert default.value < rows["masks: response in mask_format rle"].value
    assert default.baseline == int8.value and default.ratio < 0.1
    assert int8.ratio < 1  # int8 JSON is smaller than float32 JSON ...
    naive = rows["masks: naive cast(mask*255, int8)/255, max |error|"]
    assert naive.ratio > 100  # ... but wraps
    assert rows["masks: dequantized uint8 vs float model, max |error|"].met
    assert rows["masks: mean IoU vs the drawn shapes (polygon)"].met
    for fmt in ("polygon", "rle", "png", "float"):
        timing = rows[f"masks: post-processing, {fmt}"]
        assert timing.value > 0 and timing.baseline > 0
        assert "same masks on 99.9" in timing.note or "same masks on 100.00%" in timing.note
