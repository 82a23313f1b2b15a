"""TF Serving's JSON tensor rules, ported from tensorflow_serving/util/json_tensor.cc.

One implementation for both sides of the project: the function's TF Serving REST API
(`functions.protocols.tfserving`) and the local model server (`infra.modelserver`, which
wraps these tensors in TensorProtos). Plain Python and numpy: no TensorFlow, no protobuf.

    read_request(body, input_dtypes)  row ``instances`` or columnar ``inputs`` -> `Tensor`s
    write_response(tensors, fmt)      `Tensor`s -> ``{"predictions": ...}`` / ``{"outputs": ...}``
    error_body(message)               ``{"error": "..."}``

Checks, shapes and error wording follow the C++, so a client sees the same answers from
either side as from TF Serving (tests/infra/test_json_tensor.py replays json_tensor_test.cc).
Dtypes are named as `modelmeta` names them (``float32``, ``string``...); messages use
TensorFlow's C++ names (``float``, ``half``), as TF Serving's do. Floats are written with
C's ``%g`` at six significant digits, or nine (float32) / seventeen (float64) when six
would not read back as the same number; string outputs whose alias ends in ``_bytes``
are written as ``{"b64": ...}``.

``{"b64": ...}`` values are decoded by the caller's function: TF Serving accepts only the
standard alphabet (`standard_b64decode`); the function accepts every dialect clients send.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
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


# --- parsing -------------------------------------------------------------------------


def parse_json(text: str | bytes) -> dict[str, Any]:
    """A JSON object as rapidjson reads it for TF Serving: NaN and Infinity allowed,
    anything after the document ignored, any depth of nesting."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", errors="surrogateescape")
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

    def error(what: str) -> TfJsonError:
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
            piece = format_decimal(item, False)
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


def _type_error(value: Any, dtype: str) -> TfJsonError:
    return invalid(f"JSON Value: {debug_string(value)} Type: {json_type_string(value)} "
                   f"is not of expected type: {tf_type_name(dtype)}")


def _convert(value: Any, dtype: str) -> Any:
    """One JSON scalar as a value of ``dtype``, or TF Serving's error."""
    if dtype in ("float32", "float64"):
        if not _is_number(value):
            raise _type_error(value, dtype)
        if dtype == "float32":
            with np.errstate(over="ignore"):
                return float(np.float32(float(value)))
        return float(value)
    if dtype in _SMALL_INTS:
        if not _is_int_in(value, _INT32):
            raise _type_error(value, dtype)
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", errors="surrogateescape")
    bounds = {"int64": _INT64, "uint32": _UINT32, "uint64": _UINT64}.get(dtype)
    if bounds is not None:
        if not _is_int_in(value, bounds):
            raise _type_error(value, dtype)
        return value
    if dtype == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise TfJsonError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} "
                                       f"to type: {tf_type_name(dtype)}")


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def is_base64_object(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 1
            and isinstance(value.get(_B64_KEY), str))


_STANDARD_B64 = re.compile(r"[A-Za-z0-9+/]*")


