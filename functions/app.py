"""The function's endpoints on platform-neutral requests: route, authenticate, answer.

    HttpRequest ─▶ App.handle ─▶ route ─▶ /livez, /healthz, the demo page
                                       └▶ auth ─▶ pipeline.predict (the data plane)

Every platform binding calls `App.handle` and nothing else. Errors become HTTP here,
once: a `ServiceError` is rendered with its status and message (`errors.render`);
anything else is logged with its traceback and answered with a generic 500. Every
request gets one log line, with its request id.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from functions import demo_page, logs, metrics, openapi, pipeline
from functions.auth import Authenticator
from functions.backends import Backend
from functions.backends.factory import create_backend
from functions.config import Settings
from functions.errors import INTERNAL, MethodNotAllowed, NotFound, ServiceError, render
from functions.httpio import HttpRequest, HttpResponse
from functions.loader import LoadedModel
from functions.protocols import Answered, Context, error_json, simple, tfserving, v2
from functions.spans import Spans

log = logging.getLogger("functions")

PREDICT_PATHS = ("/", "/predict")
DEMO_PAGE_WAIT_SECONDS = 30
"""How long the demo page waits for a model still loading before it renders without it."""
HEALTH_PATHS = ("/healthz", "/readyz")
LIVE_PATH = "/livez"
METRICS_PATH = "/metrics"
"""Prometheus text (METRICS=prometheus); a 404 otherwise."""
OPENAPI_PATH = "/openapi.json"
"""The API's OpenAPI 3.1 document (OPENAPI=true); a 404 otherwise."""
NATIVE_ROUTES = (*PREDICT_PATHS, *HEALTH_PATHS, LIVE_PATH, METRICS_PATH, OPENAPI_PATH)
CORS_HEADERS = ("Content-Type, Content-Encoding, X-API-Key, Authorization, X-Request-Id, "
                "X-Key-Id, X-Timestamp, X-Nonce, X-Signature")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class App:
    def __init__(self, settings: Settings | None = None,
                 backend_factory: Callable[[], Backend] | None = None) -> None:
        self.settings = settings or Settings.from_env()
        factory = backend_factory or (lambda: create_backend(self.settings))
        self.metrics = metrics.create(self.settings.metrics, self.settings.backend,
                                      namespace=self.settings.metrics_namespace,
                                      ready=lambda: self.model.status()[0] == "ready")
        self.model = LoadedModel(self.metrics.timed_factory(factory))
        self.auth = Authenticator(self.settings.auth)
        self.protocols = Context(self.settings, self.model, self.auth)
        logs.configure(self.settings.log_format, self.settings.log_level)
        self.spans = Spans(self.settings.otel_traces_exporter)
        self._openapi: bytes | None = None

    def handle(self, request: HttpRequest, refused: ServiceError | None = None,
               defer: Callable[[Callable[[], None]], None] | None = None) -> HttpResponse:
        """Answer one request; log one line about it; never raise.

        ``refused``: the binding has already refused the request (its body is over
        MAX_BODY_BYTES, say); it is answered in the shape of the route it was sent to.
        ``defer``: where a binding that can run work once the answer is sent (a WSGI
        server calls the body's ``close()`` then) takes the request's log line and
        metrics; without it they are written before returning. Deferred, they are off the
        client's wait: about 0.1 ms of a MobileNetV2 request, run while the model's pass
        has left the CPU caches cold.
        """
        started = time.monotonic()
        rid = _request_id(request.headers.get("x-request-id", ""))
        token = logs.request_id.set(rid)
        trace_token = logs.trace.set(logs.request_trace(request.headers,
                                                        self.settings.trace_project))
        measured, metrics_token = metrics.begin()
        code = None
        with self.spans.request(request.method) as span:
            try:
                if refused is not None:
                    raise _shaped(request.path, refused)
                response = self._route(request)
            except ServiceError as exc:
                response, code = _error_response(exc), exc.code
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path[:200])
                response, code = _error_response(INTERNAL), INTERNAL.code
            finally:
                logs.request_id.reset(token)
            response = response.with_headers({"X-Request-Id": rid, **self._cors(request)})
            seconds = time.monotonic() - started
            if measured.route is None:
                measured.route = _route_label(request.path, code)
            outcome = metrics.Outcome(response.status, code, seconds, len(request.body),
                                      len(response.body), rid)
            self.spans.finish(span, request.method, measured, outcome)
        account = partial(self._account, request, measured, outcome)
        if defer is None:
            account()
        else:  # run in this request's context: its trace ids go into the log line
            defer(partial(contextvars.copy_context().run, account))
        metrics.end(metrics_token)
        logs.trace.reset(trace_token)
        return response

    def _account(self, request: HttpRequest, measured: metrics.RequestMetrics,
                 outcome: metrics.Outcome) -> None:
        """The request's log line and its metrics."""
        log.info("%s %s %d", request.method, request.path[:200], outcome.status, extra={
            "request_id": outcome.request_id, "method": request.method,
            "path": request.path[:200], "status": outcome.status, "error": outcome.code,
            "bytes_in": outcome.bytes_in, "bytes_out": outcome.bytes_out,
            "ms": round(outcome.seconds * 1000, 1), **self.auth.log_fields(request)})
        self.metrics.finish(measured, outcome)

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
            simple_request = simple.recognised(request, self.settings)
            if simple_request is not None:  # Simple TF Serving's body, told by its shape
                return simple.handle(simple_request, self.protocols)
            return pipeline.predict(request, self.settings, self.model)
        if path.startswith(tfserving.PREFIX):
            return tfserving.handle(request, self.protocols)
        if path == "/v2" or path.startswith("/v2/"):
            return v2.handle(request, self.protocols)
        if path == LIVE_PATH:
            return HttpResponse.json(200, {"status": "alive"})
        if path in HEALTH_PATHS:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(request.method, ("GET", "HEAD"))
            return self._health()
        if path == METRICS_PATH and self.metrics.exposes:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(request.method, ("GET", "HEAD"))
            text, content_type = self.metrics.exposition()
            return HttpResponse(200, text, {"Content-Type": content_type})
        if path == OPENAPI_PATH and self.settings.openapi:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(request.method, ("GET", "HEAD"))
            if self._openapi is None:  # built once, from the settings alone
                self._openapi = openapi.document_bytes(self.settings)
            return HttpResponse(200, self._openapi,
                                {"Content-Type": "application/json; charset=utf-8"})
        raise NotFound(f"no such path {request.path[:200]!r}; POST images to / or /predict")

    def _demo_page(self) -> HttpResponse:
        """The try-it page (DEMO_PAGE), with the model's input size once it has loaded."""
        try:
            metadata = self.model.get(timeout=DEMO_PAGE_WAIT_SECONDS).metadata
        except ServiceError as exc:
            return demo_page.render(demo_page.page_config(None, None, exc.message))
        info = pipeline.model_info(self.settings, metadata)
        return demo_page.render(demo_page.page_config(metadata, info))

    def _health(self) -> HttpResponse:
        state, error = self.model.status()
        if state in ("idle", "failed"):
            self.model.start_loading()  # a failure is retried once RETRY_SECONDS have passed
            state, error = self.model.status()
        body: dict[str, Any] = {"status": state}
        if state == "ready":
            body["model"] = pipeline.model_info(self.settings, self.model.get().metadata)
            return HttpResponse.json(200, body)
        if error is not None:
            body.update(error.to_body())
        return HttpResponse.json(503, body, {"Retry-After": "2"} if state == "loading" else {})

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


def _route_label(path: str, code: str | None) -> str:
    """The route a request matched, as its pattern: never the raw path (metrics labels)."""
    path = path.rstrip("/") or "/"
    return path if path in NATIVE_ROUTES and code != "not_found" else metrics.UNMATCHED


def _request_id(given: str) -> str:
    """The caller's X-Request-Id when it is a sane token, else a fresh one."""
    if REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def _shaped(path: str, error: ServiceError) -> ServiceError:
    """The error as the protocol served at ``path`` writes it (TF Serving, v2), else as is."""
    if path.startswith(tfserving.PREFIX) or path == "/v2" or path.startswith("/v2/"):
        return Answered(error, error_json(error))
    return error


def _error_response(error: ServiceError) -> HttpResponse:
    if error.status >= 500:
        log.warning("answered %d %s: %s", error.status, error.code, error.message)
    if isinstance(error, Answered):  # a protocol's error, already in that protocol's shape
        return error.response
    return render(error)
