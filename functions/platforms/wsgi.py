"""The function as a plain WSGI app, and the one reader of a WSGI request both bindings use.

    WSGI environ ─▶ request_from_environ ─▶ App.handle ─▶ status, headers, body

`functions.main` (functions-framework: Cloud Functions, where Flask is the contract) and
`app` here (the project's own server, `python -m functions.serving`: containers, Cloud
Run, SCF, WeChat Cloud Run, `make serve`) read a request the same way, with
`request_from_environ`. `app` calls `App.handle` with nothing in between: no Flask
request and response objects and no functions-framework wrapper around each request.
Interleaved against functions-framework's server on 2 CPUs that measured 0.3-1.2 ms off
the p50 of a 20 ms MobileNetV2 request, where the model's pass through the CPU caches
makes every line of Python after it slower (the README's benchmarks say where the bench
itself disagrees).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import parse_qsl

from functions.config import ConfigError
from functions.errors import PayloadTooLarge, ServiceError, render
from functions.httpio import Headers, HttpRequest
from functions.platforms.process import MISCONFIGURED, ProcessApp, limit_malloc_arenas

REFUSED = "functions.refused"
"""WSGI environ key under which a server in front hands over a `ServiceError` it refused
the request with, so the app answers it in the shape of the route (and logs, counts it)."""

_BODY_HEADERS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})
StartResponse = Callable[..., Any]

process_app = ProcessApp()
"""The process's one `App`, for this binding and the functions-framework one alike."""


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI app: every path, every method, answered by `App.handle`."""
    after: list[Callable[[], None]] = []
    try:
        function = process_app.get()
    except ConfigError:
        response = render(MISCONFIGURED)
    else:
        response = function.handle(*request_from_environ(environ, function.settings
                                                         .max_body_bytes), defer=after.append)
    headers = [*response.headers.items(), ("Content-Length", str(len(response.body)))]
    start_response(f"{response.status} {_phrase(response.status)}", headers)
    return SentBody([] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body], after)


class SentBody(list):
    """A response body whose ``close()``, which the WSGI server calls once it has sent the
    body (PEP 3333), runs the work `App.handle` deferred: the request's log line and
    metrics are written while the client already reads its answer."""

    def __init__(self, chunks: list[bytes], after: list[Callable[[], None]]) -> None:
        super().__init__(chunks)
        self._after = after

    def close(self) -> None:
        run_deferred(self._after)


def run_deferred(after: list[Callable[[], None]]) -> None:
    """Run (once) the work `App.handle` deferred until its answer was sent."""
    while after:
        work = after.pop(0)
        try:
            work()
        except Exception:  # the answer is sent; a failed log line must not break a worker
            logging.getLogger("functions").exception("after the response")


def request_from_environ(environ: Mapping[str, Any], max_body: int,
                         stream: IO[bytes] | None = None
                         ) -> tuple[HttpRequest, ServiceError | None]:
    """The request as `App.handle` takes it, and the refusal to answer instead, if any.

    The body is read from ``stream`` (default: ``wsgi.input``; Flask hands its own
    checked stream) up to ``max_body`` bytes: one declared or found larger is refused
    (413, the connection closed) without being read further. A refusal a server in front
    made already (`REFUSED`) is passed on.
    """
    refused: ServiceError | None = environ.get(REFUSED)
    declared = environ.get("CONTENT_LENGTH") or ""
    size = int(declared) if declared.isdigit() else None
    if refused is not None:
        body = b""
    elif size is not None and size > max_body:
        refused, body = _too_large(size, max_body), b""
    elif size == 0 or (size is None and "chunked" not in
                       environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
        body = b""
    else:
        body = (stream or environ["wsgi.input"]).read(max_body + 1)
        if len(body) > max_body:
            refused, body = _too_large(None, max_body), b""
    query = environ.get("QUERY_STRING") or ""
    return HttpRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        path="/" + _text(environ.get("PATH_INFO") or "").lstrip("/"),
        headers=headers_from_environ(environ),
        body=body,
        query=_first_values(query) if query else {},
    ), refused


def headers_from_environ(environ: Mapping[str, Any]) -> Headers:
    """The request's headers, read from the environ as werkzeug's `EnvironHeaders` reads
    them (``HTTP_*`` and the two body headers CGI keeps apart)."""
    found = {key[5:].replace("_", "-"): value for key, value in environ.items()
             if key.startswith("HTTP_") and key not in _BODY_HEADERS}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            found[key.replace("_", "-")] = environ[key]
    return Headers(found)


def _text(wsgi_string: str) -> str:
    """A WSGI "bytes as latin-1" string as the UTF-8 text it carries, as Flask gives paths."""
    try:
        return wsgi_string.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return wsgi_string


def _first_values(query: str) -> dict[str, str]:
    """Query parameters, the first value of each name (as Flask's ``args.to_dict()``)."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(_text(query), keep_blank_values=True):
        values.setdefault(name, value)
    return values


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _too_large(size: int | None, limit: int) -> PayloadTooLarge:
    said = f"{size} bytes" if size is not None else "more than that"
    return PayloadTooLarge(f"request body is {said}; the limit is {limit} bytes "
                           "(MAX_BODY_BYTES)", headers={"Connection": "close"})


def _start_loading_after_fork() -> None:
    """In a freshly forked server worker: forget the parent's app, start loading the model.

    Nothing heavy is imported before this: a server's master process imports the entry
    module and forks, and TensorFlow must not be loaded before a fork."""
    limit_malloc_arenas()
    process_app.forget()
    process_app.preload(wait=False)


os.register_at_fork(after_in_child=_start_loading_after_fork)
