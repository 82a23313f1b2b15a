"""The data plane: one predict request, from its body to the JSON answer.

    parse (request.parse) ─▶ upright (request.images) ─▶ model feed (feed)
      ─▶ backend.predict (backends) ─▶ answer (answers) ─▶ size check

Platform-neutral and protocol-neutral: `App` calls `predict` (the native API) after
routing and authentication; whatever reaches it is already an `HttpRequest`. Every
failure is a `ServiceError` that `App` renders.

The steps are public so that every protocol (`functions.protocols`: TF Serving REST,
Open Inference Protocol v2, Simple TF Serving) runs this same path and only parses and
writes its own shapes: `request_body` (size limit, gzip), `checked_images` (base64 in any
dialect, image count and pixel limits), `infer` (upright, model feed, backend, outputs)
and `within_limit` (the response size limit).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from functions import metrics
from functions.answers.predictions import Options, predictions
from functions.backends import Backend
from functions.config import Settings
from functions.errors import InvalidImage, MissingImage, PayloadTooLarge, ServiceError
from functions.feed import image_geometry, model_inputs
from functions.httpio import HttpRequest, HttpResponse
from functions.loader import LoadedModel
from functions.request import options
from functions.request.images import ImageInput, inspect_image, upright
from functions.request.parse import (
    decode_base64,
    decode_content_encoding,  # the one gzip/deflate reader, shared with every protocol
    parse_predict_request,
)
from modelmeta import ImageSpec, ModelMetadata

log = logging.getLogger("functions")


def predict(request: HttpRequest, settings: Settings, model: LoadedModel) -> HttpResponse:
    """Answer a predict request with ``{"predictions": [...], "model": {...}}``."""
    started = time.monotonic()
    parsed = parse_predict_request(request, settings)
    parse_seconds = time.monotonic() - started
    backend = model.get()
    metadata = backend.metadata
    info = model_info(settings, metadata)
    answer = _answer_options(parsed.options, metadata, settings, info)
    metrics.current().parse_seconds = parse_seconds
    result = infer(model, parsed.images)
    images, outputs = result.images, result.outputs
    answer_at = time.monotonic()
    geometries = [image_geometry(image, image_spec(metadata)) for image in images]
    body = {"predictions": predictions(metadata, outputs, len(images), answer, geometries),
            "model": info}
    log.debug("predicted %d image(s) in %.1f ms", len(images),
              (time.monotonic() - started) * 1000)
    response = HttpResponse.json(200, body)
    metrics.current().answer_seconds = time.monotonic() - answer_at
    return within_limit(response, settings)


@dataclass(frozen=True)
class Inference:
    """What one model call gave: the served model's metadata, the images as the model saw
    them (upright) and the outputs by name, one row per image."""

    metadata: ModelMetadata
    images: tuple[ImageInput, ...]
    outputs: dict[str, np.ndarray]


def infer(model: LoadedModel, images: Sequence[ImageInput],
          tensors: dict[str, np.ndarray] | None = None) -> Inference:
    """Checked images (and any tensor inputs the client gave) to the model's outputs.

    Every protocol calls this: images are turned upright, fed as the metadata says
    (`feed`), run in one batched call and timed as the request's model phase.
    """
    backend = model.get()
    upright_at = time.monotonic()
    turned = tuple(upright(image) for image in images)
    measured = metrics.current()
    measured.parse_seconds = (measured.parse_seconds or 0.0) + time.monotonic() - upright_at
    measured.images = len(turned)
    outputs = metrics.timed_model_phase(lambda: run(backend, turned, tensors))
    return Inference(backend.metadata, turned, outputs)


def run(backend: Backend, images: tuple[ImageInput, ...],
        tensors: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One batched call; if the graph refuses the batch, find and name the bad image.

    ``tensors`` fills inputs of kind ``tensor`` with the client's own values (the
    protocols that carry tensors); the model then needs no image input when every one
    of its inputs is given.
    """
    if not tensors:
        image_spec(backend.metadata)
    inputs = model_feed(backend.metadata, images, tensors)
    batches = metrics.current().batches
    try:
        batches.append(len(images) or _batch_of(tensors))
        return backend.predict(inputs)
    except InvalidImage as exc:
        if len(images) == 1:
            raise InvalidImage(f"{images[0].where}: {exc.message}") from exc
        for index, image in enumerate(images):
            try:
                batches.append(1)
                given = {name: value[index:index + 1] for name, value in (tensors or {}).items()}
                backend.predict(model_feed(backend.metadata, [image], given))
            except InvalidImage:
                raise InvalidImage(f"{image.where}: {exc.message}") from exc
        raise


