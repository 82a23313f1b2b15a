"""Simple TF Serving's JSON on / and /predict, so its mini-program clients work unchanged.

    POST /  {"model_name": "default", "model_version": 2, "signature_name": "serving_default",
             "data": {"image": "<base64>"}}
    200     {"<output>": [[...]], ...}        every output by name, as nested lists
    4xx     {"error": "..."}

A body is Simple TF Serving's when it is a JSON object whose ``data`` is an object and
that has no ``image`` or ``images`` (the native API's fields); anything else on these
paths is the native API. ``model_name`` may be ``default`` (Simple TF Serving's) or the
served name; ``model_version``, when given, must be the served version (``-1``: the
latest). In ``data``, the image input takes one image or a list of them, each as
base64 text in any dialect or ``{"b64": ...}``; it is found by its name, by the source
model's name for it (``original`` in the metadata: ``images``, ``image``), or as the one
field of ``data`` when the model takes nothing else, so a client written for the
original graph's input name works unchanged. The model's other tensor inputs take
nested lists of numbers. Bytes outputs are written as standard base64 text.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from functions import metrics, pipeline
from functions.config import Settings
from functions.errors import BadRequest, ServiceError
from functions.httpio import HttpRequest, HttpResponse
from functions.protocols import Context, answering
from functions.protocols.served import Served, feed, outputs, served

PROTOCOL = "simple-tfserving"
DEFAULT_MODEL_NAME = "default"
DEFAULT_SIGNATURE = "serving_default"
_NATIVE_FIELDS = ("image", "images")


def recognised(request: HttpRequest, settings: Settings) -> dict[str, Any] | None:
    """The body as Simple TF Serving's request, or None when it is not one.

    Cheap for native requests: only a body that mentions ``"data"`` is parsed here.
    """
    media_type = request.content_type
    if media_type and "json" not in media_type:
        return None
    try:
        body = pipeline.request_body(request, settings)
    except ServiceError:
        return None  # the native parser says what is wrong
    if b'"data"' not in body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict) \
            or any(field in doc for field in _NATIVE_FIELDS):
        return None
    return doc


def handle(doc: dict[str, Any], ctx: Context) -> HttpResponse:
    """Answer a recognised body, errors as Simple TF Serving wrote them."""
    return answering(lambda: predict(doc, ctx))


def predict(doc: dict[str, Any], ctx: Context) -> HttpResponse:
    metrics.label_request(protocol=PROTOCOL)
    model = served(ctx)
    _check_request(doc, model)
    data = doc["data"]
    image = model.image_input
    pending = None
    tensors: dict[str, np.ndarray] = {}
    only = len(data) == 1 and len(model.client_inputs()) == 1
    for name, value in data.items():
        if image is not None and (name in (image.name, image.original) or only):
            pending = _images(name, value)
        else:
            tensors[name] = _tensor(name, value, model)
    given = feed(ctx, model, pending, tensors)
    inference = pipeline.infer(ctx.model, given.images, given.tensors)
    answer = {name: _plain(value) for name, value in outputs(model, inference).items()}
    return pipeline.within_limit(HttpResponse.json(200, answer), ctx.settings)


def _check_request(doc: dict[str, Any], model: Served) -> None:
    name = doc.get("model_name", DEFAULT_MODEL_NAME)
    if name not in (DEFAULT_MODEL_NAME, model.name):
        raise BadRequest(f"Invalid model name: {str(name)[:60]}, available models: "
                         f"['{DEFAULT_MODEL_NAME}', '{model.name}']")
    version = doc.get("model_version", -1)
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid model_version: {str(version)[:40]}; send a version "
                         "number") from None
    if number not in (-1, model.version):
        raise BadRequest(f"No model version: {number} to serve; the served version is "
                         f"{model.version}")
    signature = doc.get("signature_name", DEFAULT_SIGNATURE)
    if signature not in (DEFAULT_SIGNATURE, model.metadata.signature):
        raise BadRequest(f"Invalid signature_name: {str(signature)[:60]}; the model serves "
                         f"'{model.metadata.signature}'")


def _images(name: str, value: Any) -> list[tuple[str, bytes | str]]:
    """One image or a list: base64 text in any dialect, or ``{"b64": ...}``."""
    items = value if isinstance(value, list) else [value]
    pending: list[tuple[str, bytes | str]] = []
    for index, item in enumerate(items):
        where = f"data.{name}[{index}]" if isinstance(value, list) else f"data.{name}"
        if isinstance(item, dict) and set(item) == {"b64"}:
            item = item["b64"]
        if not isinstance(item, str):
            raise BadRequest(f'{where} must be base64 text of an image or {{"b64": ...}}')
        pending.append((where, item))
    return pending


def _tensor(name: str, value: Any, model: Served) -> np.ndarray:
    specs = {spec.name: spec for spec in model.client_inputs()}
    spec = specs.get(name)
    if spec is None:
        raise BadRequest(f"the model has no input {name!r}; its inputs are {sorted(specs)}")
    try:
        raw = np.array(value)
        if raw.dtype.kind not in "biuf":
            raise ValueError("its values are not all numbers, in lists of equal length")
        return raw.astype(spec.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"data.{name} is not a {spec.dtype} tensor: {exc}"[:300]) from None


def _plain(value: np.ndarray) -> Any:
    if value.dtype.kind in "OSU":
        return np.vectorize(_text, otypes=[object])(value).tolist()
    return value.tolist()


def _text(item: Any) -> str:
    return base64.b64encode(item).decode("ascii") if isinstance(item, bytes) else str(item)


# --- the OpenAPI document ---------------------------------------------------------------


def openapi_paths(settings: Settings) -> dict[str, Any]:
    """Simple TF Serving's body on the native predict paths: `functions.openapi` widens
    those operations so their JSON body and answers may be either shape."""
    from functions import app
    from functions import openapi as oa

    request = {
        "type": "object", "required": ["data"],
        "not": {"anyOf": [{"required": [field]} for field in _NATIVE_FIELDS]},
        "properties": {
            "model_name": {"type": "string", "default": DEFAULT_MODEL_NAME},
            "model_version": {"type": ["integer", "string"], "default": -1},
            "signature_name": {"type": "string", "default": DEFAULT_SIGNATURE},
            "data": {"type": "object", "minProperties": 1, "description": "the image input "
                     "(one image or a list: base64 text or {\"b64\": ...}) and any other "
                     "tensor inputs as nested lists of numbers"}},
        "description": "Simple TF Serving's request, told apart by its data object"}
    answer = {"type": "object", "minProperties": 1,
              "description": "Simple TF Serving's answer: every output by name"}
    operation = {
        "description": "A JSON body with a data object (and no image or images) is Simple "
                       "TF Serving's request, answered in its shape.",
        "requestBody": {"content": {"application/json": {"schema": request, "examples": {
            "simple": {"value": {"model_name": DEFAULT_MODEL_NAME, "model_version": -1,
                                 "data": {"images": oa.example_image()}}}}}}},
        "responses": oa.protocol_responses({"200": oa.json_response(
            "every output by name, as nested lists", answer)})}
    return {path: {"post": operation} for path in app.PREDICT_PATHS}
