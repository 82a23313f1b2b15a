"""The function itself, on platform-neutral requests: route, parse, predict, answer.

    HttpRequest ─▶ decode.parse_predict_request ─▶ backend.predict ─▶ postprocess ─▶ HttpResponse

Every platform binding calls `App.handle` and nothing else. This is the one
place where errors become HTTP: a `ServiceError` is answered with its status
and message; anything else is logged with its traceback and answered with a
generic 500.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from functions import demo_page, logs
from functions.auth import Authenticator
from functions.backends import Backend, create_backend
from functions.config import Settings
from functions.decode import ImageInput, parse_predict_request
from functions.errors import (
    INTERNAL,
    InvalidImage,
    InvalidOption,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
)
from functions.http import HttpRequest, HttpResponse
from functions.inputs import image_geometry, model_inputs
from functions.masks import DEFAULT_MASK_FORMAT, MASK_FORMATS
from functions.model import LoadedModel
from functions.orientation import upright
from functions.postprocess import CLASSIFIER_ROLES, Options, predictions
from modelmeta import ModelMetadata

log = logging.getLogger("functions")

PREDICT_PATHS = ("/", "/predict")
DEMO_PAGE_WAIT_SECONDS = 30
"""How long the demo page waits for a model still loading before it renders without it."""
HEALTH_PATHS = ("/healthz", "/readyz")
LIVE_PATH = "/livez"
CORS_HEADERS = ("Content-Type, Content-Encoding, X-API-Key, Authorization, X-Request-Id, "
                "X-Key-Id, X-Timestamp, X-Nonce, X-Signature")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class App:
    def __init__(self, settings: Settings | None = None,
                 backend_factory: Callable[[], Backend] | None = None) -> None:
        self.settings = settings or Settings.from_env()
        factory = backend_factory or (lambda: create_backend(self.settings))
        self.model = LoadedModel(factory)
        self.auth = Authenticator(self.settings.auth)
        logs.configure(self.settings.log_format, self.settings.log_level)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request; log one line about it; never raise."""
        started = time.monotonic()
        rid = _request_id(request.headers.get("x-request-id", ""))
        token = logs.request_id.set(rid)
        code = None
        try:
            response = self._route(request)
        except ServiceError as exc:
            response, code = _error_response(exc), exc.code
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path[:200])
            response, code = _error_response(INTERNAL), INTERNAL.code
        finally:
            logs.request_id.reset(token)
        response = response.with_headers({"X-Request-Id": rid, **self._cors(request)})
        log.info("%s %s %d", request.method, request.path[:200], response.status, extra={
            "request_id": rid, "method": request.method, "path": request.path[:200],
            "status": response.status, "error": code, "bytes_in": len(request.body),
            "bytes_out": len(response.body),
            "ms": round((time.monotonic() - started) * 1000, 1)})
        return response

    def _route(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if request.method == "OPTIONS" and self._cors(request):
            return HttpResponse(204, b"", {
                "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
                "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Max-Age": "600"})
        if path in PREDICT_PATHS:
            demo = path == "/" and self.settings.demo_page
            if demo and request.method in ("GET", "HEAD"):
                return self._demo_page()
            if request.method != "POST":
                raise MethodNotAllowed(request.method,
                                       ("GET", "HEAD", "POST") if demo else ("POST",))
            self.auth.check(request)
            return self._predict(request)
        if path == LIVE_PATH:
            return HttpResponse.json(200, {"status": "alive"})
        if path in HEALTH_PATHS:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(request.method, ("GET", "HEAD"))
            return self._health()
        raise NotFound(f"no such path {request.path[:200]!r}; POST images to / or /predict")

    def _predict(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        parsed = parse_predict_request(request, self.settings)
        backend = self.model.get()
        metadata = backend.metadata
        options = self._options(parsed.options, metadata)
        images = tuple(upright(image) for image in parsed.images)
        outputs = _run(backend, images)
        geometries = [image_geometry(image, metadata.image_input.image) for image in images]
        body = {
            "predictions": predictions(metadata, outputs, len(parsed.images), options,
                                       geometries),
            "model": self._model_info(metadata),
        }
        log.info("predicted %d image(s) in %.1f ms", len(parsed.images),
                 (time.monotonic() - started) * 1000)
        response = HttpResponse.json(200, body)
        if len(response.body) > self.settings.max_response_bytes:
            raise PayloadTooLarge(
                f"the response would be {len(response.body):,} bytes, over the limit of "
                f"{self.settings.max_response_bytes:,} bytes (MAX_RESPONSE_BYTES); send "
                "fewer images per request", details={
                    "response_bytes": len(response.body),
                    "limit_bytes": self.settings.max_response_bytes})
        return response

    def _demo_page(self) -> HttpResponse:
        """The try-it page (DEMO_PAGE), with the model's input size once it has loaded."""
        try:
            metadata = self.model.get(timeout=DEMO_PAGE_WAIT_SECONDS).metadata
        except ServiceError as exc:
            return demo_page.render(demo_page.page_config(None, None, exc.message))
        return demo_page.render(demo_page.page_config(metadata, self._model_info(metadata)))

    def _health(self) -> HttpResponse:
        state, error = self.model.status()
        if state in ("idle", "failed"):
            self.model.start_loading()  # a failure is retried once RETRY_SECONDS have passed
            state, error = self.model.status()
        body: dict[str, Any] = {"status": state}
        if state == "ready":
            body["model"] = self._model_info(self.model.get().metadata)
            return HttpResponse.json(200, body)
        if error is not None:
            body.update(error.to_body())
        return HttpResponse.json(503, body, {"Retry-After": "2"} if state == "loading" else {})

    def _options(self, raw: dict[str, Any], metadata: ModelMetadata) -> Options:
        top_k = raw.get("top_k", self.settings.default_top_k)
        if isinstance(top_k, str) and top_k.strip().isdigit():
            top_k = int(top_k)
        classes = max((o.shape[-1] for o in metadata.outputs if o.role in CLASSIFIER_ROLES),
                      default=0)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidOption(f"top_k must be a positive whole number, got {top_k!r:.40}")
        if classes > 0:
            top_k = min(top_k, classes)
        envelope = json.dumps({"predictions": [], "model": self._model_info(metadata)},
                              separators=(",", ":"), ensure_ascii=False)
        return Options(top_k=top_k, mask_format=_mask_format(raw, metadata),
                       max_response_bytes=self.settings.max_response_bytes,
                       response_overhead=len(envelope.encode("utf-8")) - len("[]"))

    def _cors(self, request: HttpRequest) -> dict[str, str]:
        """CORS headers for a browser caller from an allowed origin; none otherwise."""
        origin = request.headers.get("origin")
        allowed = self.settings.cors_origins
        if not origin or not allowed:
            return {}
        if "*" in allowed:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in allowed:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    def _model_info(self, metadata: ModelMetadata) -> dict[str, Any]:
        return {"name": self.settings.model_name or metadata.name,
                "version": self.settings.model_version or _version_from_path(
                    self.settings.model_uri)}


def _run(backend: Backend, images: tuple[ImageInput, ...]) -> dict[str, np.ndarray]:
    """One batched call; if the graph refuses the batch, find and name the bad image."""
    spec = backend.metadata.image_input
    if spec is None:
        raise ServiceError("the served model has no image input")

    def batch(items):
        return model_inputs(backend.metadata, items)

    inputs = batch(images)  # decoding here names its image itself
    try:
        return backend.predict(inputs)
    except InvalidImage as exc:
        if len(images) == 1:
            raise InvalidImage(f"{images[0].where}: {exc.message}") from exc
        for image in images:
            try:
                backend.predict(batch([image]))
            except InvalidImage:
                raise InvalidImage(f"{image.where}: {exc.message}") from exc
        raise


def _mask_format(raw: dict[str, Any], metadata: ModelMetadata) -> str:
    """The ``mask_format`` option: one of `MASK_FORMATS`, for models that return masks."""
    value = raw.get("mask_format")
    if value is None:
        return DEFAULT_MASK_FORMAT
    if not any(o.role == "masks" for o in metadata.outputs):
        raise InvalidOption("mask_format applies to models that return masks; this one "
                            "does not")
    fmt = value.strip().lower() if isinstance(value, str) else value
    if fmt not in MASK_FORMATS:
        raise InvalidOption(f"mask_format must be one of {', '.join(MASK_FORMATS)}, "
                            f"got {value!r:.40}")
    return fmt


def _request_id(given: str) -> str:
    """The caller's X-Request-Id when it is a sane token, else a fresh one."""
    if REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def _version_from_path(uri: str) -> str | None:
    """TF Serving's layout ends in a numeric version directory: report it."""
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return last if last.isdigit() else None


def _error_response(error: ServiceError) -> HttpResponse:
    if error.status >= 500:
        log.warning("answered %d %s: %s", error.status, error.code, error.message)
    return HttpResponse.json(error.status, error.to_body(), error.headers)
