"""Tensors on TF Serving's two wires, to and from numpy, without TensorFlow.

gRPC carries `TensorProto`s (the project's wire-compatible copy in `protos/`). A
server fills either the typed repeated fields (``float_val``, ``int_val``,
``string_val``, ...; TF Serving's default) or raw little-endian ``tensor_content``
(``--enable_serialization_as_tensor_content``); `to_numpy` reads both, including
TensorFlow's rule that a shorter typed field is padded with its last value.

REST carries JSON: strings go out as ``{"b64": ...}`` in the standard alphabet
(TF Serving refuses the URL-safe one); outputs come back as nested lists whose
leaves must fit the signature's dtype, and string outputs whose alias ends in
``_bytes`` come back base64-wrapped. `from_json` checks all of that, because a
reply that does not fit is the model server's fault (502), never the client's.

Dtype names are TensorFlow's (``float32``, ``string``, ``uint8``...), the same as
`modelmeta` uses.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.backends.protos import tfserving_pb2 as pb


class WireError(ValueError):
    """A tensor on the wire that cannot be what it claims (the caller maps it to 502)."""


@dataclass(frozen=True)
class _Kind:
    enum: int
    numpy: str | None
    """numpy dtype name; None for string (object array of bytes)."""
    field: str
    """The typed repeated field TensorFlow uses for this dtype."""


_KINDS: dict[str, _Kind] = {
    "float32": _Kind(pb.DT_FLOAT, "float32", "float_val"),
    "float64": _Kind(pb.DT_DOUBLE, "float64", "double_val"),
    "int32": _Kind(pb.DT_INT32, "int32", "int_val"),
    "uint8": _Kind(pb.DT_UINT8, "uint8", "int_val"),
    "int16": _Kind(pb.DT_INT16, "int16", "int_val"),
    "int8": _Kind(pb.DT_INT8, "int8", "int_val"),
    "uint16": _Kind(pb.DT_UINT16, "uint16", "int_val"),
    "string": _Kind(pb.DT_STRING, None, "string_val"),
    "complex64": _Kind(pb.DT_COMPLEX64, "complex64", "scomplex_val"),
    "complex128": _Kind(pb.DT_COMPLEX128, "complex128", "dcomplex_val"),
    "int64": _Kind(pb.DT_INT64, "int64", "int64_val"),
    "bool": _Kind(pb.DT_BOOL, "bool", "bool_val"),
    "float16": _Kind(pb.DT_HALF, "float16", "half_val"),
    "bfloat16": _Kind(pb.DT_BFLOAT16, "bfloat16", "half_val"),
    "uint32": _Kind(pb.DT_UINT32, "uint32", "uint32_val"),
    "uint64": _Kind(pb.DT_UINT64, "uint64", "uint64_val"),
}
_BY_ENUM = {kind.enum: name for name, kind in _KINDS.items()}


def dtype_name(enum_value: int) -> str:
    """``DT_FLOAT`` -> ``"float32"``; an unknown or unsupported type raises `WireError`."""
    try:
        return _BY_ENUM[enum_value]
    except KeyError:
        name = pb.DataType.Name(enum_value) if enum_value in pb.DataType.values() else enum_value
        raise WireError(f"tensor type {name} is not supported") from None


def dtype_name_from_enum_name(name: str) -> str:
    """``"DT_FLOAT"`` (as TF Serving's metadata JSON spells it) -> ``"float32"``."""
    try:
        return dtype_name(pb.DataType.Value(name))
    except ValueError:
        raise WireError(f"unknown tensor type {name!r}") from None


def dtype_enum(name: str) -> int:
    try:
        return _KINDS[name].enum
    except KeyError:
        raise WireError(f"tensor type {name!r} is not supported") from None


def _numpy_dtype(name: str) -> np.dtype:
    kind = _KINDS[name]
    if name == "bfloat16":
        import ml_dtypes  # only models with bfloat16 tensors need it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(object if kind.numpy is None else kind.numpy)


# --- gRPC: TensorProto <-> numpy ---------------------------------------------------------


def to_proto(array: np.ndarray, dtype: str, *, as_content: bool = True) -> pb.TensorProto:
    """A numpy array as a `TensorProto` of ``dtype``.

    Numbers go as ``tensor_content`` by default (one memcpy, no varints: an int8
    image as ``int_val`` costs up to 10 bytes a pixel); ``as_content=False`` uses the
    typed fields, as TF Serving itself answers.
    """
    kind = _KINDS.get(dtype)
    if kind is None:
        raise WireError(f"tensor type {dtype!r} is not supported")
    proto = pb.TensorProto(dtype=kind.enum)  # type: ignore[arg-type]  # an enum value
    for size in np.shape(array):
        proto.tensor_shape.dim.add(size=int(size))
    if kind.numpy is None:
        flat = np.asarray(array, dtype=object).ravel()
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8")
                                for v in flat)
        return proto
    values = np.ascontiguousarray(array, dtype=_numpy_dtype(dtype))
    if as_content:
        proto.tensor_content = values.tobytes()
    elif dtype in ("float16", "bfloat16"):
        proto.half_val.extend(values.view(np.uint16).ravel().tolist())
    elif dtype in ("complex64", "complex128"):
        getattr(proto, kind.field).extend(values.view(values.real.dtype).ravel().tolist())
    else:
        getattr(proto, kind.field).extend(values.ravel().tolist())
    return proto


