"""What both directions share: dtypes as TF names them, `Tensor`, `TfJsonError`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ROW = "row"
COLUMNAR = "columnar"

SIGNATURE_KEY = "signature_name"
_INSTANCES_KEY = "instances"
_INPUTS_KEY = "inputs"
_B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"
_MAX_DEBUG_STRING = 256

_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_UINT32 = (0, 2 ** 32 - 1)
_UINT64 = (0, 2 ** 64 - 1)

_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half"}
"""`modelmeta` dtype names whose TensorFlow C++ name (``DataTypeString``) differs."""
_SMALL_INTS = ("int32", "int16", "int8", "uint8")
"""Read from JSON as any int32, as TF Serving does (it fills ``int_val``)."""
WRITABLE = ("float32", "float64", "int32", "int16", "int8", "uint8", "string", "int64",
            "bool", "uint32", "uint64")
"""Dtypes TF Serving can write as JSON; float16, bfloat16, uint16 and complex cannot (400)."""


class TfJsonError(Exception):
    """A request or response that breaks TF Serving's JSON rules: a gRPC code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def invalid(message: str) -> TfJsonError:
    return TfJsonError("INVALID_ARGUMENT", message)


def tf_type_name(dtype: str) -> str:
    """``float32`` -> ``float``: TensorFlow's C++ ``DataTypeString``, used in messages."""
    return _TF_NAMES.get(dtype, dtype)


@dataclass
class Tensor:
    """A dense tensor: its dtype name, its shape and its values in row-major order.

    String values are `bytes`; numbers are Python numbers (float32 values already
    rounded to float32), as they would sit in a TensorProto's typed field.
    """

    dtype: str
    shape: list[int]
    values: Sequence[Any]

    @classmethod
    def of(cls, array: np.ndarray, dtype: str) -> Tensor:
        """A numpy array as a `Tensor` of ``dtype`` (a `modelmeta` name)."""
        return cls(dtype, list(array.shape), np.asarray(array).ravel().tolist())

    def to_numpy(self) -> np.ndarray:
        """The values as a numpy array of the tensor's shape (object array of bytes for
        strings)."""
        if self.dtype == "string":
            flat = np.empty(len(self.values), dtype=object)
            flat[:] = list(self.values)
            return flat.reshape(self.shape)
        return np.array(self.values, dtype=self.dtype).reshape(self.shape)


@dataclass(frozen=True)
class JsonRequest:
    signature_name: str | None
    """The body's ``signature_name``, if it has one."""
    format: str
    """`ROW` or `COLUMNAR`: how the answer is written."""
    tensors: dict[str, Tensor]


def format_decimal(value: float, is_float32: bool) -> str:
    """TF Serving's WriteDecimal: six significant digits if they round-trip, else all."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if is_float32:
        with np.errstate(over="ignore"):  # a double beyond float32 compares as infinity
            round_trips = np.float32(float(text)) == np.float32(value)
    else:
        round_trips = float(text) == value
    if not round_trips:
        text = f"{value:.9g}" if is_float32 else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text
