"""Responses out: `Tensor`s to ``predictions`` / ``outputs`` JSON, as TF Serving writes them."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping, Sequence

from functions.protocols.tfjson.tensors import (
    BYTES_SUFFIX,
    COLUMNAR,
    ROW,
    WRITABLE,
    Tensor,
    format_decimal,
    invalid,
    tf_type_name,
)

# --- writing -------------------------------------------------------------------------


_FLOAT32 = struct.Struct("<f")


def _float_texts(values: Sequence[float], is_float32: bool) -> list[str]:
    """`format_decimal` over many values, the float32 round trip checked with `struct`
    (about twice as fast as numpy scalars on a classifier's few scores)."""
    pack, unpack = _FLOAT32.pack, _FLOAT32.unpack
    texts = []
    for value in values:
        if not math.isfinite(value):
            texts.append(format_decimal(value, is_float32))
            continue
        text = f"{value:.6g}"
        if is_float32:
            try:
                round_trips = unpack(pack(float(text))) == unpack(pack(value))
            except OverflowError:  # not a float32 value at all: numpy's rules decide
                texts.append(format_decimal(value, is_float32))
                continue
        else:
            round_trips = float(text) == value
        if not round_trips:
            text = f"{value:.9g}" if is_float32 else f"{value:.17g}"
        if "." not in text and "e" not in text:
            text += ".0"
        texts.append(text)
    return texts


def _value_texts(tensor: Tensor, name: str) -> list[str]:
    """Every value of the tensor written as JSON, in order."""
    dtype = tensor.dtype
    if dtype not in WRITABLE:
        raise invalid(f"Failed to write JSON value for tensor type: {tf_type_name(dtype)}")
    count = math.prod(tensor.shape)
    if len(tensor.values) < count:
        raise invalid(f"Failed to write JSON value for tensor type: {tf_type_name(dtype)}")
    values = tensor.values[:count] if len(tensor.values) > count else tensor.values
    if dtype in ("float32", "float64"):
        return _float_texts(values, dtype == "float32")
    if dtype == "bool":
        return ["true" if v else "false" for v in values]
    if dtype == "string":
        if name.endswith(BYTES_SUFFIX):
            return ['{"b64": "' + base64.b64encode(v).decode("ascii") + '"}' for v in values]
        return [json.dumps(v.decode("utf-8", errors="surrogateescape"), ensure_ascii=False)
                for v in values]
    return [str(int(v)) for v in values]


def _nest(texts: list[str], shape: Sequence[int], out: list[str]) -> None:
    """Write ``texts`` nested as ``shape`` (TF Serving separates items with ", ")."""
    if not shape:
        out.append(texts[0])
        return
    if len(shape) == 1:
        out.append("[" + ", ".join(texts) + "]")
        return
    step = math.prod(shape[1:])
    out.append("[")
    for index in range(shape[0]):
        if index:
            out.append(", ")
        _nest(texts[index * step:(index + 1) * step], shape[1:], out)
    out.append("]")


def write_response(tensors: Mapping[str, Tensor], fmt: str) -> str:
    """Output tensors as TF Serving's ``predictions`` (row) or ``outputs`` (columnar)."""
    if not tensors:
        raise invalid("Cannot convert empty tensor map to JSON")
    if fmt == ROW:
        return _row_json(tensors)
    if fmt == COLUMNAR:
        return _columnar_json(tensors)
    raise invalid("Invalid request format")


def _row_json(tensors: Mapping[str, Tensor]) -> str:
    batch = -1
    for name, tensor in tensors.items():
        if not tensor.shape:
            raise invalid(f"Tensor name: {name} has no shape information ")
        size = tensor.shape[0]
        if batch >= 0 and batch != size:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {size} "
                          f"expecting: {batch}")
        batch = size
    several = len(tensors) > 1
    texts = {name: _value_texts(tensor, name) for name, tensor in tensors.items()}
    out = ['{"predictions": [']
    for item in range(batch):
        if item:
            out.append(", ")
        if several:
            out.append("{")
        for index, (name, tensor) in enumerate(tensors.items()):
            if several:
                out.append((", " if index else "") + json.dumps(name) + ": ")
            step = math.prod(tensor.shape[1:])
            _nest(texts[name][item * step:(item + 1) * step], tensor.shape[1:], out)
        if several:
            out.append("}")
    out.append("]}")
    return "".join(out)


def _columnar_json(tensors: Mapping[str, Tensor]) -> str:
    several = len(tensors) > 1
    out = ['{"outputs": ']
    if several:
        out.append("{")
    for index, (name, tensor) in enumerate(tensors.items()):
        if several:
            out.append((", " if index else "") + json.dumps(name) + ": ")
        _nest(_value_texts(tensor, name), tensor.shape, out)
    if several:
        out.append("}")
    out.append("}")
    return "".join(out)


def error_body(message: str) -> str:
    """TF Serving's error reply: ``{"error": "<message>"}``."""
    return json.dumps({"error": message}, ensure_ascii=False)
