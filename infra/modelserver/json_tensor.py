"""TF Serving's JSON <-> TensorProto rules, ported from tensorflow_serving/util/json_tensor.cc.

`fill_predict_request_from_json` reads a REST predict body into a PredictRequest's
input tensors (row ``instances`` or columnar ``inputs``); `make_json_from_tensors`
writes output tensors (typed fields, as TF Serving produces them) back as JSON;
`make_json_from_status` writes ``{"error": "..."}``. Checks, shapes, dtypes and error
wording follow the C++ so that a client sees the same answers from this server as
from TF Serving; tests/infra/test_json_tensor.py replays the cases of json_tensor_test.cc.

Deliberate differences: classify/regress bodies are not handled (this server
answers them 501); floats are formatted with C's ``%g`` where absl's ``SixDigits``
would be used, which agrees for every value after the round-trip check.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from infra.modelserver.status import ServingError

ROW = "row"
COLUMNAR = "columnar"

_SIGNATURE_KEY = "signature_name"
_INSTANCES_KEY = "instances"
_INPUTS_KEY = "inputs"
_PREDICTIONS_KEY = "predictions"
_OUTPUTS_KEY = "outputs"
_B64_KEY = "b64"
_BYTES_SUFFIX = "_bytes"
_MAX_DEBUG_STRING = 256

_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_UINT32 = (0, 2 ** 32 - 1)
_UINT64 = (0, 2 ** 64 - 1)

TensorInfoMap = Mapping[str, Any]
"""alias -> tensorflow.TensorInfo (only ``dtype`` is read)."""


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def data_type_string(dtype: int) -> str:
    """TensorFlow's C++ ``DataTypeString``: ``DT_FLOAT`` -> ``float``."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"unknown dtype enum ({dtype})"


# --- parsing -------------------------------------------------------------------------


def parse_json(text: str | bytes) -> Any:
    """A JSON document as rapidjson reads it for TF Serving: NaN and Infinity allowed,
    anything after the document ignored, any depth of nesting."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    stripped = text.lstrip(" \t\n\r")
    if not stripped:
        raise invalid("JSON Parse error: The document is empty")
    offset = len(text) - len(stripped)
    try:
        doc, _ = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as exc:
        raise invalid(f"JSON Parse error: {exc.msg} at offset: {exc.pos + offset}") from None
    except RecursionError:
        doc = _parse_deep(stripped)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_LITERALS = (("true", True), ("false", False), ("null", None), ("NaN", math.nan),
             ("Infinity", math.inf), ("-Infinity", -math.inf))


def _parse_deep(text: str) -> Any:
    """An iterative parser for documents nested deeper than Python's recursion allows."""
    scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
    stack: list[tuple[Any, str | None]] = []  # (container, pending key)
    i, n = 0, len(text)
    result: Any = None
    done = False

    def error(what: str) -> ServingError:
        return invalid(f"JSON Parse error: {what} at offset: {i}")

    def skip(j: int) -> int:
        while j < n and text[j] in " \t\n\r":
            j += 1
        return j

    while True:
        i = skip(i)
        if i >= n:
            raise error("Unexpected end of document")
        char = text[i]
        value: Any
        if char == "[":
            stack.append(([], None))
            i = skip(i + 1)
            if i < n and text[i] == "]":
                value, _ = stack.pop()
                i += 1
            else:
                continue
        elif char == "{":
            stack.append(({}, None))
            i = skip(i + 1)
            if i < n and text[i] == "}":
                value, _ = stack.pop()
                i += 1
            else:
                if i >= n or text[i] != '"':
                    raise error("Missing a name for object member")
                key, i = scanstring(text, i + 1)
                i = skip(i)
                if i >= n or text[i] != ":":
                    raise error("Missing a colon after a name of object member")
                stack[-1] = (stack[-1][0], key)
                i += 1
                continue
        elif char == '"':
            value, i = scanstring(text, i + 1)
        else:
            for word, literal in _LITERALS:
                if text.startswith(word, i):
                    value, i = literal, i + len(word)
                    break
            else:
                match = _NUMBER.match(text, i)
                if match is None:
                    raise error("Invalid value")
                token = match.group()
                value = float(token) if match.group(1) or match.group(2) else int(token)
                i = match.end()
        # Attach the finished value and close every container it completes.
        while True:
            if not stack:
                result, done = value, True
                break
            container, key = stack[-1]
            if isinstance(container, list):
                container.append(value)
            else:
                container[key] = value
            i = skip(i)
            closer = "]" if isinstance(container, list) else "}"
            if i < n and text[i] == ",":
                i = skip(i + 1)
                if isinstance(container, dict):
                    if i >= n or text[i] != '"':
                        raise error("Missing a name for object member")
                    key, i = scanstring(text, i + 1)
                    i = skip(i)
                    if i >= n or text[i] != ":":
                        raise error("Missing a colon after a name of object member")
                    stack[-1] = (container, key)
                    i += 1
                break
            if i < n and text[i] == closer:
                i += 1
                value, _ = stack.pop()
                continue
            raise error("Missing a comma or '" + closer + "' after an element")
        if done:
            return result


