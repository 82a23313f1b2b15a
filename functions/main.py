"""Entry point for functions-framework: Cloud Functions, Cloud Run from source.

    functions-framework --target predict          # from the repository root (./main.py)

This module only converts between Flask and `functions.httpio`, reading the request as
the project's own WSGI binding does (`functions.platforms.wsgi.request_from_environ`); the
function lives in `functions.app`, exactly as for `functions.platforms.aws` and
`functions.platforms.scf`. Nothing heavy happens at import: the server's master process
imports this file and then forks a worker, and TensorFlow must not be loaded before a fork.
The worker starts loading the model as soon as it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import flask
import functions_framework

from functions.config import ConfigError
from functions.errors import render
from functions.httpio import HttpResponse
from functions.platforms.process import MISCONFIGURED
from functions.platforms.wsgi import REFUSED, process_app, request_from_environ, run_deferred

__all__ = ["REFUSED", "predict"]


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    try:
        app = process_app.get()
    except ConfigError:
        return _flask(render(MISCONFIGURED))
    after: list[Callable[[], None]] = []
    answer = _flask(app.handle(*request_from_environ(request.environ,
                                                     app.settings.max_body_bytes,
                                                     request.stream), defer=after.append))
    answer.call_on_close(partial(run_deferred, after))  # the log line once the answer is sent
    return answer


def _flask(response: HttpResponse) -> flask.Response:
    return flask.Response(response.body, status=response.status, headers=response.headers)
