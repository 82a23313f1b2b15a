"""The Open Inference Protocol (KServe v2, Triton's HTTP API) on the function.

    GET  /v2                                       server metadata
    GET  /v2/health/live | /v2/health/ready        liveness, readiness (503 until loaded)
    GET  /v2/models/NAME[/versions/V]/ready        model readiness
    GET  /v2/models/NAME[/versions/V]              model metadata
    POST /v2/models/NAME[/versions/V]/infer        inference

The image input is a ``BYTES`` tensor of encoded images: as JSON, each element is the
image's base64 text (any dialect); with the binary tensor data extension
(`v2_binary`), each element is the file itself. The model's other tensor inputs take
numbers, JSON or binary. Outputs come back as JSON ``data`` (flattened, row-major) or,
when asked with ``binary_data`` (per output) or ``binary_data_output`` (request
parameter), as binary data after the JSON header. The request ``id`` is echoed; other
request parameters are accepted and ignored. JSON BYTES outputs are UTF-8 text when
they are, else standard base64. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any
from urllib.parse import unquote

import numpy as np

from functions import metrics, pipeline
from functions.config import Settings
from functions.errors import BadRequest, InvalidJSON, MethodNotAllowed, ModelNotFound, NotFound
from functions.httpio import HttpRequest, HttpResponse
from functions.protocols import Context, answering, v2_binary
from functions.protocols.served import Served, feed, output_dtype, outputs, served, served_name
from functions.protocols.v2_binary import DATATYPES, DTYPES

PROTOCOL = "open-inference-v2"
SERVER_NAME = "tf-image-functions"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "tensorflow_savedmodel"

_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?")
_INT_RANGES = {dtype: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
               for dtype in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                             "uint64")}


def handle(request: HttpRequest, ctx: Context) -> HttpResponse:
    """Answer one request under /v2, errors as the protocol writes them."""
    return answering(lambda: _dispatch(request, ctx))


def _dispatch(request: HttpRequest, ctx: Context) -> HttpResponse:
    path = request.path.rstrip("/") or "/"
    if path == "/v2/health/live":
        _get_only(request)
        metrics.label_request(route=path, protocol=PROTOCOL)
        return _json(200, {"live": True})
    if path == "/v2/health/ready":
        _get_only(request)
        metrics.label_request(route=path, protocol=PROTOCOL)
        ready = _ready(ctx)
        return _json(200 if ready else 503, {"ready": ready})
    if path == "/v2":
        _get_only(request)
        metrics.label_request(route=path, protocol=PROTOCOL)
        ctx.auth.check(request)
        return _json(200, {"name": SERVER_NAME, "version": SERVER_VERSION,
                           "extensions": list(EXTENSIONS)})
    match = _MODEL.fullmatch(path)
    if match is None:
        raise NotFound(f"no such path {request.path[:200]!r} in the Open Inference Protocol")
    name, version, action = unquote(match.group(1)), match.group(2), match.group(3)
    if action == "/infer":
        if request.method != "POST":
            raise MethodNotAllowed(request.method, ("POST",))
        metrics.label_request(route="/v2/models/{name}/infer", protocol=PROTOCOL)
        ctx.auth.check(request)
        return infer(request, ctx, _resolve(ctx, name, version))
    _get_only(request)
    if action == "/ready":
        metrics.label_request(route="/v2/models/{name}/ready", protocol=PROTOCOL)
        if not _ready(ctx):
            if name != served_name(ctx):
                raise ModelNotFound(_unknown(name, version))
            return _json(503, {"name": name, "ready": False})
        model = _resolve(ctx, name, version)
        return _json(200, {"name": model.name, "ready": True})
    metrics.label_request(route="/v2/models/{name}", protocol=PROTOCOL)
    ctx.auth.check(request)
    return _json(200, metadata(_resolve(ctx, name, version)))


def _get_only(request: HttpRequest) -> None:
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(request.method, ("GET", "HEAD"))


def _ready(ctx: Context) -> bool:
    state, _ = ctx.model.status()
    if state in ("idle", "failed"):
        ctx.model.start_loading()  # a failure is retried once the loader allows it
        state, _ = ctx.model.status()
    return state == "ready"


def _unknown(name: str, version: str | None) -> str:
    return f"Request for unknown model: '{name}'" + (f" version {version}" if version else "") \
        + " is not found"


def _resolve(ctx: Context, name: str, version: str | None) -> Served:
    model = served(ctx)
    if name != model.name or (version is not None and version != str(model.version)):
        raise ModelNotFound(_unknown(name, version))
    return model


def metadata(model: Served) -> dict[str, Any]:
    """The model metadata answer: name, versions, platform, inputs and outputs."""
    return {
        "name": model.name, "versions": [str(model.version)], "platform": PLATFORM,
        "inputs": [{"name": spec.name, "datatype": _datatype(model.input_dtype(spec)),
                    "shape": list(model.input_shape(spec))} for spec in model.client_inputs()],
        "outputs": [{"name": spec.name, "datatype": _datatype(spec.dtype),
                     "shape": list(spec.shape)} for spec in model.metadata.outputs],
    }


def _datatype(dtype: str) -> str:
    return DATATYPES.get(dtype, dtype.upper())


# --- infer ------------------------------------------------------------------------------


def infer(request: HttpRequest, ctx: Context, model: Served) -> HttpResponse:
    """An inference request through the pipeline; the outputs as JSON or binary data."""
    body = pipeline.request_body(request, ctx.settings)
    header, binary = v2_binary.split_body(body, request.headers.get(v2_binary.HEADER.lower()))
    doc = _load(header)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('the request needs "inputs": a non-empty list of tensors')
    data = v2_binary.BinaryData(binary)
    image = model.image_input
    pending: list[tuple[str, bytes | str]] | None = None
    tensors: dict[str, np.ndarray] = {}
    for index, item in enumerate(inputs):
        name, datatype, shape = _input_header(item, index)
        if name in tensors or (image is not None and name == image.name and pending is not None):
            raise BadRequest(f"input {name!r} is given more than once")
        raw = None
        params = item.get("parameters")
        if isinstance(params, dict) and "binary_data_size" in params:
            raw = data.take(params["binary_data_size"], name)
        elif "data" not in item:
            raise BadRequest(f"input {name!r} has neither \"data\" nor binary data "
                             "(parameters.binary_data_size)")
        if image is not None and name == image.name:
            if datatype != "BYTES":
                raise BadRequest(f"input {name!r} takes encoded images as BYTES, not {datatype}")
            pending = _images(name, shape, raw, item.get("data"))
        else:
            tensors[name] = _tensor(model, name, datatype, shape, raw, item.get("data"))
    data.finish()
    wanted, binary_out = _requested(doc, model)
    given = feed(ctx, model, pending, tensors)
    inference = pipeline.infer(ctx.model, given.images, given.tensors)
    answer: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if "id" in doc:
        answer["id"] = doc["id"]
    written, blobs = [], []
    for name, value in outputs(model, inference, wanted).items():
        entry: dict[str, Any] = {"name": name, "datatype": _datatype(output_dtype(value)),
                                 "shape": list(value.shape)}
        if binary_out[name]:
            blob = v2_binary.to_bytes(value)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(value)
        written.append(entry)
    answer["outputs"] = written
    text = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    response = v2_binary.response(text, blobs) if blobs else HttpResponse(
        200, text, {"Content-Type": "application/json"})
    return pipeline.within_limit(response, ctx.settings)


def _load(header: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(f"the request header is not valid JSON: {exc}"[:300]) from None
    if not isinstance(doc, dict):
        raise InvalidJSON("the request must be a JSON object with \"inputs\"")
    return doc


def _input_header(item: Any, index: int) -> tuple[str, str, list[int]]:
    if not isinstance(item, dict):
        raise BadRequest(f"inputs[{index}] must be an object with name, shape, datatype")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}] has no name")
    if datatype not in DTYPES:
        raise BadRequest(f"input {name!r}: datatype must be one of {sorted(DTYPES)}, not "
                         f"{str(datatype)[:40]!r}")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of sizes (whole numbers "
                         "0 or more)")
    return name, datatype, shape


def _images(name: str, shape: list[int], raw: bytes | None,
            data: Any) -> list[tuple[str, bytes | str]]:
    """The image input's elements as ``(where, file bytes or base64 text)``."""
    if len(shape) != 1:
        raise BadRequest(f"input {name!r} takes a list of images, shape [batch]; got {shape}")
    if raw is not None:
        values: list[bytes | str] = list(v2_binary.bytes_elements(raw, shape[0], name))
    else:
        flat = _flatten(data, name)
        if len(flat) != shape[0]:
            raise BadRequest(f"input {name!r} has {len(flat)} elements; its shape says "
                             f"{shape[0]}")
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"input {name!r}: BYTES elements in JSON must be strings, the "
                             "images' base64 text")
        values = list(flat)
    return [(f"{name}[{index}]", value) for index, value in enumerate(values)]


