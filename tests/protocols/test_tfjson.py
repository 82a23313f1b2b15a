"""functions/protocols/tfjson/ beyond the C++ cases tests/infra/test_json_tensor.py replays:
the fast float writer agrees with TF Serving's one-value rule everywhere, the caller's
base64 decoder is used, and tensors go to and from numpy unchanged."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from functions.protocols import tfjson
from functions.protocols.tfjson.writing import _float_texts


@given(st.lists(st.floats(width=32), max_size=50))
def test_float32_writer_matches_write_decimal_for_every_float32(values):
    assert _float_texts(values, True) == [tfjson.format_decimal(v, True) for v in values]


@given(st.lists(st.floats(), max_size=50))
def test_float_writer_matches_write_decimal_for_any_double(values):
    for is_float32 in (True, False):
        assert _float_texts(values, is_float32) == \
            [tfjson.format_decimal(v, is_float32) for v in values]


def test_the_callers_base64_decoder_reads_b64_values():
    seen = []

    def lenient(text: str) -> bytes:
        seen.append(text)
        return b"decoded"

    request = tfjson.read_request('{"instances": [{"b64": "-_8"}]}', lambda _: {"x": "string"},
                                  decode_b64=lenient)
    assert request.tensors["x"].values == [b"decoded"] and seen == ["-_8"]
    standard = tfjson.read_request('{"inputs": {"b64": "+/8="}}', lambda _: {"x": "string"})
    assert standard.format == tfjson.COLUMNAR and standard.tensors["x"].values == [b"\xfb\xff"]


def test_tensors_to_and_from_numpy():
    array = np.arange(6, dtype=np.int8).reshape(2, 3) - 3
    tensor = tfjson.Tensor.of(array, "int8")
    assert (tensor.shape, tensor.values) == ([2, 3], [-3, -2, -1, 0, 1, 2])
    assert np.array_equal(tensor.to_numpy(), array) and tensor.to_numpy().dtype == np.int8
    strings = tfjson.Tensor("string", [2], [b"a", b"bc"]).to_numpy()
    assert strings.dtype == object and strings.tolist() == [b"a", b"bc"]
    assert tfjson.write_response({"q": tensor}, tfjson.COLUMNAR) == \
        '{"outputs": [[-3, -2, -1], [0, 1, 2]]}'
