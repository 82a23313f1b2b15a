"""TF Serving's JSON <-> TensorProto, on the rules of `functions.protocols.tfjson`.

The JSON rules themselves (row ``instances`` or columnar ``inputs``, ``{"b64": ...}``,
``_bytes`` aliases, ``%g`` floats, TF Serving's error wording) live in
functions/protocols/tfjson/, shared with the function's own TF Serving REST API, so
both answer alike; this module only moves its tensors in and out of TensorFlow's
protos. `fill_predict_request_from_json` reads a REST predict body into a
PredictRequest's inputs; `make_json_from_tensors` writes output tensors (typed fields,
as TF Serving produces them) as JSON; `make_json_from_status` writes
``{"error": "..."}``. tests/infra/test_json_tensor.py replays json_tensor_test.cc.

Deliberate differences: classify/regress bodies are not handled (this server
answers them 501); floats are formatted with C's ``%g`` where absl's ``SixDigits``
would be used, which agrees for every value after the round-trip check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tensorflow.core.framework import tensor_pb2, types_pb2

from functions.protocols import tfjson
from infra.modelserver.status import ServingError

ROW = tfjson.ROW
COLUMNAR = tfjson.COLUMNAR

TensorInfoMap = Mapping[str, Any]
"""alias -> tensorflow.TensorInfo (only ``dtype`` is read)."""

_FIELDS = {
    "float32": (types_pb2.DT_FLOAT, "float_val"), "float64": (types_pb2.DT_DOUBLE, "double_val"),
    "int32": (types_pb2.DT_INT32, "int_val"), "int16": (types_pb2.DT_INT16, "int_val"),
    "int8": (types_pb2.DT_INT8, "int_val"), "uint8": (types_pb2.DT_UINT8, "int_val"),
    "string": (types_pb2.DT_STRING, "string_val"), "int64": (types_pb2.DT_INT64, "int64_val"),
    "bool": (types_pb2.DT_BOOL, "bool_val"), "uint32": (types_pb2.DT_UINT32, "uint32_val"),
    "uint64": (types_pb2.DT_UINT64, "uint64_val"),
}
"""The dtypes JSON carries, with the typed TensorProto field TF Serving fills."""
_META_NAMES = {"float": "float32", "double": "float64", "half": "float16"}


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` -> ``float32`` (`modelmeta`'s names, which `tfjson` speaks)."""
    try:
        name = types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype enum ({dtype})"
    return _META_NAMES.get(name, name)


def _serving_error(exc: tfjson.TfJsonError) -> ServingError:
    return ServingError(exc.code, exc.message)


def fill_predict_request_from_json(
        body: str | bytes, get_tensorinfo_map: Callable[[str], TensorInfoMap],
        request: Any) -> str:
    """Fill ``request`` (a PredictRequest) from a REST body; return ``ROW`` or ``COLUMNAR``."""

    def input_dtypes(signature_name: str) -> dict[str, str]:
        infos = get_tensorinfo_map(signature_name)
        return {alias: dtype_name(info.dtype) for alias, info in infos.items()}

    try:
        parsed = tfjson.read_request(body, input_dtypes)
    except tfjson.TfJsonError as exc:
        raise _serving_error(exc) from None
    if parsed.signature_name is not None:
        request.model_spec.signature_name = parsed.signature_name
    for name, tensor in parsed.tensors.items():
        enum, field = _FIELDS[tensor.dtype]
        proto = tensor_pb2.TensorProto(dtype=enum)
        proto.tensor_shape.SetInParent()  # a scalar still has its (empty) shape
        for size in tensor.shape:
            proto.tensor_shape.dim.add(size=size)
        getattr(proto, field).extend(tensor.values)
        request.inputs[name].CopyFrom(proto)
    return parsed.format


def make_json_from_tensors(tensor_map: Mapping[str, tensor_pb2.TensorProto], fmt: str) -> str:
    """Output tensors (typed fields) as TF Serving's ``predictions`` or ``outputs`` JSON."""
    tensors = {}
    for name, proto in tensor_map.items():
        dtype = dtype_name(proto.dtype)
        field = _FIELDS.get(dtype, (None, None))[1]
        values = list(getattr(proto, field)) if field else []
        tensors[name] = tfjson.Tensor(dtype, [int(d.size) for d in proto.tensor_shape.dim],
                                      values)
    try:
        return tfjson.write_response(tensors, fmt)
    except tfjson.TfJsonError as exc:
        raise _serving_error(exc) from None


def make_json_from_status(message: str) -> str:
    return tfjson.error_body(message)
