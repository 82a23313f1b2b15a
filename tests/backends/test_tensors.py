"""functions.backends.wire: both wires, both TensorProto forms, and replies that lie."""

from __future__ import annotations

import numpy as np
import pytest

from functions.backends import wire as tensors
from functions.backends.protos import tfserving_pb2 as pb


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8", "int8", "int16",
                                   "uint16", "int64", "bool", "float16", "uint32", "uint64",
                                   "complex64"])
@pytest.mark.parametrize("as_content", [True, False])
def test_numbers_round_trip_through_both_proto_forms(dtype, as_content):
    rng = np.random.default_rng(0)
    value = (rng.normal(size=(2, 3)) * 100).astype(dtype)
    proto = tensors.to_proto(value, dtype, as_content=as_content)
    assert bool(proto.tensor_content) == as_content
    back = tensors.to_numpy(pb.TensorProto.FromString(proto.SerializeToString()))
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3)
    np.testing.assert_array_equal(back, value)


def test_tensor_content_is_raw_little_endian_bytes():
    proto = tensors.to_proto(np.array([[1, -2]], np.int8), "int8")
    assert proto.tensor_content == b"\x01\xfe"
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]


def test_strings_go_as_string_val():
    proto = tensors.to_proto(np.array([b"\x89PNG", "text"], dtype=object), "string")
    assert list(proto.string_val) == [b"\x89PNG", b"text"]
    assert tensors.to_numpy(proto).tolist() == [b"\x89PNG", b"text"]


def test_typed_int8_mask_as_tf_serving_sends_it():
    """The Mask R-CNN service read int8 masks from int_val: negatives are varints there."""
    proto = pb.TensorProto(dtype=pb.DT_INT8, int_val=[-128, -1, 0, 127])
    proto.tensor_shape.dim.add(size=4)
    assert len(proto.SerializeToString()) > 4 * 2 + 10  # -1 costs ten bytes on the wire
    assert tensors.to_numpy(proto).tolist() == [-128, -1, 0, 127]


def test_short_typed_field_repeats_its_last_value():
    proto = pb.TensorProto(dtype=pb.DT_FLOAT, float_val=[1.5, 7.0])
    for size in (2, 3):
        proto.tensor_shape.dim.add(size=size)
    assert tensors.to_numpy(proto).tolist() == [[1.5, 7.0, 7.0], [7.0, 7.0, 7.0]]
    empty = pb.TensorProto(dtype=pb.DT_INT32)
    empty.tensor_shape.dim.add(size=3)
    assert tensors.to_numpy(empty).tolist() == [0, 0, 0]


@pytest.mark.parametrize(("proto", "message"), [
    (pb.TensorProto(dtype=pb.DT_FLOAT, float_val=[1, 2, 3]), "has 3 values, more than its 2"),
    (pb.TensorProto(dtype=pb.DT_FLOAT, tensor_content=b"\0" * 7), "needs 8 bytes"),
    (pb.TensorProto(dtype=pb.DT_UINT8, int_val=[256, 0]), "outside 0..255"),
    (pb.TensorProto(dtype=pb.DT_RESOURCE), "tensor type DT_RESOURCE is not supported"),
])
def test_protos_that_cannot_be_what_they_claim(proto, message):
    proto.tensor_shape.dim.add(size=2)
    with pytest.raises(tensors.WireError, match=message):
        tensors.to_numpy(proto)


def test_json_strings_use_standard_base64():
    assert tensors.to_json(np.array([b"\xfb\xff"], dtype=object), "string") == [{"b64": "+/8="}]


@pytest.mark.parametrize(("value", "dtype", "expected"), [
    ([[0.5, 1], [2.0, 3.25]], "float32", np.array([[0.5, 1], [2, 3.25]], np.float32)),
    ([[-128, 127]], "int8", np.array([[-128, 127]], np.int8)),
    ([[0, 255]], "uint8", np.array([[0, 255]], np.uint8)),
    ([True, False], "bool", np.array([True, False])),
    ([float("nan")], "float64", np.array([np.nan])),
])
def test_json_outputs_read_with_the_signature_dtype(value, dtype, expected):
    out = tensors.from_json(value, dtype, wrapped_bytes=False)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def test_bytes_outputs_unwrapped_only_when_named_bytes():
    assert tensors.from_json([{"b64": "iVBO"}], "string", wrapped_bytes=True).tolist() == \
        [b"\x89PNG"[:3]]
    assert tensors.from_json(["dog"], "string", wrapped_bytes=False).tolist() == [b"dog"]


@pytest.mark.parametrize(("value", "dtype", "wrapped", "message"), [
    ([[1, 2], [3]], "float32", False, "not a rectangular array"),
    (["1.5"], "float32", False, "do not fit float32"),
    ([300], "uint8", False, "do not fit uint8"),
    ([1.5], "int32", False, "do not fit int32"),
    ([1], "bool", False, "do not fit bool"),
    (["aGk="], "string", True, r'not \{"b64": "..."\}'),
    ([{"b64": "-_8="}], "string", True, "not valid base64"),
    ([1], "string", False, "is int, not a string"),
    ([[1.0]], "float16", False, "cannot come back as JSON"),
])
def test_json_outputs_that_do_not_fit(value, dtype, wrapped, message):
    with pytest.raises(tensors.WireError, match=message):
        tensors.from_json(value, dtype, wrapped_bytes=wrapped)


def test_dtype_names():
    assert tensors.dtype_name(pb.DT_FLOAT) == "float32"
    assert tensors.dtype_name_from_enum_name("DT_STRING") == "string"
    with pytest.raises(tensors.WireError, match="unknown tensor type 'DT_NOPE'"):
        tensors.dtype_name_from_enum_name("DT_NOPE")
