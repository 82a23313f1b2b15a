"""Entry point for functions-framework: Cloud Functions, Cloud Run, any WSGI server.

    functions-framework --target predict          # from the repository root (./main.py)

This module only converts between Flask and `functions.httpio`; the function lives in
`functions.app`, exactly as for `functions.platforms.aws` and `functions.platforms.scf`.
Nothing heavy happens at import: the server's master process imports this file and then
forks a worker, and TensorFlow must not be loaded before a fork. The worker starts
loading the model as soon as it exists.
"""

from __future__ import annotations

import os

import flask
import functions_framework

from functions.config import ConfigError
from functions.errors import PayloadTooLarge, ServiceError, render
from functions.httpio import Headers, HttpRequest, HttpResponse
from functions.platforms.process import MISCONFIGURED, ProcessApp, limit_malloc_arenas

_app = ProcessApp()
REFUSED = "functions.refused"
"""WSGI environ key under which a server in front hands over a `ServiceError` it refused
the request with, so the app answers it in the shape of the route (and logs, counts it)."""


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    try:
        app = _app.get()
    except ConfigError:
        return _flask(render(MISCONFIGURED))
    limit = app.settings.max_body_bytes
    refused: ServiceError | None = request.environ.get(REFUSED)
    if refused is not None:  # a server in front refused the body already (functions.serving)
        body = b""
    elif request.content_length is not None and request.content_length > limit:
        refused, body = _too_large(request.content_length, limit), b""
    else:
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            refused, body = _too_large(None, limit), b""
    environ = request.environ
    return _flask(app.handle(HttpRequest(
        method=request.method,
        path=request.path,
        headers=_headers(environ),
        body=body,
        query=request.args.to_dict(flat=True) if environ.get("QUERY_STRING") else {},
    ), refused))


def _headers(environ: dict) -> Headers:
    """The request's headers read straight from the WSGI environ, as werkzeug's
    `EnvironHeaders` reads them, without its title-cased names (`Headers` lower-cases)."""
    found = {key[5:].replace("_", "-"): value for key, value in environ.items()
             if key.startswith("HTTP_") and key not in _BODY_HEADERS}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            found[key.replace("_", "-")] = environ[key]
    return Headers(found)


_BODY_HEADERS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


def _too_large(size: int | None, limit: int) -> PayloadTooLarge:
    said = f"{size} bytes" if size is not None else "more than that"
    return PayloadTooLarge(f"request body is {said}; the limit is {limit} bytes "
                           "(MAX_BODY_BYTES)", headers={"Connection": "close"})


def _flask(response: HttpResponse) -> flask.Response:
    return flask.Response(response.body, status=response.status, headers=response.headers)


def _start_loading_after_fork() -> None:
    """In a freshly forked server worker: forget the parent's app, start loading the model."""
    limit_malloc_arenas()
    _app.forget()
    _app.preload(wait=False)


os.register_at_fork(after_in_child=_start_loading_after_fork)
