"""The protocol rows of the bench (bench/protocols.py), from made-up timings: no servers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.client import BenchError
from bench.protocols import _CLASS_OF, NATIVE, V2_BINARY, difference_rows, requests_for


def test_each_row_is_the_median_difference_with_the_native_p50_and_its_goal():
    rows = difference_rows({NATIVE: [2.0, 2.2, 2.1], "v2": [2.1, 2.5, 2.2]}, "digits")
    [row] = rows
    assert row.label == "digits, v2: p50 minus the native API's"
    assert row.value == pytest.approx(0.1) and row.unit == "ms"
    assert row.baseline == 2.1 and row.ratio == pytest.approx(2.2 / 2.1)
    assert row.met is True
    assert difference_rows({NATIVE: [2.0], "slow": [2.5]}, "x")[0].met is False


def test_every_request_carries_the_same_image_and_every_answer_is_read():
    png = b"\x89PNG fake"
    requests = requests_for(png, "digits")
    assert set(requests) == set(_CLASS_OF)
    binary = requests[V2_BINARY]
    size = int(binary.headers["Inference-Header-Content-Length"])
    assert binary.body[size + 4:] == png
    assert json.loads(binary.body[:size])["inputs"][0]["parameters"] == {
        "binary_data_size": len(png) + 4}
    header = b'{"outputs":[{"name":"scores","parameters":{"binary_data_size":40}}]}'
    scores = np.eye(10, dtype="<f4")[7]
    assert _CLASS_OF[V2_BINARY](header + scores.tobytes()) == 7
    with pytest.raises(BenchError):
        _CLASS_OF["Simple TF Serving"](b'{"scores": [[1, 2]]}')