def standard_b64decode(text: str) -> bytes | None:
    """Standard-alphabet base64, padded or not, whitespace ignored; None if invalid.

    The URL-safe alphabet (``-_``) is refused, as TF Serving (absl::Base64Unescape)
    refuses it.
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


Base64Decoder = Callable[[str], "bytes | None"]
"""Decodes the text of a ``{"b64": ...}``; None (or its own error) when it is not base64."""


class _Reader:
    """Fills tensors from JSON values with TF Serving's checks."""

    def __init__(self, dtypes: Mapping[str, str], decode_b64: Base64Decoder) -> None:
        self.dtypes = dtypes
        self.decode_b64 = decode_b64

    def fill(self, value: Any, level: int, dtype: str, shape: list[int],
             out: list[Any]) -> None:
        rank = len(shape)
        if not isinstance(value, list):
            if level != rank:
                raise invalid(f"JSON Value: {debug_string(value)} found at incorrect level: "
                              f"{level + 1} in the JSON DOM. Expected at level: {rank}")
            if isinstance(value, dict):
                if dtype != "string":
                    raise _type_error(value, dtype)
                out.append(self.base64_value(value))
            else:
                out.append(_convert(value, dtype))
            return
        if level >= rank:
            raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(value) != shape[level]:
            raise invalid(f"Encountered list at unexpected size: {len(value)} at level: "
                          f"{level} expected size: {shape[level]}")
        for item in value:
            self.fill(item, level + 1, dtype, shape, out)

    def base64_value(self, value: Any) -> bytes:
        if not is_base64_object(value):
            raise invalid(f"JSON Value: {debug_string(value)} not formatted correctly for "
                          "base64 data")
        decoded = self.decode_b64(value[_B64_KEY])
        if decoded is None:
            raise invalid("Unable to base64 decode")
        return decoded

    def tensor(self, name: str, item: Any) -> Tensor:
        if name not in self.dtypes:
            raise invalid(f"JSON object: does not have named input: {name}")
        dtype = self.dtypes[name]
        shape = _dense_shape(item)
        values: list[Any] = []
        self.fill(item, 0, dtype, shape, values)
        return Tensor(dtype, shape, values)

    def instances(self, instances: list) -> dict[str, Tensor]:
        if not isinstance(instances[0], dict) and len(self.dtypes) > 1:
            raise invalid("instances is a plain list, but expecting list of objects as "
                          "multiple input tensors required as per tensorinfo_map")

        def is_element_object(value: Any) -> bool:
            return isinstance(value, dict) and not is_base64_object(value)

        elements_are_objects = is_element_object(instances[0])
        input_names = sorted(self.dtypes)
        rows: dict[str, list[Tensor]] = {}
        for index, element in enumerate(instances):
            if elements_are_objects:
                if not is_element_object(element):
                    raise invalid(f"Expecting object but got list at item {index} of input "
                                  "list")
                for name, value in element.items():
                    try:
                        self._add_row(rows, name, value)
                    except TfJsonError as exc:
                        raise invalid(f"Failed to process element: {index} key: {name} of "
                                      f"'instances' list. Error: {exc}") from None
                if sorted(element) != input_names:
                    raise invalid(f"Failed to process element: {index} of 'instances' list. "
                                  f"JSON object: {debug_string(element)} keys must be equal "
                                  f"to: {','.join(input_names)}")
            else:
                if is_element_object(element):
                    raise invalid(f"Expecting value/list but got object at item {index} of "
                                  "input list")
                try:
                    self._add_row(rows, next(iter(self.dtypes)), element)
                except TfJsonError as exc:
                    raise invalid(f"Failed to process element: {index} of 'instances' list. "
                                  f"Error: {exc}") from None
        tensors = {}
        for name, items in rows.items():
            values = [v for item in items for v in item.values]
            tensors[name] = Tensor(items[0].dtype, [len(instances), *items[0].shape], values)
        return tensors

    def _add_row(self, rows: dict[str, list[Tensor]], name: str, value: Any) -> None:
        row = self.tensor(name, value)
        earlier = rows.setdefault(name, [])
        if earlier:
            first = earlier[0]
            if len(first.values) != len(row.values):
                raise invalid(f"Expecting tensor size: {len(first.values)} but got: "
                              f"{len(row.values)}")
            if first.shape != row.shape:
                raise invalid(f"Expecting shape {_shape_string(first.shape)} but got: "
                              f"{_shape_string(row.shape)}")
        earlier.append(row)

    def columns(self, value: Any) -> dict[str, Tensor]:
        if not isinstance(value, dict) or is_base64_object(value):
            if len(self.dtypes) > 1:
                raise invalid("inputs is a plain value/list, but expecting an object as "
                              "multiple input tensors required as per tensorinfo_map")
            return {name: self.tensor(name, value) for name in self.dtypes}
        for name in self.dtypes:
            if name not in value:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
        return {name: self.tensor(name, value[name]) for name in self.dtypes}


def _shape_string(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def read_request(body: str | bytes | dict[str, Any],
                 input_dtypes: Callable[[str], Mapping[str, str]], *,
                 decode_b64: Base64Decoder = standard_b64decode) -> JsonRequest:
    """A predict body's input tensors, read as TF Serving reads them.

    ``input_dtypes(signature_name)`` gives the signature's inputs (alias -> dtype name;
    the name is ``""`` when the body names none) or raises; an empty map is TF
    Serving's "Failed to get input map" error.
    """
    doc = body if isinstance(body, dict) else parse_json(body)
    signature_name = None
    if SIGNATURE_KEY in doc:
        if not isinstance(doc[SIGNATURE_KEY], str):
            raise invalid(f"JSON Value: {debug_string(doc)} not formatted correctly. "
                          "'signature_name' key must be a string value.")
        signature_name = doc[SIGNATURE_KEY]
    dtypes = input_dtypes(signature_name or "")
    if not dtypes:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    reader = _Reader(dtypes, decode_b64)
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
        return JsonRequest(signature_name, ROW, reader.instances(instances))
    if _INPUTS_KEY in doc:
        return JsonRequest(signature_name, COLUMNAR, reader.columns(doc[_INPUTS_KEY]))
    raise invalid("Missing 'inputs' or 'instances' key")


# --- writing -------------------------------------------------------------------------


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