def json_type_string(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def debug_string(value: Any) -> str:
    """A value as compact JSON, cut at 256 characters (TF Serving's error messages)."""
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size < _MAX_DEBUG_STRING:
        item = stack.pop()
        if isinstance(item, _Token):
            piece = item.text
        elif isinstance(item, list):
            piece = "["
            stack.append(_Token("]"))
            for index in range(len(item) - 1, -1, -1):
                stack.append(item[index])
                if index:
                    stack.append(_Token(","))
        elif isinstance(item, dict):
            piece = "{"
            stack.append(_Token("}"))
            entries = list(item.items())
            for index in range(len(entries) - 1, -1, -1):
                key, val = entries[index]
                stack.append(val)
                stack.append(_Token(json.dumps(key) + ":"))
                if index:
                    stack.append(_Token(","))
        elif isinstance(item, float):
            piece = _format_decimal(item, False) if math.isfinite(item) else \
                ("NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity"))
        else:
            piece = json.dumps(item)
        out.append(piece)
        size += len(piece)
    return "".join(out)[:_MAX_DEBUG_STRING]


class _Token:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int_in(value: Any, bounds: tuple[int, int]) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and bounds[0] <= value <= bounds[1])


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid(f"JSON Value: {debug_string(value)} Type: {json_type_string(value)} "
                   f"is not of expected type: {data_type_string(dtype)}")


def _add_value(value: Any, dtype: int, tensor: tensor_pb2.TensorProto) -> None:
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not _is_number(value):
            raise _type_error(value, dtype)
        number = float(value)
        if dtype == types_pb2.DT_FLOAT:
            with np.errstate(over="ignore"):
                tensor.float_val.append(float(np.float32(number)))
        else:
            tensor.double_val.append(number)
    elif dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8,
                   types_pb2.DT_UINT8):
        if not _is_int_in(value, _INT32):
            raise _type_error(value, dtype)
        tensor.int_val.append(value)
    elif dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        tensor.string_val.append(value.encode("utf-8", errors="surrogateescape"))
    elif dtype == types_pb2.DT_INT64:
        if not _is_int_in(value, _INT64):
            raise _type_error(value, dtype)
        tensor.int64_val.append(value)
    elif dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        tensor.bool_val.append(value)
    elif dtype == types_pb2.DT_UINT32:
        if not _is_int_in(value, _UINT32):
            raise _type_error(value, dtype)
        tensor.uint32_val.append(value)
    elif dtype == types_pb2.DT_UINT64:
        if not _is_int_in(value, _UINT64):
            raise _type_error(value, dtype)
        tensor.uint64_val.append(value)
    else:
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} "
                                            f"to type: {data_type_string(dtype)}")


def _dense_shape(value: Any, shape: list[int]) -> None:
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            return
        value = value[0]


def is_base64_object(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 1
            and isinstance(value.get(_B64_KEY), str))


def decode_base64_object(value: Any) -> bytes:
    """``{"b64": "..."}`` in the standard alphabet, as absl::Base64Unescape reads it."""
    if not is_base64_object(value):
        raise invalid(f"JSON Value: {debug_string(value)} not formatted correctly for "
                      "base64 data")
    decoded = standard_b64decode(value[_B64_KEY])
    if decoded is None:
        raise invalid("Unable to base64 decode")
    return decoded


_STANDARD_B64 = re.compile(r"[A-Za-z0-9+/]*")


def standard_b64decode(text: str) -> bytes | None:
    """Standard-alphabet base64, padded or not, whitespace ignored; None if invalid.

    The URL-safe alphabet (``-_``) is refused, as TF Serving refuses it.
    """
    s = "".join(text.split())
    body = s.rstrip("=")
    padding = len(s) - len(body)
    if padding > 2 or not _STANDARD_B64.fullmatch(body) or len(body) % 4 == 1:
        return None
    if padding and len(s) % 4:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _fill_tensor(value: Any, level: int, dtype: int, count: list[int],
                 tensor: tensor_pb2.TensorProto) -> None:
    rank = len(tensor.tensor_shape.dim)
    if not isinstance(value, list):
        if level != rank:
            raise invalid(f"JSON Value: {debug_string(value)} found at incorrect level: "
                          f"{level + 1} in the JSON DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            tensor.string_val.append(decode_base64_object(value))
        else:
            _add_value(value, dtype, tensor)
        count[0] += 1
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    expected = tensor.tensor_shape.dim[level].size
    if len(value) != expected:
        raise invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                      f"expected size: {expected}")
    for item in value:
        _fill_tensor(item, level + 1, dtype, count, tensor)


