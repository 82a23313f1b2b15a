"""Every error the function answers with, and the one place they become HTTP.

    ServiceError                 500 internal      (unknown failures get this, generic)
    ├── BadRequest               400 bad_request
    │   ├── InvalidJSON          400 invalid_json
    │   ├── InvalidBase64        400 invalid_base64
    │   ├── InvalidImage         400 invalid_image  (not an image, corrupt, truncated)
    │   ├── InvalidMultipart     400 invalid_multipart
    │   ├── MissingImage         400 missing_image
    │   └── InvalidOption        400 invalid_option
    ├── Unauthorized             401 unauthorized     (no or bad credentials)
    ├── Forbidden                403 forbidden        (credentials fine, caller not allowed)
    ├── NotFound                 404 not_found
    │   └── ModelNotFound        404 model_not_found (the model server lacks the model or version)
    ├── MethodNotAllowed         405 method_not_allowed
    ├── RequestTimeout           408 request_timeout  (the request did not arrive whole in time)
    ├── PayloadTooLarge          413 payload_too_large (body bytes, pixels, images per request)
    ├── UriTooLong               414 uri_too_long     (the request line is over the server's limit)
    ├── UnsupportedMediaType     415 unsupported_media_type (content type, HEIC, WebP)
    ├── HeaderFieldsTooLarge     431 header_fields_too_large
    ├── ModelNotReady            503 model_not_ready
    │   └── UpstreamUnavailable  503 upstream_unavailable (the model server is down or busy)
    ├── Overloaded               503 overloaded      (a per-process store is full: retry later)
    ├── BadGateway               502 bad_gateway     (the model server answered nonsense)
    └── GatewayTimeout           504 gateway_timeout

`render` is the one place an error becomes HTTP, for every platform. The message of
a `ServiceError` subclass is written for the client; anything else that escapes is
logged with its traceback and answered with a generic 500, so internals never reach
a phone.
"""

from __future__ import annotations

from typing import Any

from functions.httpio import HttpResponse


class ServiceError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        error.update(self.details)
        return {"error": error}


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidBase64(BadRequest):
    code = "invalid_base64"


class InvalidImage(BadRequest):
    code = "invalid_image"


class InvalidMultipart(BadRequest):
    code = "invalid_multipart"


class MissingImage(BadRequest):
    code = "missing_image"


class InvalidOption(BadRequest):
    code = "invalid_option"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ServiceError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method {method} is not allowed here; use {', '.join(allowed)}",
                         headers={"Allow": ", ".join(allowed)})


class RequestTimeout(ServiceError):
    status = 408
    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UriTooLong(ServiceError):
    status = 414
    code = "uri_too_long"


class HeaderFieldsTooLarge(ServiceError):
    status = 431
    code = "header_fields_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class ModelNotReady(ServiceError):
    status = 503
    code = "model_not_ready"


class UpstreamUnavailable(ModelNotReady):
    code = "upstream_unavailable"


class Overloaded(ServiceError):
    status = 503
    code = "overloaded"


class BadGateway(ServiceError):
    status = 502
    code = "bad_gateway"


class GatewayTimeout(ServiceError):
    status = 504
    code = "gateway_timeout"


INTERNAL = ServiceError("internal error; the server log has the details")


def render(error: ServiceError) -> HttpResponse:
    """The one HTTP form of every error: its status, its headers, ``{"error": {...}}``."""
    return HttpResponse.json(error.status, error.to_body(), error.headers)


def clip(value: str, limit: int = 40) -> str:
    """A client value safe to echo in a message: printable and short."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)[1:-1] if not shown.isprintable() else shown