def model_feed(metadata: ModelMetadata, images: Sequence[ImageInput],
               tensors: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every input of the signature: the images fed as `feed` says, given tensors as given."""
    if not tensors:
        return model_inputs(metadata, images)
    rest = tuple(spec for spec in metadata.inputs if spec.name not in tensors)
    inputs = dict(tensors)
    if rest:
        inputs.update(model_inputs(replace(metadata, inputs=rest), images))
    return inputs


def _batch_of(tensors: dict[str, np.ndarray] | None) -> int:
    return len(next(iter(tensors.values()))) if tensors else 0


def request_body(request: HttpRequest, settings: Settings) -> bytes:
    """A protocol's request body, inflated (gzip, deflate), within MAX_BODY_BYTES both ways."""
    body = bytes(request.body)
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the request body is {len(body):,} bytes; "
                              f"the limit is {settings.max_body_bytes:,} bytes")
    return decode_content_encoding(body, request.headers.get("content-encoding", ""),
                                    settings.max_body_bytes)


def checked_images(pending: Sequence[tuple[str, bytes | str]], settings: Settings
                   ) -> tuple[ImageInput, ...]:
    """Images a protocol found, as ``(where, bytes or base64 text)``: decoded (base64 in any
    dialect) and checked against MAX_IMAGES and MAX_IMAGE_PIXELS before any pixel is."""
    if len(pending) > settings.max_images:
        raise PayloadTooLarge(f"the request has {len(pending)} images; "
                              f"the limit is {settings.max_images}")
    images = []
    for where, raw in pending:
        data = decode_base64(raw, where) if isinstance(raw, str) else raw
        if not data:
            raise MissingImage(f"{where} is empty (0 bytes)")
        images.append(inspect_image(data, where, settings.max_image_pixels))
    return tuple(images)


def within_limit(response: HttpResponse, settings: Settings) -> HttpResponse:
    """The response, if it fits MAX_RESPONSE_BYTES; else a 413 that says how big it was."""
    if len(response.body) > settings.max_response_bytes:
        raise PayloadTooLarge(
            f"the response would be {len(response.body):,} bytes, over the limit of "
            f"{settings.max_response_bytes:,} bytes (MAX_RESPONSE_BYTES); send "
            "fewer images per request", details={
                "response_bytes": len(response.body),
                "limit_bytes": settings.max_response_bytes})
    return response


def image_spec(metadata: ModelMetadata) -> ImageSpec:
    """The served model's image input (size, resize mode, normalisation)."""
    spec = metadata.image_input
    if spec is None or spec.image is None:
        raise ServiceError("the served model has no image input")
    return spec.image


def model_info(settings: Settings, metadata: ModelMetadata) -> dict[str, Any]:
    """The ``model`` member of answers and health checks: name and version served."""
    return {"name": settings.model_name or metadata.name,
            "version": settings.model_version or _version_from_path(settings.model_uri)}


def _answer_options(raw: dict[str, Any], metadata: ModelMetadata, settings: Settings,
                    info: dict[str, Any]) -> Options:
    return Options(top_k=options.top_k(raw, metadata, settings.default_top_k),
                   mask_format=options.mask_format(raw, metadata),
                   max_response_bytes=settings.max_response_bytes,
                   response_overhead=_envelope_bytes(info["name"], info["version"]))


@functools.lru_cache(maxsize=64)
def _envelope_bytes(name: str | None, version: str | None) -> int:
    """Bytes of the response outside its predictions list (the same for every request)."""
    envelope = json.dumps({"predictions": [], "model": {"name": name, "version": version}},
                          separators=(",", ":"), ensure_ascii=False)
    return len(envelope.encode("utf-8")) - len("[]")


def _version_from_path(uri: str) -> str | None:
    """TF Serving's layout ends in a numeric version directory: report it."""
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return last if last.isdigit() else None