def _shape_string(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _add_instance_item(item: Any, name: str, infos: TensorInfoMap, sizes: dict[str, int],
                       shapes: dict[str, list[int]],
                       tensors: dict[str, tensor_pb2.TensorProto]) -> None:
    if name not in infos:
        raise invalid(f"JSON object: does not have named input: {name}")
    dtype = infos[name].dtype
    tensor = tensors.setdefault(name, tensor_pb2.TensorProto())
    tensor.tensor_shape.Clear()
    shape: list[int] = []
    _dense_shape(item, shape)
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    count = [0]
    _fill_tensor(item, 0, dtype, count, tensor)
    if name not in sizes:
        sizes[name] = count[0]
        shapes[name] = shape
    elif sizes[name] != count[0]:
        raise invalid(f"Expecting tensor size: {sizes[name]} but got: {count[0]}")
    elif shapes[name] != shape:
        raise invalid(f"Expecting shape {_shape_string(shapes[name])} but got: "
                      f"{_shape_string(shape)}")


def _status_string(error: ServingError) -> str:
    return f"{error.code}: {error.message}"


def _fill_from_instances(instances: list, infos: TensorInfoMap,
                         tensors: dict[str, tensor_pb2.TensorProto]) -> None:
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple "
                      "input tensors required as per tensorinfo_map")

    def is_element_object(value: Any) -> bool:
        return isinstance(value, dict) and not is_base64_object(value)

    elements_are_objects = is_element_object(instances[0])
    input_names = sorted(infos)
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    tensors.clear()
    for index, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            for name, value in element.items():
                try:
                    _add_instance_item(value, name, infos, sizes, shapes, tensors)
                except ServingError as exc:
                    raise invalid(f"Failed to process element: {index} key: {name} of "
                                  f"'instances' list. Error: {_status_string(exc)}") from None
            if sorted(element) != input_names:
                raise invalid(f"Failed to process element: {index} of 'instances' list. JSON "
                              f"object: {debug_string(element)} keys must be equal to: "
                              f"{','.join(input_names)}")
        else:
            if is_element_object(element):
                raise invalid(f"Expecting value/list but got object at item {index} of input "
                              "list")
            name = next(iter(infos))
            try:
                _add_instance_item(element, name, infos, sizes, shapes, tensors)
            except ServingError as exc:
                raise invalid(f"Failed to process element: {index} of 'instances' list. "
                              f"Error: {_status_string(exc)}") from None
    for name, tensor in tensors.items():
        tensor.dtype = infos[name].dtype
        tensor.tensor_shape.Clear()
        tensor.tensor_shape.dim.add(size=len(instances))
        for size in shapes[name]:
            tensor.tensor_shape.dim.add(size=size)


def _fill_from_inputs(value: Any, infos: TensorInfoMap,
                      tensors: dict[str, tensor_pb2.TensorProto]) -> None:
    if not isinstance(value, dict) or is_base64_object(value):
        if len(infos) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple "
                          "input tensors required as per tensorinfo_map")
        name = next(iter(infos))
        items = [(name, value)]
    else:
        items = []
        for name in infos:
            if name not in value:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
            items.append((name, value[name]))
    for name, item in items:
        tensor = tensors.setdefault(name, tensor_pb2.TensorProto())
        tensor.dtype = infos[name].dtype
        tensor.tensor_shape.Clear()
        shape: list[int] = []
        _dense_shape(item, shape)
        for size in shape:
            tensor.tensor_shape.dim.add(size=size)
        _fill_tensor(item, 0, tensor.dtype, [0], tensor)


def fill_predict_request_from_json(
        body: str | bytes, get_tensorinfo_map: Callable[[str], TensorInfoMap],
        request: Any) -> str:
    """Fill ``request`` (a PredictRequest) from a REST body; return ``ROW`` or ``COLUMNAR``."""
    doc = parse_json(body)
    if _SIGNATURE_KEY in doc:
        if not isinstance(doc[_SIGNATURE_KEY], str):
            raise invalid(f"JSON Value: {debug_string(doc)} not formatted correctly. "
                          "'signature_name' key must be a string value.")
        request.model_spec.signature_name = doc[_SIGNATURE_KEY]
    signature_name = request.model_spec.signature_name
    infos = get_tensorinfo_map(signature_name)
    if not infos:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    tensors: dict[str, tensor_pb2.TensorProto] = {}
    if _INSTANCES_KEY in doc:
        if _INPUTS_KEY in doc:
            raise invalid(f"JSON Value: {debug_string(doc)} Not formatted correctly expecting "
                          "only one of 'inputs' or 'instances' keys to exist ")
        instances = doc[_INSTANCES_KEY]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an "
                          "list/array")
        if not instances:
            raise invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        _fill_from_instances(instances, infos, tensors)
        fmt = ROW
    elif _INPUTS_KEY in doc:
        _fill_from_inputs(doc[_INPUTS_KEY], infos, tensors)
        fmt = COLUMNAR
    else:
        raise invalid("Missing 'inputs' or 'instances' key")
    for name, tensor in tensors.items():
        request.inputs[name].CopyFrom(tensor)
    return fmt


