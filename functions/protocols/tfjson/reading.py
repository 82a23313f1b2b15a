"""Requests in: row ``instances`` or columnar ``inputs`` to `Tensor`s, as TF Serving reads them."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from functions.protocols.tfjson.tensors import (
    _B64_KEY,
    _INPUTS_KEY,
    _INSTANCES_KEY,
    _INT32,
    _INT64,
    _MAX_DEBUG_STRING,
    _SMALL_INTS,
    _UINT32,
    _UINT64,
    COLUMNAR,
    ROW,
    SIGNATURE_KEY,
    JsonRequest,
    Tensor,
    TfJsonError,
    format_decimal,
    invalid,
    tf_type_name,
)

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
