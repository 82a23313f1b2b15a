"""The Open Inference Protocol's routes in the function's OpenAPI document.

Every route `v2._dispatch` answers: server metadata and health, then each model route of
`v2._MODEL` (metadata, ready, infer) with and without ``/versions/V``; answers and
errors in the protocol's shapes, statuses from the error tree.
"""

from __future__ import annotations

from typing import Any

from functions.config import Settings
from functions.protocols import v2_binary
from functions.protocols.v2 import EXTENSIONS, PLATFORM, SERVER_NAME
from functions.protocols.v2_binary import DTYPES


def openapi_paths(settings: Settings) -> dict[str, Any]:
    """The protocol's routes for `functions.openapi`: those of `_dispatch`, each model route
    (`_MODEL`) with and without ``/versions/V``."""
    from functions import openapi as oa

    paths: dict[str, Any] = {
        "/v2": {"get": oa.secured({
            "operationId": "v2ServerMetadata", "tags": ["open-inference"],
            "summary": "Server metadata: name, version, extensions",
            "responses": oa.protocol_responses({"200": oa.json_response("the server", {
                "type": "object", "required": ["name", "version", "extensions"],
                "properties": {"name": {"const": SERVER_NAME}, "version": {"type": "string"},
                               "extensions": {"type": "array", "items": {
                                   "enum": list(EXTENSIONS)}}}})})}, settings)},
        "/v2/health/live": {"get": {
            "operationId": "v2Live", "tags": ["open-inference"], "summary": "Server liveness",
            "responses": oa.protocol_responses({"200": oa.json_response("live", {
                "type": "object", "required": ["live"],
                "properties": {"live": {"const": True}}})}, ())}},
        "/v2/health/ready": {"get": {
            "operationId": "v2Ready", "tags": ["open-inference"],
            "summary": "Server readiness: the model is loaded",
            "responses": oa.protocol_responses({
                "200": oa.json_response("ready", _READY),
                "503": oa.json_response("not ready yet", _READY)}, ())}},
    }
    for address in ("", "/versions/{version}"):
        suffix = "Version" if address else ""
        params = [oa.path_parameter("name", "[^/]+", "the served model's name (MODEL_NAME or "
                                    "its metadata's)", settings.model_name)]
        if address:
            params.append(oa.path_parameter("version", "[^/]+", "the served version"))
        base = f"/v2/models/{{name}}{address}"
        paths[base] = {"get": oa.secured({
            "operationId": f"v2ModelMetadata{suffix}", "tags": ["open-inference"],
            "summary": "Model metadata: its inputs (the image input is BYTES) and outputs",
            "parameters": params,
            "responses": oa.protocol_responses({"200": oa.json_response(
                "the model", _MODEL_METADATA)})}, settings)}
        paths[f"{base}/ready"] = {"get": {
            "operationId": f"v2ModelReady{suffix}", "tags": ["open-inference"],
            "summary": "Model readiness", "parameters": params,
            "responses": oa.protocol_responses({
                "200": oa.json_response("ready", _MODEL_READY),
                "503": oa.json_response("not loaded yet", _MODEL_READY)})}}
        paths[f"{base}/infer"] = {"post": oa.secured({
            "operationId": f"v2Infer{suffix}", "tags": ["open-inference"],
            "summary": "Inference, JSON or with the binary tensor data extension",
            "description": "The image input is BYTES: each element the image's base64 text "
                           "(JSON) or the file itself (binary data, after a JSON header of "
                           f"{v2_binary.HEADER} bytes). The examples name modelprep's image "
                           "input, image_bytes.",
            "parameters": [*params, {
                "name": v2_binary.HEADER, "in": "header", "required": False,
                "description": "the JSON header's length, when binary data follows it",
                "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _INFER_REQUEST, "examples": {"json": {
                    "value": {"id": "1", "inputs": [{
                        "name": "image_bytes", "datatype": "BYTES", "shape": [1],
                        "data": [oa.example_image()]}]}}}},
                v2_binary.BINARY_CONTENT_TYPE: {"schema": {"type": "string",
                                                           "format": "binary"}}}},
            "responses": oa.protocol_responses({"200": {
                "description": "the outputs: JSON, or a JSON header then binary data when "
                               "binary_data or binary_data_output asked for it",
                "headers": {**oa.json_response("", {})["headers"], v2_binary.HEADER: {
                    "description": "the JSON header's length (binary answers only)",
                    "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": _INFER_RESPONSE},
                            v2_binary.BINARY_CONTENT_TYPE: {
                                "schema": {"type": "string", "format": "binary"}}}}})},
                settings)}
    return paths


_READY: dict[str, Any] = {"type": "object", "required": ["ready"],
                          "properties": {"ready": {"type": "boolean"}}}
_MODEL_READY: dict[str, Any] = {"type": "object", "required": ["name", "ready"],
                                "properties": {"name": {"type": "string"},
                                               "ready": {"type": "boolean"}}}
_TENSOR_INFO: dict[str, Any] = {
    "type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}}
_MODEL_METADATA: dict[str, Any] = {
    "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {"name": {"type": "string"},
                   "versions": {"type": "array", "items": {"type": "string"}},
                   "platform": {"const": PLATFORM},
                   "inputs": {"type": "array", "items": _TENSOR_INFO},
                   "outputs": {"type": "array", "items": _TENSOR_INFO}}}
_INFER_REQUEST: dict[str, Any] = {
    "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "datatype", "shape"], "properties": {
                "name": {"type": "string", "minLength": 1},
                "datatype": {"enum": sorted(DTYPES)},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "data": {"type": "array"},
                "parameters": {"type": "object", "properties": {
                    "binary_data_size": {"type": "integer", "minimum": 0}}}}}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "parameters": {"type": "object", "properties": {
                    "binary_data": {"type": "boolean"}}}}}}}}
_INFER_RESPONSE: dict[str, Any] = {
    "type": "object", "required": ["model_name", "model_version", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name", "datatype", "shape"], "properties": {
                **_TENSOR_INFO["properties"], "data": {"type": "array"},
                "parameters": {"type": "object", "properties": {
                    "binary_data_size": {"type": "integer", "minimum": 0}}}}}}}}
