"""TF Serving's JSON tensor rules, ported from tensorflow_serving/util/json_tensor.cc.

One implementation for both sides of the project: the function's TF Serving REST API
(`functions.protocols.tfserving`) and the local model server (`infra.modelserver`, which
wraps these tensors in TensorProtos). Plain Python and numpy: no TensorFlow, no protobuf.

    reading.read_request(body, dtypes)   row ``instances`` or columnar ``inputs`` -> `Tensor`s
    writing.write_response(tensors, fmt) `Tensor`s -> ``{"predictions"}`` / ``{"outputs"}``
    writing.error_body(message)          ``{"error": "..."}``
    tensors                              `Tensor`, `TfJsonError`, the dtypes as TF names them

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

from functions.protocols.tfjson.reading import (
    Base64Decoder,
    debug_string,
    is_base64_object,
    json_type_string,
    parse_json,
    read_request,
    standard_b64decode,
)
from functions.protocols.tfjson.tensors import (
    BYTES_SUFFIX,
    COLUMNAR,
    ROW,
    SIGNATURE_KEY,
    WRITABLE,
    JsonRequest,
    Tensor,
    TfJsonError,
    invalid,
    tf_type_name,
)
from functions.protocols.tfjson.writing import (
    error_body,
    format_decimal,
    write_response,
)

__all__ = [
    "BYTES_SUFFIX", "Base64Decoder", "COLUMNAR", "JsonRequest", "ROW", "SIGNATURE_KEY",
    "Tensor", "TfJsonError", "WRITABLE", "debug_string", "error_body", "format_decimal",
    "invalid", "is_base64_object", "json_type_string", "parse_json", "read_request",
    "standard_b64decode", "tf_type_name", "write_response",
]
