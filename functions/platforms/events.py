"""Serverless platform events to `HttpRequest`, and `HttpResponse` back to what they want.

AWS Lambda and Tencent SCF do not speak HTTP to a function: a gateway turns each request
into a JSON event and turns the function's JSON answer back into HTTP. Every gateway has
its own dialect, and each class here reads one of them:

    PlatformEvent                  base: the fields most dialects share
    ├── RestApiEvent               API Gateway REST API (payload v1: httpMethod, path,
    │   │                          multiValueHeaders, queryStringParameters)
    │   └── AlbEvent               Application Load Balancer (v1-like; query not decoded,
    │                              statusDescription, multi-value headers mirrored, 1 MB)
    ├── HttpApiEvent               API Gateway HTTP API and Lambda Function URLs (payload
    │                              v2: requestContext.http.method, rawPath, rawQueryString)
    ├── ScfEvent                   Tencent SCF: API Gateway trigger and function URLs
    └── UnknownEvent               anything else: answered with a clear 400

Bodies arrive as text, or as base64 when `isBase64Encoded` is true (binary uploads and
multipart on a gateway set up for binary). They always become bytes here and are never
decoded as text, so an image survives byte for byte. A gateway that is *not* set up for
binary hands over a photo as text with every invalid byte replaced by U+FFFD; that is
recognised and answered with what to change on the gateway, instead of "not an image".

The answer is JSON text when the content type is textual, base64 otherwise. Each dialect
knows the largest answer its platform returns (`response_limit`, measured on the event
result as the runtime serialises it); `functions.platforms.gateway` enforces it.

Whatever an event holds, reading it either gives a request or raises `BadRequest`: more
than `MAX_QUERY_PARAMETERS` query parameters, a text body that cannot be UTF-8 (a lone
surrogate from a ``\\ud800`` escape), fields of the wrong JSON type. Nothing else escapes,
so every event is answered with a proxy response.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from functions.errors import BadRequest
from functions.httpio import Headers, HttpRequest, HttpResponse

LAMBDA_RESPONSE_LIMIT = 6_291_456
"""AWS Lambda's synchronous invocation payload limit (6 MB), for the serialised result."""
ALB_RESPONSE_LIMIT = 1_048_576
"""An Application Load Balancer accepts at most 1 MB of result JSON from a Lambda target."""
SCF_RESPONSE_LIMIT = 6_291_456
"""Tencent SCF's synchronous invocation return limit (6 MB)."""
MAX_QUERY_PARAMETERS = 256
"""Query parameters one request may carry, in every dialect (a form body has the same
limit in `functions.request.parse`)."""

_TEXT_TYPES = ("application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded")
_BINARY_REQUEST_TYPES = ("application/octet-stream", "multipart/form-data")


class PlatformEvent:
    """One HTTP request as a platform delivers it, and the result shape it expects back."""

    platform = "AWS Lambda"
    source = "an HTTP request"
    response_limit = LAMBDA_RESPONSE_LIMIT
    binary_hint = "configure the gateway to pass binary bodies base64-encoded"

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event

    def request(self, request_id: str | None = None) -> HttpRequest:
        """The request; raises `BadRequest` when the event cannot hold a valid one.

        `request_id` (the platform's invocation id) becomes X-Request-Id unless the
        client sent its own, so the function's log lines match the platform's.
        """
        headers = dict(self.headers())
        if request_id and not any(k.lower() == "x-request-id" for k in headers):
            headers["X-Request-Id"] = request_id
        headers_map = Headers(headers)
        query = self.query()
        if len(query) > MAX_QUERY_PARAMETERS:
            raise BadRequest(f"the query string has {len(query)} parameters; the limit is "
                             f"{MAX_QUERY_PARAMETERS}")
        return HttpRequest(method=self.method().upper(), path=self.path() or "/",
                           headers=headers_map, body=self.body(headers_map), query=query)

    def result(self, response: HttpResponse) -> dict[str, Any]:
        body, is_base64 = encode_body(response)
        return {"statusCode": response.status, "headers": dict(response.headers),
                "body": body, "isBase64Encoded": is_base64}

    # -- the fields, read the way most dialects spell them ----------------------------

    def method(self) -> str:
        return _text(self.event.get("httpMethod"), "GET")

    def path(self) -> str:
        return _text(self.event.get("path"), "/")

    def headers(self) -> dict[str, str]:
        return _string_map(self.event.get("headers"))

    def query(self) -> dict[str, str]:
        return _string_map(self.event.get("queryStringParameters"))

    def body(self, headers: Headers) -> bytes:
        raw = self.event.get("body")
        if raw is None or raw == "":
            return b""
        if not isinstance(raw, str):
            raise BadRequest(f"the {self.source} event has a body that is not a string")
        flag = self.event.get("isBase64Encoded")
        if flag is True or (isinstance(flag, str) and flag.lower() == "true"):
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadRequest(f"the {self.source} event says isBase64Encoded, but its "
                                 "body is not valid base64") from exc
        if "\ufffd" in raw and _is_binary_type(headers.get("content-type", "")):
            raise BadRequest(f"the {headers.get('content-type', '')[:60]} body reached the "
                             "function as text, so its binary bytes were lost on the way; "
                             f"{self.binary_hint}")
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(f"the {self.source} event's body is not valid Unicode text (it "
                             f"holds a lone surrogate, U+{ord(raw[exc.start]):04X}); send "
                             "the image base64-encoded in valid JSON") from exc


