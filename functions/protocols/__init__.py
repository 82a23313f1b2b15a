"""The protocols existing clients already speak, each a thin adapter over the one pipeline.

    /v1/models/...          TF Serving's REST API           (tfserving.py, JSON rules in tfjson/)
    /v2/...                 Open Inference Protocol (KServe v2, Triton)   (v2.py, v2_binary.py)
    / and /predict          Simple TF Serving's JSON, told apart from the native API by its
                            body (simple.py); anything else there is the native API

Each adapter parses its own request into images (and tensor inputs), calls the same
`functions.pipeline` steps the native API runs (body limit and gzip, base64 in any
dialect, image and pixel limits, feed, backend, response limit) and writes the outputs
in its own shape. `App` routes to them after CORS and before the model; authentication
is checked by each route that touches the model, as for the native API.

Errors keep the one `functions.errors` tree (its status comes from the error class), but
each protocol writes them as its clients expect, ``{"error": "<message>"}`` for all three:
`answering` renders them once per protocol and hands `App` an `Answered` error, which
`App` logs with the original code and sends as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from functions.auth import Authenticator
from functions.config import Settings
from functions.errors import INTERNAL, ServiceError
from functions.httpio import HttpResponse
from functions.loader import LoadedModel

log = logging.getLogger("functions")


@dataclass(frozen=True)
class Context:
    """What a protocol route needs from the app: the settings, the model, the authenticator."""

    settings: Settings
    model: LoadedModel
    auth: Authenticator


class Answered(ServiceError):
    """An error already written in its protocol's shape: `App` sends `response` as it is,
    and logs the original error's code."""

    def __init__(self, error: ServiceError, response: HttpResponse) -> None:
        super().__init__(error.message, headers=error.headers, details=error.details)
        self.status = error.status
        self.code = error.code
        self.response = response


def error_json(error: ServiceError) -> HttpResponse:
    """``{"error": "<message>"}`` with the error's status and headers: how TF Serving, the
    Open Inference Protocol and Simple TF Serving all write an error."""
    return HttpResponse.json(error.status, {"error": error.message}, error.headers)


def answering(call: Callable[[], HttpResponse],
              render: Callable[[ServiceError], HttpResponse] = error_json) -> HttpResponse:
    """``call()``, with any error it raises rendered by ``render`` (unknown ones as a
    generic 500, their traceback logged)."""
    try:
        return call()
    except Answered:
        raise
    except ServiceError as exc:
        raise Answered(exc, render(exc)) from exc
    except Exception as exc:
        log.exception("unhandled error in a protocol route")
        raise Answered(INTERNAL, render(INTERNAL)) from exc
