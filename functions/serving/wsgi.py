"""The WSGI app the server runs: the function's plain WSGI binding, body checked.

`functions.platforms.wsgi.app` hands each request to `App.handle` with nothing in between
(functions-framework on Cloud Functions wraps the same `App` and the same request reader
in Flask; here that layer costs time and buys nothing). In front of it, `BodyCheck` reads
the request body whole before the app sees it: gunicorn's body readers return a short
body as if it were whole when the client closes early, and raise their own exceptions on
malformed chunked framing. The worker of `functions.serving.worker` already refuses both
before a thread is taken; this check keeps any other gunicorn worker honest too.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.http import errors as http_errors

from functions.config import ConfigError, Settings
from functions.errors import BadRequest, PayloadTooLarge, ServiceError
from functions.platforms.wsgi import REFUSED, StartResponse

WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BodyCheck:
    """Reads ``wsgi.input`` whole (at most MAX_BODY_BYTES) and hands the app a copy."""

    def __init__(self, app: WsgiApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        declared = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not declared and not chunked:
            return self.app(environ, start_response)
        try:
            body = environ["wsgi.input"].read(self.max_body + 1)
        except (http_errors.NoMoreData, http_errors.ChunkMissingTerminator,
                http_errors.InvalidChunkSize, http_errors.InvalidChunkExtension) as exc:
            return self._answer(BadRequest(f"the request body is malformed or cut short "
                                           f"({type(exc).__name__})"), environ,
                                start_response)
        if len(body) > self.max_body:
            return self._answer(PayloadTooLarge(
                f"request body is more than {self.max_body} bytes; the limit is "
                f"{self.max_body} bytes (MAX_BODY_BYTES)", headers={"Connection": "close"}),
                environ, start_response)
        if declared.isdigit() and len(body) < int(declared):
            return self._answer(BadRequest(f"the request body ended after {len(body)} of "
                                           f"the {declared} bytes its Content-Length "
                                           "announced"), environ, start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        return self.app(environ, start_response)


    def _answer(self, error: ServiceError, environ: dict[str, Any],
                start_response: StartResponse) -> Iterable[bytes]:
        """The app answers the refusal, in the shape of the route it was sent to."""
        environ[REFUSED] = error
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["CONTENT_LENGTH"] = "0"
        environ.pop("HTTP_TRANSFER_ENCODING", None)

        def closing(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() != "connection"]
            return start_response(status, [*kept, ("Connection", "close")], *rest)

        return self.app(environ, closing)


def build() -> WsgiApp:
    from functions.platforms.wsgi import app as function

    try:
        max_body = Settings.from_env().max_body_bytes
    except ConfigError:
        max_body = Settings.max_body_bytes  # the app itself answers what is misconfigured
    return BodyCheck(function, max_body)


app = build()