# --- writing -------------------------------------------------------------------------


def _format_decimal(value: float, is_float32: bool) -> str:
    """TF Serving's WriteDecimal: six significant digits if they round-trip, else all."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if is_float32:
        round_trips = np.float32(float(text)) == np.float32(value)
    else:
        round_trips = float(text) == value
    if not round_trips:
        text = f"{value:.9g}" if is_float32 else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_STRING: "string_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val",
}


def _single_value(tensor: tensor_pb2.TensorProto, as_bytes: bool, offset: list[int]) -> str:
    field = _VALUE_FIELDS.get(tensor.dtype)
    values = getattr(tensor, field) if field else None
    if values is None or offset[0] >= len(values):
        raise invalid("Failed to write JSON value for tensor type: "
                      f"{data_type_string(tensor.dtype)}")
    value = values[offset[0]]
    offset[0] += 1
    if tensor.dtype == types_pb2.DT_FLOAT:
        return _format_decimal(value, True)
    if tensor.dtype == types_pb2.DT_DOUBLE:
        return _format_decimal(value, False)
    if tensor.dtype == types_pb2.DT_BOOL:
        return "true" if value else "false"
    if tensor.dtype == types_pb2.DT_STRING:
        if as_bytes:
            return '{"b64": "' + base64.b64encode(value).decode("ascii") + '"}'
        return json.dumps(value.decode("utf-8", errors="surrogateescape"), ensure_ascii=False)
    return str(int(value))


def _tensor_values(tensor: tensor_pb2.TensorProto, as_bytes: bool, dim: int,
                   out: list[str], offset: list[int]) -> None:
    dims = tensor.tensor_shape.dim
    if dim > len(dims) - 1:
        out.append(_single_value(tensor, as_bytes, offset))
        return
    out.append("[")
    for index in range(dims[dim].size):
        if index:
            out.append(", ")
        if dim == len(dims) - 1:
            out.append(_single_value(tensor, as_bytes, offset))
        else:
            _tensor_values(tensor, as_bytes, dim + 1, out, offset)
    out.append("]")


def _is_named_bytes(name: str, tensor: tensor_pb2.TensorProto) -> bool:
    return tensor.dtype == types_pb2.DT_STRING and name.endswith(_BYTES_SUFFIX)


def make_json_from_tensors(tensor_map: Mapping[str, tensor_pb2.TensorProto], fmt: str) -> str:
    """Output tensors (typed fields) as TF Serving's ``predictions`` or ``outputs`` JSON."""
    if not tensor_map:
        raise invalid("Cannot convert empty tensor map to JSON")
    if fmt == ROW:
        return _row_json(tensor_map)
    if fmt == COLUMNAR:
        return _columnar_json(tensor_map)
    raise invalid("Invalid request format")


def _row_json(tensor_map: Mapping[str, tensor_pb2.TensorProto]) -> str:
    batch = -1
    for name, tensor in tensor_map.items():
        if not tensor.tensor_shape.dim:
            raise invalid(f"Tensor name: {name} has no shape information ")
        size = tensor.tensor_shape.dim[0].size
        if batch >= 0 and batch != size:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {size} "
                          f"expecting: {batch}")
        batch = size
    offsets = {name: [0] for name in tensor_map}
    several = len(tensor_map) > 1
    out = ['{"predictions": [']
    for item in range(batch):
        if item:
            out.append(", ")
        if several:
            out.append("{")
        for index, (name, tensor) in enumerate(tensor_map.items()):
            if several:
                out.append((", " if index else "") + json.dumps(name) + ": ")
            _tensor_values(tensor, _is_named_bytes(name, tensor), 1, out, offsets[name])
        if several:
            out.append("}")
    out.append("]}")
    return "".join(out)


def _columnar_json(tensor_map: Mapping[str, tensor_pb2.TensorProto]) -> str:
    several = len(tensor_map) > 1
    out = ['{"outputs": ']
    if several:
        out.append("{")
    for index, (name, tensor) in enumerate(tensor_map.items()):
        if several:
            out.append((", " if index else "") + json.dumps(name) + ": ")
        _tensor_values(tensor, _is_named_bytes(name, tensor), 0, out, [0])
    if several:
        out.append("}")
    out.append("}")
    return "".join(out)


def make_json_from_status(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
