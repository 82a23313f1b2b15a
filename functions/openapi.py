"""The function's OpenAPI 3.1 document, built from the code's own definitions.

    functions/errors.py (the tree)   ─▶ every error code, under the status it is sent with
    functions/request/options.py     ─▶ the options: top_k, mask_format and its formats
    functions/config.Settings        ─▶ the limits, the auth schemes and which routes are on
    functions/app.py (the paths)     ─▶ the operations

Nothing here is a copy to keep in step by hand: a new error class, mask format, limit or
route shows up in the document by itself (tests/operate/test_openapi.py checks it does).
`GET /openapi.json` serves it when OPENAPI=true; schemathesis holds the live function to it.

Protocol routes (TF Serving REST, Open Inference Protocol, Simple TF Serving's body) plug
in through `PROTOCOL_MODULES`: each module named there provides ``openapi_paths(settings)
-> dict`` of path items, merged into ``paths``. An operation already there (Simple TF
Serving's body on / and /predict) is widened: its request bodies and answers become
``anyOf`` the native shape and the protocol's.
"""

from __future__ import annotations

import base64
import copy
import importlib
import io
import json
from functools import lru_cache
from typing import Any

from functions import errors
from functions.answers.masks import DEFAULT_MASK_FORMAT, MASK_FORMATS
from functions.config import Settings
from functions.request.cloudfiles import FILE_ID
from functions.request.options import MAX_TOP_K

OPENAPI_VERSION = "3.1.0"
PROTOCOL_MODULES: tuple[str, ...] = ("functions.protocols.tfserving", "functions.protocols.v2",
                                     "functions.protocols.simple")
"""Modules (``functions.protocols.NAME``) whose ``openapi_paths(settings)`` add their routes."""

UNLISTED_STATUSES = (405,)
"""Statuses no listed operation answers: 405 is for a method the document does not list."""
ANY_PATH_STATUSES = (413, 500)
"""Answers any path can give: a body over MAX_BODY_BYTES is refused before routing, and a
misconfigured function answers 500 everywhere."""
REF = "#/components/schemas/"
_REF = REF