class RestApiEvent(PlatformEvent):
    source = "API Gateway REST API"
    binary_hint = ("add */* (or image/*, application/octet-stream and multipart/form-data) "
                   "to the REST API's binary media types and redeploy it")

    def headers(self) -> dict[str, str]:
        multi = self.event.get("multiValueHeaders")
        if isinstance(multi, Mapping) and multi:
            return {str(k): ",".join(str(v) for v in _as_list(vs)) for k, vs in multi.items()}
        return super().headers()

    def query(self) -> dict[str, str]:
        multi = self.event.get("multiValueQueryStringParameters")
        if isinstance(multi, Mapping) and multi:
            return {str(k): str(_as_list(vs)[0]) for k, vs in multi.items() if _as_list(vs)}
        return super().query()


class AlbEvent(RestApiEvent):
    source = "Application Load Balancer"
    response_limit = ALB_RESPONSE_LIMIT
    binary_hint = "send the body with a binary Content-Type so the load balancer base64-encodes it"

    def query(self) -> dict[str, str]:
        # The load balancer passes query strings through still percent-encoded.
        return {unquote_plus(k): unquote_plus(v) for k, v in super().query().items()}

    def result(self, response: HttpResponse) -> dict[str, Any]:
        result = super().result(response)
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        result["statusDescription"] = f"{response.status} {phrase}"
        if "multiValueHeaders" in self.event:  # the target group has multi-value headers on
            result["multiValueHeaders"] = {k: [v] for k, v in result.pop("headers").items()}
        return result


class HttpApiEvent(PlatformEvent):
    source = "API Gateway HTTP API"
    binary_hint = "the HTTP API should have base64-encoded it; check any proxy in front of it"

    def __init__(self, event: Mapping[str, Any]) -> None:
        super().__init__(event)
        context = event.get("requestContext")
        self._context = context if isinstance(context, Mapping) else {}
        http = self._context.get("http")
        self._http = http if isinstance(http, Mapping) else {}
        if ".lambda-url." in _text(self._context.get("domainName"), ""):
            self.source = "Lambda Function URL"

    def method(self) -> str:
        return _text(self._http.get("method"), "GET")

    def path(self) -> str:
        path = _text(self.event.get("rawPath"), "") or _text(self._http.get("path"), "/")
        stage = _text(self._context.get("stage"), "$default")
        if stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
            path = path[len(stage) + 1:] or "/"
        return path

    def query(self) -> dict[str, str]:
        raw = self.event.get("rawQueryString")
        if isinstance(raw, str):
            query: dict[str, str] = {}
            try:
                pairs = parse_qsl(raw, keep_blank_values=True,
                                  max_num_fields=MAX_QUERY_PARAMETERS)
            except ValueError as exc:  # more fields than max_num_fields
                raise BadRequest(f"the query string has more than {MAX_QUERY_PARAMETERS} "
                                 f"parameters; the limit is {MAX_QUERY_PARAMETERS}") from exc
            for key, value in pairs:
                query.setdefault(key, value)
            return query
        return super().query()


