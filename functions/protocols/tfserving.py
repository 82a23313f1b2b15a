"""TF Serving's REST API on the function, for clients written against TF Serving.

    POST /v1/models/NAME[/versions/N | /labels/L]:predict     row or columnar JSON
    POST /v1/models/NAME[...]:classify | :regress             TF Serving's error: the served
                                                              signature is a predict one
    GET  /v1/models/NAME[/versions/N | /labels/L]             version status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata    the signature

Requests and answers follow TF Serving's JSON rules (`functions.protocols.tfjson`, the
same code the local model server uses): ``instances`` or ``inputs``, ``signature_name``,
``{"b64": ...}`` values, ``predictions`` / ``outputs`` with ``%g`` floats and ``_bytes``
outputs as ``{"b64": ...}``, errors as ``{"error": "..."}`` with TF Serving's wording
where it has one. Two leniencies, both for images: ``{"b64": ...}`` may be in any base64
dialect (TF Serving takes the standard alphabet only), and a plain string in the image
input is read as base64 text of the image. The signature shown is `served.Served`'s:
the image input takes encoded images whatever the model is fed.

The status answer also carries KServe v1's ``name`` and ``ready``, so KServe's REST
client can ask ``is_model_ready`` on the same path.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import numpy as np

from functions import metrics, pipeline
from functions.config import Settings
from functions.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    ServiceError,
)
from functions.httpio import HttpRequest, HttpResponse
from functions.protocols import Context, answering, tfjson
from functions.protocols.served import (
    Served,
    configured_version,
    feed,
    output_dtype,
    outputs,
    served,
)
from functions.request.parse import decode_base64

PROTOCOL = "tfserving-rest"
PREFIX = "/v1/"
PREDICT_METHOD = "tensorflow/serving/predict"
DEFAULT_SIGNATURE = "serving_default"

_VERSION = r"(?:/versions/(\d+)|/labels/([^/:]+))?"
_PREDICTION = re.compile(r"(?i)/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)")
_STATUS = re.compile(r"(?i)/v1/models/([^/:]+)" + _VERSION + r"(/metadata)?")
_VERBS = {"classify": ("classification", "tensorflow/serving/classify"),
          "regress": ("regression", "tensorflow/serving/regress")}


def handle(request: HttpRequest, ctx: Context) -> HttpResponse:
    """Answer one request under /v1/, errors as TF Serving writes them."""
    return answering(lambda: _dispatch(request, ctx))


def _dispatch(request: HttpRequest, ctx: Context) -> HttpResponse:
    path = request.path
    if request.method == "POST":
        match = _PREDICTION.fullmatch(path)
        if match is not None:
            name, version, label, verb = match.groups()
            verb = verb.lower()
            metrics.label_request(route=f"/v1/models/{{name}}:{verb}", protocol=PROTOCOL)
            ctx.auth.check(request)
            model = _resolve(ctx, name, version, label)
            if verb == "predict":
                return predict(request, ctx, model)
            return _not_a_predict_signature(request, ctx, model, verb)
    elif request.method in ("GET", "HEAD"):
        match = _STATUS.fullmatch(path)
        if match is not None:
            name, version, label, subresource = match.groups()
            if subresource:
                metrics.label_request(route="/v1/models/{name}/metadata", protocol=PROTOCOL)
                ctx.auth.check(request)
                return _json(_metadata(_resolve(ctx, name, version, label)))
            metrics.label_request(route="/v1/models/{name}", protocol=PROTOCOL)
            return _status(ctx, name, version, label)
    else:
        raise MethodNotAllowed(request.method, ("GET", "HEAD", "POST"))
    raise BadRequest(f"Malformed request: {request.method} {path[:200]}")


def _resolve(ctx: Context, name: str, version: str | None, label: str | None) -> Served:
    """The served model, if the path names it; TF Serving's errors if not."""
    model = served(ctx)
    name = unquote(name)
    if label is not None:
        label = unquote(label)
        if name == model.name and label != model.label:
            raise BadRequest(f"Unrecognized servable version label: {label}")
    if name != model.name:
        what = f"Specific({name}, {int(version)})" if version else f"Latest({name})"
        raise ModelNotFound(f"Servable not found for request: {what}")
    if version is not None and int(version) != model.version:
        raise ModelNotFound(f"Servable not found for request: Specific({name}, {int(version)})")
    return model


# --- predict ----------------------------------------------------------------------------


class _Base64(bytes):
    """Bytes the client sent as ``{"b64": ...}``: the image file itself."""


def _decode_b64(text: str) -> bytes:
    try:
        return _Base64(decode_base64(text, "a b64 value"))
    except ServiceError as exc:
        raise tfjson.invalid(exc.message) from exc


