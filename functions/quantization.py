"""Affine quantization in numpy: the one place a number is quantized or dequantized.

The function, its backends (LiteRT inputs, TF Serving replies), the mask answers and
modelprep's samples all call these, so every side gets the same bits.
``real = scale * (q - zero_point)``, as `modelmeta` defines it. Quantizing rounds half to
even and clips to the dtype's range, never wraps; dequantizing computes in float32, as
the model's graph does, so both sides get the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from functions.errors import BadGateway
from modelmeta import QUANT_DTYPES, Quantization


def quantize(values: np.ndarray, quantization: Quantization) -> np.ndarray:
    """Real values to the quantized dtype: round half to even, clip, cast."""
    lo, hi = QUANT_DTYPES[quantization.dtype]
    q = np.rint(np.asarray(values, np.float64) / quantization.scale) + quantization.zero_point
    return np.clip(q, lo, hi).astype(quantization.dtype)


def dequantize(values: np.ndarray, quantization: Quantization | None) -> np.ndarray:
    """Quantized integers back to float32 reals; values without a quantization unchanged."""
    if quantization is None:
        return values
    real = np.asarray(values).astype(np.float32) - np.float32(quantization.zero_point)
    return real * np.float32(quantization.scale)


def to_input_dtype(values: np.ndarray, quantization: Quantization | None, dtype: str
                   ) -> np.ndarray:
    """Model values to an input's integers (rounded, clipped), or to its float dtype.

    An integer input without quantization gets rounded, clipped values, as the
    wrapped graph gives it (`modelprep.input_ops.to_dtype`)."""
    if quantization is None:
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            return np.clip(np.rint(values), info.min, info.max).astype(dtype)
        return np.asarray(values, dtype=dtype)
    return quantize(values, quantization)


def dequantize_reply(value: Any, quantization: Quantization | None, *,
                     shape: Sequence[int] | None = None, name: str = "output") -> np.ndarray:
    """Quantized integers from any source back to float32, ``scale * (q - zero_point)``.

    ``value`` may be a numpy array of any integer dtype (the in-process backend, or a
    REST reply parsed to int64), nested lists of integers (TF Serving REST JSON), a
    flat sequence (gRPC ``int_val``) or bytes (gRPC ``tensor_content``); give ``shape``
    for the flat ones. Values outside the quantized dtype's range mean the model server
    sent something else than the metadata says (say, a wrapped cast): `BadGateway`.
    Without a quantization the values are taken as floats already.
    """
    if quantization is None:
        array = np.asarray(value, np.float32)
        return array.reshape(shape) if shape is not None else array
    lo, hi = QUANT_DTYPES[quantization.dtype]
    if isinstance(value, (bytes, bytearray, memoryview)):
        array = np.frombuffer(value, np.dtype(quantization.dtype))
    else:
        array = np.asarray(value)
    if array.dtype.kind == "f" and array.size and not np.array_equal(array, np.rint(array)):
        raise BadGateway(f"output {name!r} should hold {quantization.dtype} integers, "
                         "but has fractions")
    if array.dtype.kind not in "iuf" and array.size:
        raise BadGateway(f"output {name!r} should hold {quantization.dtype} integers, "
                         f"not {array.dtype}")
    if array.size and (array.min() < lo or array.max() > hi):
        raise BadGateway(f"output {name!r} holds {array.min()}..{array.max()}, outside "
                         f"{quantization.dtype}'s {lo}..{hi}: the model server's output "
                         "does not match the model's metadata")
    if shape is not None:
        if int(np.prod(shape)) != array.size:
            raise BadGateway(f"output {name!r} has {array.size} values, not the "
                             f"{int(np.prod(shape))} of shape {list(shape)}")
        array = array.reshape(shape)
    return dequantize(array, quantization)