def to_numpy(proto: pb.TensorProto) -> np.ndarray:
    """A `TensorProto` (typed fields or ``tensor_content``) as a numpy array."""
    name = dtype_name(proto.dtype)
    if proto.tensor_shape.unknown_rank:
        raise WireError("tensor has unknown rank")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(s < 0 for s in shape):
        raise WireError(f"tensor has a negative dimension in shape {list(shape)}")
    count = math.prod(shape)
    dtype = _numpy_dtype(name)
    kind = _KINDS[name]
    if kind.numpy is None:
        values = list(proto.string_val)
        flat = np.empty(len(values), dtype=object)
        flat[:] = values
        return _fill(flat, count, shape, name)
    if proto.tensor_content:
        content = proto.tensor_content
        expected = count * dtype.itemsize
        if len(content) != expected:
            raise WireError(f"{name} tensor of shape {list(shape)} needs {expected} bytes of "
                            f"tensor_content, got {len(content)}")
        # TensorFlow writes host order; every platform it serves on is little-endian.
        return np.frombuffer(content, dtype=dtype).reshape(shape).copy()
    raw = getattr(proto, kind.field)
    if name in ("float16", "bfloat16"):
        flat = np.asarray(raw, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() > 0xFFFF):
            raise WireError(f"{name} half_val holds values outside 16 bits")
        flat = flat.astype(np.uint16).view(dtype)
    elif name in ("complex64", "complex128"):
        pairs = np.asarray(raw, dtype=dtype.type(0).real.dtype)
        if pairs.size % 2:
            raise WireError(f"{name} tensor has an odd number of real parts")
        flat = pairs.view(dtype)
    else:
        flat = np.asarray(raw)
        if dtype.kind in "iu" and flat.size:
            info = np.iinfo(dtype)
            if flat.min() < info.min or flat.max() > info.max:
                raise WireError(f"{name} tensor holds values outside {info.min}..{info.max}")
        flat = flat.astype(dtype)
    return _fill(flat, count, shape, name)


def _fill(flat: np.ndarray, count: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    """TensorFlow's rule for typed fields: fewer values than elements repeat the last one."""
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size > count:
        raise WireError(f"{name} tensor of shape {list(shape)} has {flat.size} values, "
                        f"more than its {count} elements")
    if flat.size == 0:
        filler = b"" if flat.dtype == object else 0
        out = np.full(count, filler, dtype=flat.dtype)
    else:
        out = np.concatenate([flat, np.repeat(flat[-1:], count - flat.size)])
    return out.reshape(shape)


# --- REST: numpy <-> JSON ----------------------------------------------------------------


def to_json(array: np.ndarray, dtype: str) -> Any:
    """A numpy array as TF Serving's JSON: nested lists; bytes as ``{"b64": standard}``."""
    if dtype == "string":
        return _strings_to_json(np.asarray(array, dtype=object).tolist())
    if dtype in ("float16", "bfloat16"):
        return np.asarray(array).astype(np.float32).tolist()
    if dtype not in _KINDS or dtype.startswith("complex"):
        raise WireError(f"tensor type {dtype!r} cannot be sent as JSON")
    return np.asarray(array, dtype=_numpy_dtype(dtype)).tolist()


def _strings_to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings_to_json(v) for v in value]
    if isinstance(value, str):
        value = value.encode("utf-8")
    return {"b64": base64.b64encode(value).decode("ascii")}


def from_json(value: Any, dtype: str, *, wrapped_bytes: bool) -> np.ndarray:
    """One output of a REST reply as a numpy array of ``dtype``, checked leaf by leaf.

    ``wrapped_bytes`` says the alias ends in ``_bytes``, so TF Serving sent every
    string as ``{"b64": ...}``; other strings arrive as plain JSON text.
    """
    if dtype == "string":
        shape = _shape_of(value)
        leaves = list(_leaves(value, len(shape)))
        flat = np.empty(len(leaves), dtype=object)
        flat[:] = [_json_bytes(v, wrapped_bytes) for v in leaves]
        return flat.reshape(shape)
    if dtype not in _KINDS or dtype.startswith("complex") or dtype in ("float16", "bfloat16"):
        raise WireError(f"tensor type {dtype!r} cannot come back as JSON")
    target = _numpy_dtype(dtype)
    try:
        parsed = np.array(value)
    except ValueError as exc:  # ragged nesting
        raise WireError(f"{dtype} output is not a rectangular array: {exc}") from None
    if target.kind == "f":
        ok = parsed.dtype.kind in "fi" or (parsed.size == 0 and parsed.dtype.kind in "fiu")
    elif target.kind in "iu":
        ok = parsed.dtype.kind in "iu" or parsed.size == 0
        if ok and parsed.size:
            info = np.iinfo(target)
            ok = parsed.min() >= info.min and parsed.max() <= info.max
    else:  # bool
        ok = parsed.dtype.kind == "b" or parsed.size == 0
    if not ok:
        raise WireError(f"output values do not fit {dtype} "
                        f"(read them as {parsed.dtype.name})")
    return parsed.astype(target)


def _shape_of(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _leaves(value: Any, depth: int):
    if depth == 0:
        if isinstance(value, list):
            raise WireError("string output is not a rectangular array")
        yield value
        return
    if not isinstance(value, list):
        raise WireError("string output is not a rectangular array")
    for item in value:
        yield from _leaves(item, depth - 1)


def _json_bytes(value: Any, wrapped: bool) -> bytes:
    if wrapped:
        if not (isinstance(value, dict) and set(value) == {"b64"}
                and isinstance(value["b64"], str)):
            raise WireError('a _bytes output value is not {"b64": "..."}')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise WireError("a _bytes output value is not valid base64") from None
    if not isinstance(value, str):
        raise WireError(f"a string output value is {type(value).__name__}, not a string")
    return value.encode("utf-8")