def predict(request: HttpRequest, ctx: Context, model: Served) -> HttpResponse:
    """``:predict``: the body's tensors through the pipeline, the outputs as TF Serving's."""
    body = pipeline.request_body(request, ctx.settings)
    specs = {spec.name: spec for spec in model.client_inputs()}

    def input_dtypes(signature_name: str) -> dict[str, str]:
        if signature_name not in ("", model.metadata.signature):
            raise BadRequest(f'Serving signature name: "{signature_name}" not found in '
                             "signature def")
        return {name: model.input_dtype(spec) for name, spec in specs.items()}

    try:
        parsed = tfjson.read_request(body, input_dtypes, decode_b64=_decode_b64)
    except tfjson.TfJsonError as exc:
        raise _service_error(exc) from None
    image = model.image_input
    pending = None
    tensors: dict[str, np.ndarray] = {}
    for name, tensor in parsed.tensors.items():
        if image is not None and name == image.name:
            pending = _images(tensor, parsed.format, name, several=len(specs) > 1)
        else:
            tensors[name] = tensor.to_numpy()
    given = feed(ctx, model, pending, tensors)
    inference = pipeline.infer(ctx.model, given.images, given.tensors)
    answer = {name: tfjson.Tensor.of(value, output_dtype(value))
              for name, value in outputs(model, inference).items()}
    try:
        text = tfjson.write_response(answer, parsed.format)
    except tfjson.TfJsonError as exc:
        raise _service_error(exc) from None
    return pipeline.within_limit(HttpResponse(200, text.encode("utf-8"), _JSON), ctx.settings)


def _images(tensor: tfjson.Tensor, fmt: str, name: str, *, several: bool
            ) -> list[tuple[str, bytes | str]]:
    """The image input's strings as ``(where, file bytes or base64 text)``."""
    if len(tensor.shape) > 1:
        raise BadRequest(f"the input {name!r} takes a list of images (shape [batch]), not "
                         f"shape {tensor.shape}")
    if fmt == tfjson.ROW:
        label = "instances[{}]" + (f".{name}" if several else "")
    else:
        label = f"inputs.{name}[{{}}]" if several else "inputs[{}]"
    pending: list[tuple[str, bytes | str]] = []
    for index, value in enumerate(tensor.values):
        where = label.format(index) if tensor.shape else label.replace("[{}]", "")
        if isinstance(value, _Base64):
            pending.append((where, bytes(value)))
        else:  # a plain string: the image's base64 text, in any dialect
            pending.append((where, value.decode("utf-8", errors="replace")))
    return pending


def _service_error(exc: tfjson.TfJsonError) -> ServiceError:
    if exc.code == "NOT_FOUND":
        return NotFound(exc.message)
    return BadRequest(exc.message)


def _not_a_predict_signature(request: HttpRequest, ctx: Context, model: Served,
                             verb: str) -> HttpResponse:
    """``:classify`` and ``:regress``: the model serves one predict signature, so TF
    Serving's own refusal, after the body is read as TF Serving reads it."""
    try:
        doc = tfjson.parse_json(pipeline.request_body(request, ctx.settings))
    except tfjson.TfJsonError as exc:
        raise _service_error(exc) from None
    signature = doc.get(tfjson.SIGNATURE_KEY) or DEFAULT_SIGNATURE
    if not isinstance(signature, str):
        raise BadRequest(f"JSON Value: {tfjson.debug_string(doc)} not formatted correctly. "
                         "'signature_name' key must be a string value.")
    kind, method = _VERBS[verb]
    if signature not in (model.metadata.signature, DEFAULT_SIGNATURE):
        raise BadRequest(f"No signature was found with the name: {signature}")
    raise BadRequest(f"Expected {kind} signature method_name to be {method}. Was: "
                     f"{PREDICT_METHOD}")


# --- status and metadata ----------------------------------------------------------------


def _status(ctx: Context, name: str, version: str | None, label: str | None) -> HttpResponse:
    """The version's state, without waiting for a model still loading."""
    state, error = ctx.model.status()
    if state == "idle":
        ctx.model.start_loading()
    if state != "ready":
        code, message = ("UNKNOWN", error.message) if error is not None else ("OK", "")
        return _json({"model_version_status": [{
            "version": str(configured_version(ctx)),
            "state": "END" if error is not None else "LOADING",
            "status": {"error_code": code, "error_message": message}}],
            "name": unquote(name), "ready": False})
    model = _resolve(ctx, name, version, label)
    return _json({"model_version_status": [{
        "version": str(model.version), "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}],
        "name": model.name, "ready": True})


def _metadata(model: Served) -> dict[str, Any]:
    """GetModelMetadata's JSON, as TF Serving writes it (field names and all)."""
    signature = {
        "inputs": {spec.name: _tensor_info(spec.name, model.input_dtype(spec),
                                           model.input_shape(spec))
                   for spec in model.client_inputs()},
        "outputs": {spec.name: _tensor_info(spec.name, spec.dtype, spec.shape)
                    for spec in model.metadata.outputs},
        "method_name": PREDICT_METHOD,
        "defaults": {},
    }
    return {"model_spec": {"name": model.name, "signature_name": "",
                           "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": {
                model.metadata.signature: signature}}}}


def _tensor_info(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"dtype": "DT_" + tfjson.tf_type_name(dtype).upper(),
            "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in shape],
                             "unknown_rank": False},
            "name": f"{name}:0"}


