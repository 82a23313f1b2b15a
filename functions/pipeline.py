"""The data plane: one predict request, from its body to the JSON answer.

    parse (request.parse) ─▶ upright (request.images) ─▶ model feed (feed)
      ─▶ backend.predict (backends) ─▶ answer (answers) ─▶ size check

Platform-neutral and protocol-neutral: `App` calls `predict` after routing and
authentication; whatever reaches it is already an `HttpRequest`. Every failure is a
`ServiceError` that `App` renders.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from functions import metrics
from functions.answers.predictions import Options, predictions
from functions.backends import Backend
from functions.config import Settings
from functions.errors import InvalidImage, PayloadTooLarge, ServiceError
from functions.feed import image_geometry, model_inputs
from functions.httpio import HttpRequest, HttpResponse
from functions.loader import LoadedModel
from functions.request import options
from functions.request.images import ImageInput, upright
from functions.request.parse import parse_predict_request
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
    upright_at = time.monotonic()
    images = tuple(upright(image) for image in parsed.images)
    measured = metrics.current()
    measured.parse_seconds = parse_seconds + time.monotonic() - upright_at
    measured.images = len(images)
    outputs = metrics.timed_model_phase(lambda: run(backend, images))
    answer_at = time.monotonic()
    geometries = [image_geometry(image, image_spec(metadata)) for image in images]
    body = {"predictions": predictions(metadata, outputs, len(images), answer, geometries),
            "model": info}
    log.debug("predicted %d image(s) in %.1f ms", len(images),
              (time.monotonic() - started) * 1000)
    response = HttpResponse.json(200, body)
    measured.answer_seconds = time.monotonic() - answer_at
    if len(response.body) > settings.max_response_bytes:
        raise PayloadTooLarge(
            f"the response would be {len(response.body):,} bytes, over the limit of "
            f"{settings.max_response_bytes:,} bytes (MAX_RESPONSE_BYTES); send "
            "fewer images per request", details={
                "response_bytes": len(response.body),
                "limit_bytes": settings.max_response_bytes})
    return response


def run(backend: Backend, images: tuple[ImageInput, ...]) -> dict[str, np.ndarray]:
    """One batched call; if the graph refuses the batch, find and name the bad image."""
    image_spec(backend.metadata)
    inputs = model_inputs(backend.metadata, images)  # decoding here names its image itself
    batches = metrics.current().batches
    try:
        batches.append(len(images))
        return backend.predict(inputs)
    except InvalidImage as exc:
        if len(images) == 1:
            raise InvalidImage(f"{images[0].where}: {exc.message}") from exc
        for image in images:
            try:
                batches.append(1)
                backend.predict(model_inputs(backend.metadata, [image]))
            except InvalidImage:
                raise InvalidImage(f"{image.where}: {exc.message}") from exc
        raise


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
    envelope = json.dumps({"predictions": [], "model": info}, separators=(",", ":"),
                          ensure_ascii=False)
    return Options(top_k=options.top_k(raw, metadata, settings.default_top_k),
                   mask_format=options.mask_format(raw, metadata),
                   max_response_bytes=settings.max_response_bytes,
                   response_overhead=len(envelope.encode("utf-8")) - len("[]"))


def _version_from_path(uri: str) -> str | None:
    """TF Serving's layout ends in a numeric version directory: report it."""
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return last if last.isdigit() else None