class ScfEvent(PlatformEvent):
    """Tencent SCF: the API Gateway trigger's event, and a function URL's, read alike."""

    platform = "Tencent SCF"
    source = "SCF API Gateway"
    response_limit = SCF_RESPONSE_LIMIT
    binary_hint = ("turn on Base64 encoding for the API in API Gateway, or send the image "
                   'base64-encoded in JSON {"image": "<base64>"}')

    def __init__(self, event: Mapping[str, Any]) -> None:
        super().__init__(event)
        context = event.get("requestContext")
        self._context = context if isinstance(context, Mapping) else {}
        if "serviceId" not in self._context:
            self.source = "SCF function URL"

    def method(self) -> str:
        method = self.event.get("httpMethod") or self._context.get("httpMethod")
        http = self._context.get("http")
        if not method and isinstance(http, Mapping):
            method = http.get("method")
        return _text(method, "GET")

    def path(self) -> str:
        return _text(self.event.get("path"), "") or _text(self.event.get("rawPath"), "/")

    def query(self) -> dict[str, str]:
        for name in ("queryString", "queryStringParameters", "queryParameters"):
            value = self.event.get(name)
            if isinstance(value, Mapping) and value:
                return {str(k): str(_as_list(v)[0]) for k, v in value.items() if _as_list(v)}
        return {}

    def result(self, response: HttpResponse) -> dict[str, Any]:
        body, is_base64 = encode_body(response)
        return {"isBase64Encoded": is_base64, "statusCode": response.status,
                "headers": dict(response.headers), "body": body}


class UnknownEvent(PlatformEvent):
    """An event no gateway sent: a test invoke, a queue, a schedule."""

    expected = ("an API Gateway (REST or HTTP API), Lambda Function URL or Application Load "
                "Balancer request")

    def request(self, request_id: str | None = None) -> HttpRequest:
        keys = ", ".join(sorted(str(k) for k in self.event)[:8]) if self.event else "none"
        raise BadRequest(f"the function was invoked with an event that is not an HTTP "
                         f"request (its keys: {keys[:200]}); it answers {self.expected}")


class UnknownScfEvent(UnknownEvent, ScfEvent):
    expected = "an SCF API Gateway trigger or function URL request"


def lambda_event(event: Any) -> PlatformEvent:
    """The dialect of a Lambda event, recognised from the fields each gateway sets."""
    if not isinstance(event, Mapping):
        return UnknownEvent({})
    context = event.get("requestContext")
    context = context if isinstance(context, Mapping) else {}
    if event.get("version") == "2.0" or isinstance(context.get("http"), Mapping):
        return HttpApiEvent(event)
    if "elb" in context:
        return AlbEvent(event)
    if "httpMethod" in event:
        return RestApiEvent(event)
    return UnknownEvent(event)


def scf_event(event: Any) -> PlatformEvent:
    """An SCF event: any event with an HTTP method is a request, from a gateway or a URL."""
    if not isinstance(event, Mapping):
        return UnknownScfEvent({})
    context = event.get("requestContext")
    context = context if isinstance(context, Mapping) else {}
    if event.get("httpMethod") or context.get("httpMethod") or isinstance(context.get("http"),
                                                                           Mapping):
        return ScfEvent(event)
    return UnknownScfEvent(event)


def encode_body(response: HttpResponse) -> tuple[str, bool]:
    """The body as event text: UTF-8 text when textual, else base64 (images, PNG masks)."""
    if not response.body:
        return "", False
    content_type = ""
    for key, value in response.headers.items():
        if key.lower() == "content-type":
            content_type = value.split(";", 1)[0].strip().lower()
    if _is_text_type(content_type):
        try:
            return response.body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(response.body).decode("ascii"), True


def payload_size(result: Mapping[str, Any]) -> int:
    """Bytes of the result as the runtime sends it: JSON with non-ASCII escaped (an upper
    bound for runtimes that do not escape)."""
    return len(json.dumps(result))


def _is_text_type(media_type: str) -> bool:
    return (media_type.startswith("text/") or media_type in _TEXT_TYPES
            or media_type.endswith("+json") or media_type.endswith("+xml"))


def _is_binary_type(header: str) -> bool:
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type.startswith(("image/", "video/", "audio/")) or \
        media_type in _BINARY_REQUEST_TYPES


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}