_JSON = {"Content-Type": "application/json"}


def _json(doc: dict[str, Any]) -> HttpResponse:
    return HttpResponse(200, json.dumps(doc, indent=1).encode("utf-8"), dict(_JSON))


# --- the OpenAPI document ---------------------------------------------------------------


_NAME_PATTERN = "[^/:]+"
_ADDRESSES = {"": [], "/versions/{version}": [("version", r"[0-9]+", "the served version")],
              "/labels/{label}": [("label", _NAME_PATTERN, "MODEL_VERSION_LABEL")]}
"""The three ways `_PREDICTION` and `_STATUS` name a model: latest, version, label."""


def openapi_paths(settings: Settings) -> dict[str, Any]:
    """TF Serving's routes for `functions.openapi`: every verb of `_PREDICTION` and both
    answers of `_STATUS`, at each address of `_ADDRESSES`."""
    from functions import openapi as oa

    any_object = {"type": "object"}
    paths: dict[str, Any] = {}
    for address, extra in _ADDRESSES.items():
        suffix = address.split("/")[1].capitalize() if address else ""
        params = [oa.path_parameter("name", _NAME_PATTERN, "the served model's name (MODEL_NAME "
                                    "or its metadata's)", settings.model_name)]
        params += [oa.path_parameter(name, pattern, what) for name, pattern, what in extra]
        base = f"{PREFIX}models/{{name}}{address}"
        paths[f"{base}:predict"] = {"post": oa.secured({
            "operationId": f"tfservingPredict{suffix}", "tags": ["tfserving"],
            "summary": "TF Serving's Predict: row (instances) or columnar (inputs) JSON",
            "description": "The image input takes {\"b64\": ...} (any base64 dialect) or "
                           "base64 text; gzip bodies (Content-Encoding) are read.",
            "parameters": params,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _PREDICT_REQUEST,
                "examples": {"row": {"value": {"instances": [{"b64": oa.example_image()}]}},
                             "columnar": {"value": {"signature_name": DEFAULT_SIGNATURE,
                                                    "inputs": [{"b64": oa.example_image()}]}}},
            }}},
            "responses": oa.protocol_responses({"200": oa.json_response(
                "predictions (row) or outputs (columnar)", _PREDICT_RESPONSE)})}, settings)}
        for verb in _VERBS:
            paths[f"{base}:{verb}"] = {"post": oa.secured({
                "operationId": f"tfserving{verb.capitalize()}{suffix}", "tags": ["tfserving"],
                "summary": f"TF Serving's {verb.capitalize()}: always its 400, since the "
                           "served signature is a predict one",
                "parameters": params,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": any_object}}},
                "responses": oa.protocol_responses({})}, settings)}
        paths[base] = {"get": {
            "operationId": f"tfservingStatus{suffix}", "tags": ["tfserving"],
            "summary": "GetModelStatus (and KServe v1's name and ready)",
            "parameters": params,
            "responses": oa.protocol_responses({"200": oa.json_response(
                "the version's state", _STATUS_RESPONSE)})}}
        paths[f"{base}/metadata"] = {"get": oa.secured({
            "operationId": f"tfservingMetadata{suffix}", "tags": ["tfserving"],
            "summary": "GetModelMetadata: the signature as a client sees it",
            "parameters": params,
            "responses": oa.protocol_responses({"200": oa.json_response(
                "model_spec and metadata.signature_def", _METADATA_RESPONSE)})}, settings)}
    return paths


_PREDICT_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {"signature_name": {"type": "string"},
                   "instances": {"type": "array"}, "inputs": {}},
    "oneOf": [{"required": ["instances"], "not": {"required": ["inputs"]}},
              {"required": ["inputs"], "not": {"required": ["instances"]}}]}
_PREDICT_RESPONSE: dict[str, Any] = {
    "type": "object", "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
    "properties": {"predictions": {"type": "array"}, "outputs": {}}}
_STATUS_RESPONSE: dict[str, Any] = {
    "type": "object", "required": ["model_version_status", "name", "ready"], "properties": {
        "name": {"type": "string"}, "ready": {"type": "boolean"},
        "model_version_status": {"type": "array", "items": {
            "type": "object", "required": ["version", "state", "status"], "properties": {
                "version": {"type": "string"},
                "state": {"enum": ["LOADING", "AVAILABLE", "END"]},
                "status": {"type": "object", "required": ["error_code", "error_message"],
                           "properties": {"error_code": {"type": "string"},
                                          "error_message": {"type": "string"}}}}}}}}
_METADATA_RESPONSE: dict[str, Any] = {
    "type": "object", "required": ["model_spec", "metadata"], "properties": {
        "model_spec": {"type": "object", "required": ["name", "signature_name", "version"],
                       "properties": {"name": {"type": "string"},
                                      "signature_name": {"type": "string"},
                                      "version": {"type": "string"}}},
        "metadata": {"type": "object", "required": ["signature_def"], "properties": {
            "signature_def": {"type": "object", "required": ["signature_def"]}}}}}
