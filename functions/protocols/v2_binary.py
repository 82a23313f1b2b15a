"""The Open Inference Protocol's binary tensor data extension, both ways.

A request may carry tensors as raw bytes after its JSON header: the header's length is
in ``Inference-Header-Content-Length``, each such input says ``"parameters":
{"binary_data_size": N}`` and its bytes follow in input order. Numbers are
little-endian in row-major order, BOOL one byte each, and BYTES elements are each a
4-byte little-endian length followed by that many bytes (so an encoded image travels
as itself, a quarter smaller than base64). Answers use the same layout for outputs
asked for with ``binary_data`` (Triton's and KServe's clients read it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from functions.errors import BadRequest
from functions.httpio import HttpResponse

HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

DATATYPES = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
             "uint64": "UINT64", "int8": "INT8", "int16": "INT16", "int32": "INT32",
             "int64": "INT64", "float16": "FP16", "float32": "FP32", "float64": "FP64",
             "string": "BYTES", "bfloat16": "BF16"}
"""`modelmeta` dtype names to the protocol's datatypes."""
DTYPES = {datatype: dtype for dtype, datatype in DATATYPES.items()}

_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length.strip())
    except ValueError:
        raise BadRequest(f"{HEADER} must be a number of bytes, not "
                         f"{header_length[:40]!r}") from None
    if not 0 < length <= len(body):
        raise BadRequest(f"{HEADER} is {length:,} but the body has {len(body):,} bytes")
    return body[:length], body[length:]


class BinaryData:
    """The binary data after the header, handed out input by input."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def take(self, size: Any, name: str) -> bytes:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"input {name!r}: binary_data_size must be a whole number of "
                             f"bytes, not {size!r}")
        if self.offset + size > len(self.data):
            raise BadRequest(f"input {name!r}: binary_data_size is {size:,} bytes but only "
                             f"{len(self.data) - self.offset:,} bytes of binary data are left")
        chunk = bytes(self.data[self.offset:self.offset + size])
        self.offset += size
        return chunk

    def finish(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise BadRequest(f"{left:,} bytes of binary data after the inputs' "
                             "binary_data_size; each binary input must say its size")


def bytes_elements(raw: bytes, count: int, name: str) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then the bytes."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: the binary BYTES data ends inside an "
                             "element's 4-byte length")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"input {name!r}: a BYTES element says {size:,} bytes but "
                             f"only {len(raw) - offset:,} follow")
        values.append(raw[offset:offset + size])
        offset += size
    if len(values) != count:
        raise BadRequest(f"input {name!r}: the binary data holds {len(values)} BYTES "
                         f"elements; its shape says {count}")
    return values


def numbers(raw: bytes, dtype: str, shape: Sequence[int], name: str) -> np.ndarray:
    """A numeric tensor from its little-endian bytes."""
    numpy_dtype = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * numpy_dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(f"input {name!r}: {DATATYPES[dtype]} of shape {list(shape)} needs "
                         f"{expected:,} bytes of binary data, got {len(raw):,}")
    return np.frombuffer(raw, dtype=numpy_dtype).astype(dtype).reshape(shape)


def to_bytes(array: np.ndarray) -> bytes:
    """An output tensor in the extension's layout."""
    if array.dtype.kind in "OSU":
        parts = []
        for value in array.ravel().tolist():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    if array.dtype == np.bool_:
        return array.astype(np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def response(header: bytes, blobs: Sequence[bytes],
             headers: Mapping[str, str] | None = None) -> HttpResponse:
    """The JSON header, then the binary outputs in order."""
    return HttpResponse(200, header + b"".join(blobs), {
        "Content-Type": BINARY_CONTENT_TYPE, HEADER: str(len(header)), **(headers or {})})
