"""What the Lambda and SCF bindings share: one App per process and the response limit.

    platform event ─▶ events.*Event.request ─▶ App.handle ─▶ events.*Event.result
                                                               │ larger than the platform
                                                               ▼ returns?
                                          RESPONSE_OFFLOAD_URI set: the body goes to S3,
                                          the client gets a presigned URL (200);
                                          unset: a 413 JSON error the client can read

A platform that gets an oversized result fails the invocation with an error of its own
that never reaches the client as JSON, so the limit is checked here, on the result as it
will be serialised.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from functions.app import App
from functions.config import ConfigError, Settings
from functions.errors import PayloadTooLarge, ServiceError
from functions.events import PlatformEvent, payload_size
from functions.http import HttpResponse

log = logging.getLogger("functions")

_CARRIED_HEADERS = ("x-request-id", "access-control-allow-origin", "vary")
"""Headers of the original answer that an error or offload answer replacing it keeps."""


class ProcessApp:
    """The process's `App`, built from the environment on first use."""

    def __init__(self) -> None:
        self._app: App | None = None
        self._lock = threading.Lock()

    def get(self) -> App:
        with self._lock:
            if self._app is None:
                self._app = App(Settings.from_env())
            return self._app

    def preload(self) -> None:
        """Load the model now (at cold start, before the first request), if PRELOAD says so.

        Failures are kept by the model and answered as 503 on each request, so this
        never raises: a function that cannot load its model still answers why.
        """
        try:
            settings = Settings.from_env()
            if settings.preload:
                self.get().model.get()
        except ConfigError as exc:
            log.error("configuration error: %s", exc)
        except ServiceError:
            pass  # recorded by the model; every request will say what went wrong
        except Exception:
            log.exception("preloading the model failed")


def serve(event: PlatformEvent, app: ProcessApp, request_id: str | None = None
          ) -> dict[str, Any]:
    """Answer one platform event with the result that platform expects; never raises."""
    try:
        application = app.get()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return event.result(_error(ServiceError(
            "the function is misconfigured; the server log has the details")))
    try:
        request = event.request(request_id)
    except ServiceError as exc:
        log.info("refused a %s event: %s", event.source, exc.message)
        return event.result(_error(exc))
    response = application.handle(request)
    return fit(event, response, application.settings)


def fit(event: PlatformEvent, response: HttpResponse, settings: Settings) -> dict[str, Any]:
    """The platform result for `response`, kept within the platform's response limit."""
    result = event.result(response)
    size = payload_size(result)
    limit = event.response_limit
    if size <= limit:
        return result
    carried = {k: v for k, v in response.headers.items() if k.lower() in _CARRIED_HEADERS}
    if settings.response_offload_uri:
        replacement = _offload(response, size, settings)
    else:
        log.warning("response of %d bytes is over the %d-byte limit of %s; answering 413",
                    size, limit, event.source)
        replacement = _error(PayloadTooLarge(
            f"the response is {size:,} bytes, more than the {limit:,} bytes {event.platform} "
            f"can return through {event.source}; send fewer images per request (or "
            "smaller ones), or set RESPONSE_OFFLOAD_URI to receive large results as a "
            "download link", details={"response_bytes": size, "limit_bytes": limit}))
    return event.result(replacement.with_headers(carried))


def _offload(response: HttpResponse, size: int, settings: Settings) -> HttpResponse:
    from functions.storage import offload_response

    content_type = next((v for k, v in response.headers.items()
                         if k.lower() == "content-type"), "application/octet-stream")
    try:
        url = offload_response(response.body, content_type, settings.response_offload_uri or "",
                               settings.response_url_seconds)
    except ServiceError as exc:
        return _error(exc)
    log.info("response of %d bytes offloaded to S3 (%d bytes of body)", size, len(response.body))
    return HttpResponse.json(200, {
        "result_url": url,
        "expires_in": settings.response_url_seconds,
        "status": response.status,
        "content_type": content_type,
        "bytes": len(response.body),
    })


def _error(error: ServiceError) -> HttpResponse:
    return HttpResponse.json(error.status, error.to_body(), error.headers)
