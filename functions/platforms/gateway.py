"""What the Lambda and SCF bindings share: an event in, the app, a result that fits.

    platform event ─▶ events.*Event.request ─▶ App.handle ─▶ events.*Event.result
                                                               │ larger than the platform
                                                               ▼ returns?
                                          RESPONSE_OFFLOAD_URI set: the body goes to S3,
                                          the client gets a presigned URL (200);
                                          unset: a 413 JSON error the client can read

A platform that gets an oversized result fails the invocation with an error of its own
that never reaches the client as JSON, so the limit is checked here, on the result as it
will be serialised. For the same reason `serve` never raises: an event that cannot be read
is a 400, and anything unforeseen is logged and answered with the generic 500, both as
the platform's proxy response.
"""

from __future__ import annotations

import logging
from typing import Any

from functions.config import ConfigError, Settings
from functions.errors import INTERNAL, PayloadTooLarge, ServiceError, render
from functions.httpio import HttpResponse
from functions.platforms.events import PlatformEvent, payload_size
from functions.platforms.process import MISCONFIGURED, ProcessApp

log = logging.getLogger("functions")

_CARRIED_HEADERS = ("x-request-id", "access-control-allow-origin", "vary")
"""Headers of the original answer that an error or offload answer replacing it keeps."""


def serve(event: PlatformEvent, app: ProcessApp, request_id: str | None = None
          ) -> dict[str, Any]:
    """Answer one platform event with the result that platform expects; never raises."""
    try:
        try:
            application = app.get()
        except ConfigError:
            return event.result(render(MISCONFIGURED))
        try:
            request = event.request(request_id)
        except ServiceError as exc:
            log.info("refused a %s event: %s", event.source, exc.message)
            return event.result(render(exc))
        response = application.handle(request)
        return fit(event, response, application.settings)
    except Exception:
        log.exception("unhandled error answering a %s event", event.source)
        return event.result(render(INTERNAL))


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
        replacement = render(PayloadTooLarge(
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
        return render(exc)
    log.info("response of %d bytes offloaded to S3 (%d bytes of body)", size, len(response.body))
    return HttpResponse.json(200, {
        "result_url": url,
        "expires_in": settings.response_url_seconds,
        "status": response.status,
        "content_type": content_type,
        "bytes": len(response.body),
    })