def _tensor(model: Served, name: str, datatype: str, shape: list[int], raw: bytes | None,
            data: Any) -> np.ndarray:
    specs = {spec.name: spec for spec in model.client_inputs()}
    spec = specs.get(name)
    if spec is None:
        raise BadRequest(f"the model has no input {name!r}; its inputs are {sorted(specs)}")
    dtype = DTYPES[datatype]
    if dtype != spec.dtype:
        raise BadRequest(f"input {name!r} is {_datatype(spec.dtype)}, not {datatype}")
    if dtype == "string":
        raise BadRequest(f"input {name!r}: BYTES tensors other than the images are not "
                         "supported")
    if raw is not None:
        return v2_binary.numbers(raw, dtype, shape, name)
    flat = _flatten(data, name)
    if len(flat) != math.prod(shape):
        raise BadRequest(f"input {name!r} has {len(flat)} elements; shape {shape} needs "
                         f"{math.prod(shape)}")
    for value in flat:
        _check_number(value, dtype, name)
    return np.array(flat, dtype=dtype).reshape(shape)


def _flatten(data: Any, name: str) -> list[Any]:
    """The protocol's data: a flat list, or nested lists flattened row-major."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a list")
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) > 32:
                    raise BadRequest(f"input {name!r}: data is nested too deeply")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _check_number(value: Any, dtype: str, name: str) -> None:
    if dtype == "bool":
        ok = isinstance(value, bool)
    elif dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise BadRequest(f"input {name!r}: {str(value)[:40]!r} is not a "
                         f"{DATATYPES[dtype]} value")


def _requested(doc: dict[str, Any], model: Served) -> tuple[list[str], dict[str, bool]]:
    """The outputs asked for, in order, and which go back as binary data."""
    params = doc.get("parameters")
    binary_default = bool(isinstance(params, dict) and params.get("binary_data_output"))
    names = [spec.name for spec in model.metadata.outputs]
    asked = doc.get("outputs")
    if asked is None:
        return names, {name: binary_default for name in names}
    if not isinstance(asked, list):
        raise BadRequest('"outputs" must be a list of {"name": ...}')
    wanted, binary = [], {}
    for item in asked:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in names:
            raise BadRequest(f"unexpected inference output {str(name)[:60]!r} for model "
                             f"{model.name!r}; its outputs are {names}")
        item_params = item.get("parameters")
        wanted.append(name)
        binary[name] = bool(item_params.get("binary_data", binary_default)) \
            if isinstance(item_params, dict) else binary_default
    return wanted, binary


def _json_data(value: np.ndarray) -> list[Any]:
    flat = value.ravel()
    if value.dtype.kind not in "OSU":
        return flat.tolist()
    out = []
    for item in flat.tolist():
        if isinstance(item, bytes):
            try:
                out.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(base64.b64encode(item).decode("ascii"))
        else:
            out.append(str(item))
    return out


def _json(status: int, doc: dict[str, Any]) -> HttpResponse:
    return HttpResponse.json(status, doc)



def openapi_paths(settings: Settings) -> dict[str, Any]:
    """The protocol's routes for `functions.openapi` (written in `v2_openapi`)."""
    from functions.protocols import v2_openapi

    return v2_openapi.openapi_paths(settings)