def error_codes() -> dict[int, list[str]]:
    """Every error code of `functions.errors`, by the HTTP status it is answered with."""
    by_status: dict[int, list[str]] = {}
    seen: set[type[errors.ServiceError]] = set()
    pending: list[type[errors.ServiceError]] = [errors.ServiceError]
    while pending:
        cls = pending.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        codes = by_status.setdefault(cls.status, [])
        if cls.code not in codes:
            codes.append(cls.code)
        pending.extend(cls.__subclasses__())
    return by_status


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of the function as these settings configure it."""
    from functions import app

    codes = error_codes()
    paths: dict[str, Any] = {}
    predict = _predict_operation(settings)
    for path in app.PREDICT_PATHS:
        item: dict[str, Any] = {"post": {**copy.deepcopy(predict),
                                         "operationId": _operation_id("predict", path)}}
        if path == "/" and settings.demo_page:
            item["get"] = {"operationId": "demoPage", "summary": "The try-it page (DEMO_PAGE)",
                           "responses": _with_common({"200": {
                               "description": "An HTML page", "headers": _request_id_header(),
                               "content": {"text/html": {"schema": {"type": "string"}}}}})}
        paths[path] = item
    paths[app.LIVE_PATH] = {method: {  # any method is answered: probes differ
        "operationId": "live" + ("" if method == "get" else "Post"), "tags": ["health"],
        "summary": "Liveness: the process runs (any method)",
        "responses": _with_common({"200": json_response(
            "Alive", {"$ref": _REF + "Alive"}, {"status": "alive"})})}
        for method in ("get", "post")}
    for path in app.HEALTH_PATHS:
        paths[path] = {"get": {
            "operationId": _operation_id("ready", path), "tags": ["health"],
            "summary": "Readiness: the model is loaded and warmed up",
            "responses": _with_common({
                "200": json_response("Ready", {"$ref": _REF + "Ready"},
                                      {"status": "ready", "model": {"name": "digits",
                                                                    "version": None}}),
                "503": json_response("Loading or failed (Retry-After while loading)",
                                      {"$ref": _REF + "NotReady"},
                                      {"status": "loading"}, retry_after=True)})}}
    if settings.metrics == "prometheus":
        paths[app.METRICS_PATH] = {"get": {
            "operationId": "metrics", "tags": ["operations"],
            "summary": "Prometheus text exposition (METRICS=prometheus)",
            "responses": _with_common({"200": {
                "description": "Counters and histograms; see the README's Metrics section",
                "headers": _request_id_header(),
                "content": {"text/plain": {"schema": {"type": "string"}}}}})}}
    if settings.openapi:
        paths[app.OPENAPI_PATH] = {"get": {
            "operationId": "openapi", "tags": ["operations"], "summary": "This document",
            "responses": _with_common({"200": json_response(
                "OpenAPI 3.1", {"type": "object"})})}}
    for name in PROTOCOL_MODULES:
        _merge_paths(paths, importlib.import_module(name).openapi_paths(settings))
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "tf-image-functions", "version": _version(),
                 "description": "A TensorFlow image model behind one HTTPS function. Every "
                                "error is JSON: {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {"schemas": _schemas(settings, codes)},
        "x-limits": limits(settings),
    }
    schemes = _security_schemes(settings)
    if schemes:
        doc["components"]["securitySchemes"] = schemes
    return doc


def document_bytes(settings: Settings) -> bytes:
    return json.dumps(document(settings), separators=(",", ":")).encode("utf-8")


def limits(settings: Settings) -> dict[str, int]:
    """The request and response limits the function enforces (functions/config.py)."""
    return {"max_body_bytes": settings.max_body_bytes,
            "max_response_bytes": settings.max_response_bytes,
            "max_image_pixels": settings.max_image_pixels,
            "max_images": settings.max_images}


# -- the predict operation -------------------------------------------------------------------


def _predict_operation(settings: Settings) -> dict[str, Any]:
    image = {"$ref": _REF + "Base64Image"}
    form_option_props = {"top_k": {"type": "string", "pattern": "^[0-9]+$",
                                   "description": "top_k as text"},
                         "mask_format": {"$ref": _REF + "MaskFormat"}}
    binary = {"schema": {"type": "string", "format": "binary"}}
    example = _example_png_base64()
    responses: dict[str, Any] = {
        "200": json_response("One prediction per image, in request order",
                              {"$ref": _REF + "PredictResponse"}, _EXAMPLE_ANSWER)}
    for status in sorted(set(error_codes()) - set(UNLISTED_STATUSES)):
        responses[str(status)] = _error_response(status, retry_after=status == 503)
    operation: dict[str, Any] = {
        "summary": "Classify (or segment) one or more images",
        "tags": ["predict"],
        "description": (
            f"Images as JSON base64 (standard or URL-safe, padded or not, data: URLs), "
            f"multipart file parts, a form field or the raw body. At most "
            f"{settings.max_images} images (MAX_IMAGES), {settings.max_body_bytes} body bytes "
            f"(MAX_BODY_BYTES, gzip inflation included) and {settings.max_image_pixels} pixels "
            f"per image (MAX_IMAGE_PIXELS); answers over {settings.max_response_bytes} bytes "
            "(MAX_RESPONSE_BYTES) are a 413. Options may also be query parameters."),
        "parameters": [
            {"name": "top_k", "in": "query", "required": False, "schema": {"$ref": _REF + "TopK"}},
            {"name": "mask_format", "in": "query", "required": False,
             "schema": {"$ref": _REF + "MaskFormat"}},
            {"name": "X-Request-Id", "in": "header", "required": False,
             "description": "Echoed when it is 8-128 of [A-Za-z0-9._:-]; else a new id",
             "schema": {"type": "string"}},
            {"name": "traceparent", "in": "header", "required": False,
             "description": "W3C Trace Context; its trace id is in every log line",
             "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {
            "application/json": {
                "schema": {"$ref": _REF + "PredictJson"},
                "examples": {"one": {"value": {"image": example, "top_k": 3}},
                             "several": {"value": {"images": [example, {"b64": example}]}}}},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"},
                                          **form_option_props}},
                "encoding": {"file": {"contentType": "image/png, image/jpeg, image/gif, "
                                                     "image/bmp, application/octet-stream"}}},
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "required": ["image"],
                           "properties": {"image": image, **form_option_props}}},
            "image/jpeg": binary, "image/png": binary, "application/octet-stream": binary,
        }},
        "responses": responses,
    }
    security = _security(settings)
    if security:
        operation["security"] = security
    return operation


def _schemas(settings: Settings, codes: dict[int, list[str]]) -> dict[str, Any]:
    model_info = {"type": "object", "required": ["name", "version"], "properties": {
        "name": {"type": "string"}, "version": {"type": ["string", "null"]}}}
    ranked: dict[str, Any] = {
        "type": "object", "required": ["class_id", "label", "score"], "properties": {
        "class_id": {"type": "integer", "minimum": 0}, "label": {"type": "string"},
        "score": {"type": "number", "minimum": 0, "maximum": 1}}}
    schemas: dict[str, Any] = {
        "Base64Image": {"type": "string", "minLength": 1, "contentEncoding": "base64",
                        "contentMediaType": "image/*",
                        "description": "JPEG, PNG, GIF or BMP; HEIC, WebP, AVIF, TIFF are 415"},
        "CloudFileImage": {
            "type": "object", "required": ["file_id"], "additionalProperties": False,
            "properties": {"file_id": {"type": "string", "pattern": f"^(?:{FILE_ID.pattern})$",
                                       "examples": ["cloud://prod-1a2b.7072-prod-1a2b/photos/"
                                                    "cat.jpg"]}},
            "description": "A photo uploaded with wx.cloud.uploadFile, by its file id: fetched "
                           "from CLOUD_ENV's storage (400 without CLOUD_ENV, 403 for another "
                           "environment's file, 404 for a missing one, 502/504 when WeChat's "
                           "open API fails or is slow; CLOUD_FILE_TIMEOUT)"},
        "TopK": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K,
                 "default": settings.default_top_k,
                 "description": "classes per prediction (TOP_K), capped at the model's"},
        "MaskFormat": {"type": "string", "enum": list(MASK_FORMATS),
                       "default": DEFAULT_MASK_FORMAT,
                       "description": "how instance masks are encoded; only for models "
                                      "that return masks (else 400 invalid_option)"},
        "PredictJson": {
            "type": "object",
            "description": "image or images (not both); other keys are options",
            "properties": {
                "image": {"anyOf": [{"$ref": _REF + "Base64Image"},
                                    {"$ref": _REF + "CloudFileImage"}]},
                "images": {"type": "array", "minItems": 1, "maxItems": settings.max_images,
                           "items": {"anyOf": [
                    {"$ref": _REF + "Base64Image"},
                    {"type": "object", "required": ["b64"], "additionalProperties": False,
                     "properties": {"b64": {"$ref": _REF + "Base64Image"}}},
                    {"$ref": _REF + "CloudFileImage"}]},
                    "description": f"at most {settings.max_images} (MAX_IMAGES)"},
                "top_k": {"$ref": _REF + "TopK"},
                "mask_format": {"$ref": _REF + "MaskFormat"}},
            "oneOf": [{"required": ["image"], "not": {"required": ["images"]}},
                      {"required": ["images"], "not": {"required": ["image"]}}]},
        "ModelInfo": model_info,
        "Ranked": ranked,
        "Classification": {"type": "object", "required": ["class_id", "label", "score", "top_k"],
                           "properties": {**ranked["properties"],
                                          "top_k": {"type": "array", "items": {
                                              "$ref": _REF + "Ranked"}},
                                          "outputs": {"type": "object"}}},
        "Instances": {"type": "object", "required": ["width", "height", "mask_format",
                                                     "instances"], "properties": {
            "width": {"type": "integer", "minimum": 1}, "height": {"type": "integer",
                                                                   "minimum": 1},
            "mask_format": {"$ref": _REF + "MaskFormat"},
            "instances": {"type": "array", "items": {
                "type": "object", "required": ["class_id", "label", "score", "box", "mask"],
                "properties": {**ranked["properties"],
                               "box": {"type": "array", "items": {"type": "integer"},
                                       "minItems": 4, "maxItems": 4,
                                       "description": "[x1, y1, x2, y2] in image pixels"},
                               "mask": {"description": "polygon rings, base64 PNG, RLE or "
                                                       "float rows, per mask_format"}}}}}},
        "Outputs": {"type": "object", "required": ["outputs"], "properties": {
            "outputs": {"type": "object", "description": "outputs with no special form"}}},
        "PredictResponse": {"type": "object", "required": ["predictions", "model"],
                            "properties": {
                                "predictions": {"type": "array", "items": {"anyOf": [
                                    {"$ref": _REF + "Classification"},
                                    {"$ref": _REF + "Instances"},
                                    {"$ref": _REF + "Outputs"}]}},
                                "model": {"$ref": _REF + "ModelInfo"}}},
        "Alive": {"type": "object", "required": ["status"],
                  "properties": {"status": {"const": "alive"}}},
        "Ready": {"type": "object", "required": ["status", "model"], "properties": {
            "status": {"const": "ready"}, "model": {"$ref": _REF + "ModelInfo"}}},
        "NotReady": {"type": "object", "required": ["status"], "properties": {
            "status": {"enum": ["idle", "loading", "failed"]},
            "error": {"$ref": _REF + "ErrorDetail"}}},
        "ErrorDetail": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"enum": sorted(c for group in codes.values() for c in group)},
            "message": {"type": "string"}},
            "description": "more members may say more (response_bytes, limit_bytes...)"},
    }
    schemas["ProtocolError"] = {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
        "description": "How TF Serving, the Open Inference Protocol and Simple TF Serving "
                       "write an error: its message alone (the status says which)"}
    for status, group in sorted(codes.items()):
        schemas[f"Error{status}"] = {
            "type": "object", "required": ["error"], "properties": {"error": {
                "allOf": [{"$ref": _REF + "ErrorDetail"}],
                "properties": {"code": {"enum": group}}}}}
    return schemas


# -- protocols ---------------------------------------------------------------------------------


def protocol_responses(ok: dict[str, Any], statuses: tuple[int, ...] | None = None
                       ) -> dict[str, Any]:
    """An operation's answers in the protocols' error shape (``{"error": "..."}``): ``ok``,
    then each error status of the tree (``statuses``; default: every one but 405)."""
    codes = error_codes()
    wanted = sorted(set(codes) - set(UNLISTED_STATUSES)) if statuses is None else statuses
    responses = dict(ok)
    for status in (*wanted, *ANY_PATH_STATUSES):
        listed = ", ".join(codes.get(status, []))
        responses.setdefault(str(status), json_response(
            f"error ({listed})", {"$ref": _REF + "ProtocolError"}, retry_after=status == 503))
    return responses


def path_parameter(name: str, pattern: str, description: str,
                   example: str | None = None) -> dict[str, Any]:
    """A path segment the route's ``pattern`` matches, line breaks excluded: the HTTP
    binding (functions-framework's Flask router) answers such a path with its own HTML 404
    before the function runs."""
    pattern = pattern.replace("[^/", "[^/\\n") if pattern.startswith("[^/") else pattern
    schema: dict[str, Any] = {"type": "string", "pattern": f"^(?:{pattern})$"}
    parameter = {"name": name, "in": "path", "required": True, "description": description,
                 "schema": schema}
    if example is not None:
        parameter["example"] = example
    return parameter


def secured(operation: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The operation with the auth schemes these settings turn on (routes that check auth)."""
    security = _security(settings)
    return {**operation, "security": security} if security else operation


def example_image() -> str:
    """Base64 of a real 28x28 PNG (the demo model's size) for the protocols' examples."""
    return _example_png_base64()


def _merge_paths(paths: dict[str, Any], extra: dict[str, Any]) -> None:
    for path, item in extra.items():
        target = paths.setdefault(path, {})
        for method, operation in item.items():
            if method in target:
                _widen(target[method], operation)
            else:
                target[method] = operation


def _widen(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """A second protocol on the same operation: each body and answer may be either shape."""
    for media, spec in extra.get("requestBody", {}).get("content", {}).items():
        _either(base["requestBody"]["content"], media, spec)
    for status, response in extra.get("responses", {}).items():
        mine = base["responses"].get(status)
        if mine is None:
            base["responses"][status] = response
            continue
        for media, spec in response.get("content", {}).items():
            _either(mine.setdefault("content", {}), media, spec)
    if extra.get("description"):
        base["description"] = f"{base.get('description', '')} {extra['description']}".strip()


def _either(content: dict[str, Any], media: str, spec: dict[str, Any]) -> None:
    mine = content.get(media)
    if mine is None:
        content[media] = spec
        return
    if mine["schema"] != spec["schema"]:
        mine["schema"] = {"anyOf": [mine["schema"], spec["schema"]]}
    if "examples" in spec:
        mine.setdefault("examples", {}).update(spec["examples"])


# -- pieces ----------------------------------------------------------------------------------


def json_response(description: str, schema: dict[str, Any], example: Any = None,
                   retry_after: bool = False) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    headers = _request_id_header()
    if retry_after:
        headers["Retry-After"] = {"description": "seconds to wait, while loading or busy",
                                  "schema": {"type": "string"}}
    return {"description": description, "headers": headers,
            "content": {"application/json": media}}


def _error_response(status: int, retry_after: bool = False) -> dict[str, Any]:
    codes = ", ".join(error_codes().get(status, []))
    return json_response(f"error: {codes}", {"$ref": f"{_REF}Error{status}"},
                          retry_after=retry_after)


def _with_common(responses: dict[str, Any]) -> dict[str, Any]:
    for status in ANY_PATH_STATUSES:
        responses.setdefault(str(status), _error_response(status))
    return responses


def _request_id_header() -> dict[str, Any]:
    return {"X-Request-Id": {"description": "the request's id, as in the server's log lines",
                             "required": True, "schema": {"type": "string"}}}


def _operation_id(name: str, path: str) -> str:
    return name + "".join(part.capitalize() for part in path.strip("/").split("/") if part)


def _security_schemes(settings: Settings) -> dict[str, Any]:
    schemes: dict[str, Any] = {}
    if settings.auth.api_keys:
        schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
    if settings.auth.hmac_keys:
        schemes["hmac"] = {"type": "apiKey", "in": "header", "name": "X-Signature",
                           "description": "with X-Key-Id, X-Timestamp and X-Nonce: hex "
                                          "HMAC-SHA256 of METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\n"
                                          "SHA256(body); see the README's Security section"}
    return schemes


def _security(settings: Settings) -> list[dict[str, list[str]]]:
    return [{name: []} for name in _security_schemes(settings)]


@lru_cache(maxsize=1)
def _example_png_base64() -> str:
    """A real 28x28 PNG, so the document's examples are requests the function answers."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tf-image-functions")
    except PackageNotFoundError:
        return "0.0.0"


_EXAMPLE_ANSWER = {"predictions": [{"class_id": 3, "label": "3", "score": 0.981654, "top_k": [
    {"class_id": 3, "label": "3", "score": 0.981654},
    {"class_id": 9, "label": "9", "score": 0.018208}]}],
    "model": {"name": "digits", "version": None}}
