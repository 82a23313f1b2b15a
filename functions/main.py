"""Entry point for functions-framework (Cloud Functions, Cloud Run, local serving).

    functions-framework --target predict --source functions/main.py

This module only converts between Flask and `functions.http`; the function
lives in `functions.app`. Nothing heavy happens at import: the server's master
process imports this file and then forks a worker, and TensorFlow must not be
loaded before a fork. The worker starts loading the model as soon as it exists.
"""

from __future__ import annotations

import logging
import os
import threading

import flask
import functions_framework

from functions.app import App
from functions.config import ConfigError, Settings
from functions.errors import PayloadTooLarge, ServiceError, error_body
from functions.http import Headers, HttpRequest

log = logging.getLogger("functions")
_app: App | None = None
_app_lock = threading.Lock()


def get_app() -> App:
    """The process's App, built on first use from the environment."""
    global _app
    with _app_lock:
        if _app is None:
            _app = App(Settings.from_env())
        return _app


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    try:
        app = get_app()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return _json_error(ServiceError("the function is misconfigured; the server log "
                                        "has the details"))
    limit = app.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(request.content_length, limit)
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        return _too_large(None, limit)
    response = app.handle(HttpRequest(
        method=request.method,
        path=request.path,
        headers=Headers(dict(request.headers)),
        body=body,
        query=request.args.to_dict(flat=True),
    ))
    return flask.Response(response.body, status=response.status, headers=response.headers)


def _too_large(size: int | None, limit: int) -> flask.Response:
    said = f"{size} bytes" if size is not None else "more than that"
    return _json_error(PayloadTooLarge(f"request body is {said}; the limit is {limit} bytes "
                                       "(MAX_BODY_BYTES)", headers={"Connection": "close"}))


def _json_error(error: ServiceError) -> flask.Response:
    return flask.Response(error_body(error), status=error.status, headers=error.headers,
                          content_type="application/json; charset=utf-8")


def _start_loading_after_fork() -> None:
    """In a freshly forked server worker: start loading the model right away."""
    global _app, _app_lock
    _app, _app_lock = None, threading.Lock()  # never inherit the parent's App or its locks
    try:
        if Settings.from_env().preload:
            get_app().model.start_loading()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)


os.register_at_fork(after_in_child=_start_loading_after_fork)
