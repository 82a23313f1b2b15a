"""TF Serving's REST API as a backend: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict``.

Requests follow TF Serving's JSON rules: columnar ``{"inputs": {...}}`` or row
``{"instances": [...]}`` (TFSERVING_REST_FORMAT), every string input as
``{"b64": ...}`` in the standard alphabet, bodies over `GZIP_MIN_BYTES` gzipped.
Replies are read with the signature's dtypes from the metadata endpoint, string
outputs named ``*_bytes`` unwrapped from base64. One `requests.Session` keeps
connections open across calls and threads.

The model server is trusted to be a model server, not to behave: each exchange (connect,
send, the whole reply) ends by the call's one deadline however slowly it drips
(`functions.backends.http_deadline`); redirects are never followed (a 3xx would re-post
the image wherever it points); a reply over MAX_UPSTREAM_REPLY_BYTES, one holding
``NaN`` or ``Infinity`` (not JSON) or nested deeper than any tensor are all a 502.
"""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any
from urllib.parse import quote

import numpy as np
import requests
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from functions import logs
from functions.backends import wire
from functions.backends.http_deadline import deadline_session, watch
from functions.backends.remote import (
    Deadline,
    RemoteBackend,
    Signature,
    Target,
    TensorSpec,
    TryAgain,
    bad_reply,
    timed_out,
    unavailable,
    upstream_error,
)
from functions.errors import BadGateway
from modelmeta import ModelMetadata

log = logging.getLogger(__name__)

GZIP_MIN_BYTES = 64 * 1024
"""Bodies at least this big are sent gzipped: base64 of an image shrinks by about a
quarter, worth a millisecond of CPU across a network."""
MAX_REPLY_BYTES = 64 * 1024 * 1024
"""The default cap on a reply's bytes (MAX_UPSTREAM_REPLY_BYTES)."""
MAX_NESTING = 32
"""Deepest nesting a reply may have: a tensor of rank 8 in a reply object is 10 deep."""
_STATUS_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
"""TF Serving's gRPC-code-to-HTTP mapping (http_server.cc), read backwards."""


class RestBackend(RemoteBackend):
    def __init__(self, metadata: ModelMetadata, target: Target, base_url: str, *,
                 timeout: float, retries: int, request_format: str = "columnar",
                 gzip_min_bytes: int = GZIP_MIN_BYTES, pool_size: int = 32,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        super().__init__(metadata, target, timeout=timeout, retries=retries)
        if request_format not in ("columnar", "row"):
            raise ValueError(f"request_format must be columnar or row, not {request_format!r}")
        self.request_format = request_format
        self.gzip_min_bytes = gzip_min_bytes
        self.max_reply_bytes = max_reply_bytes
        model = f"{base_url.rstrip('/')}/v1/models/{quote(target.model_name, safe='')}"
        if target.version is not None:
            model += f"/versions/{target.version}"
        elif target.label is not None:
            model += f"/labels/{quote(target.label, safe='')}"
        self.predict_url = model + ":predict"
        self.metadata_url = model + "/metadata"
        self._session = deadline_session(pool_size)

    def close(self) -> None:
        self._session.close()

    # --- metadata ----------------------------------------------------------------------

    def _fetch_signatures(self, deadline: Deadline) -> dict[str, Signature]:
        reply = self._call("GET", self.metadata_url, None, {}, deadline)
        try:
            defs = reply["metadata"]["signature_def"]["signature_def"]
            return {name: Signature(_specs(d.get("inputs", {})), _specs(d.get("outputs", {})))
                    for name, d in defs.items()}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise bad_reply(f"the metadata reply is not TF Serving's: {exc!r:.200}") from exc

    # --- predict -----------------------------------------------------------------------

    def _predict_once(self, inputs: dict[str, np.ndarray], signature: Signature,
                      deadline: Deadline) -> dict[str, np.ndarray]:
        body = json.dumps(self._request(inputs, signature), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **logs.outgoing_headers()}
        if len(body) >= self.gzip_min_bytes:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        reply = self._call("POST", self.predict_url, body, headers, deadline)
        batch = len(next(iter(inputs.values())))
        return self._outputs(reply, signature, batch)

    def _request(self, inputs: dict[str, np.ndarray], signature: Signature) -> dict[str, Any]:
        columns = {name: wire.to_json(value, signature.inputs[name].dtype)
                   for name, value in inputs.items()}
        request: dict[str, Any] = {"signature_name": self.target.signature}
        if self.request_format == "columnar":
            request["inputs"] = columns
        else:
            count = len(next(iter(columns.values())))
            request["instances"] = [{name: column[i] for name, column in columns.items()}
                                    for i in range(count)]
        return request

    def _outputs(self, reply: Any, signature: Signature, batch: int) -> dict[str, np.ndarray]:
        """Both reply forms to arrays: TF Serving nests by name only with 2+ outputs."""
        several = len(signature.outputs) > 1
        wanted = [spec.name for spec in self.metadata.outputs]
        if self.request_format == "columnar":
            if not isinstance(reply, dict) or "outputs" not in reply:
                raise bad_reply('no "outputs" in the predict reply')
            columns = reply["outputs"]
            if not several:
                columns = {next(iter(signature.outputs)): columns}
            elif not isinstance(columns, dict):
                raise bad_reply('"outputs" is not an object of named outputs')
        else:
            if not isinstance(reply, dict) or not isinstance(reply.get("predictions"), list):
                raise bad_reply('no "predictions" list in the predict reply')
            rows = reply["predictions"]
            if len(rows) != batch:
                raise bad_reply(f"{len(rows)} predictions for {batch} inputs")
            if not several:
                columns = {next(iter(signature.outputs)): rows}
            elif all(isinstance(row, dict) for row in rows):
                columns = {name: [row.get(name) for row in rows]
                           for name in wanted if all(name in row for row in rows)}
            else:
                raise bad_reply('"predictions" items are not objects of named outputs')
        outputs = {}
        for name in wanted:
            if name not in columns:
                raise bad_reply(f"output {name!r} is missing")
            try:
                outputs[name] = wire.from_json(columns[name], signature.outputs[name].dtype,
                                                  wrapped_bytes=name.endswith("_bytes"))
            except wire.WireError as exc:
                raise bad_reply(f"output {name!r}: {exc}") from exc
        return outputs

    # --- HTTP --------------------------------------------------------------------------

    def _call(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
              deadline: Deadline) -> Any:
        """One HTTP exchange within the deadline: the reply's JSON, or the mapped error."""
        left = deadline.check()
        with watch(left) as exchange:
            try:
                with self._session.request(method, url, data=body, headers=headers,
                                           timeout=(left, left), stream=True,
                                           allow_redirects=False) as response:
                    status = response.status_code
                    location = response.headers.get("location", "")
                    content = self._read(response)
            except requests.RequestException as exc:
                if exchange.expired or deadline.remaining() <= 0:
                    raise timed_out(deadline.seconds) from exc
                raise _transport_error(exc, deadline.seconds) from exc
            except BadGateway:
                if exchange.expired:  # the watchdog cut the reply short
                    raise timed_out(deadline.seconds) from None
                raise
        if exchange.expired:  # cut in the headers: http.client may return what it had
            raise timed_out(deadline.seconds)
        if 300 <= status < 400:
            log.warning("model server answered %d, redirecting to %.200s", status, location)
            raise BadGateway(f"the model server answered with a redirect (HTTP {status}), "
                             "which is not followed; set TFSERVING_URL to the model server "
                             "itself")
        if status == 200:
            return _json(content)
        reply = _json_or_none(content)
        message = reply.get("error") if isinstance(reply, dict) else None
        code = _STATUS_CODES.get(status, "UNKNOWN")
        error = upstream_error(code, str(message if message is not None else content[:300]),
                               self.target, deadline.seconds)
        if code == "UNKNOWN" and status < 500:
            error = BadGateway(f"the model server answered HTTP {status}")
        raise error

    def _read(self, response: requests.Response) -> bytes:
        """The whole body, at most `max_reply_bytes` (the watchdog bounds the time)."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_reply_bytes:
            raise self._too_large()
        chunks, size = [], 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> BadGateway:
        log.warning("model server reply over %d bytes", self.max_reply_bytes)
        return BadGateway(f"the model server's reply is over {self.max_reply_bytes:,} bytes "
                          "(MAX_UPSTREAM_REPLY_BYTES)")


def _transport_error(exc: requests.RequestException, seconds: float) -> Exception:
    """A transport failure before the deadline passed, as what the client gets."""
    if isinstance(exc, requests.Timeout) or (
            isinstance(exc, requests.ConnectionError) and _read_timeout(exc)):
        return timed_out(seconds)
    if isinstance(exc, requests.ConnectionError) and _refused(exc):
        return TryAgain(unavailable())
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return bad_reply("the reply's content encoding is broken")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return BadGateway("the model server cut its reply short")
    log.warning("model server connection failed: %s", exc)
    return BadGateway("the model server closed the connection before answering")


def _json(content: bytes) -> Any:
    """A 200 reply's JSON: strict (no NaN or Infinity), and no deeper than `MAX_NESTING`."""
    try:
        reply = json.loads(content, parse_constant=_not_json)
    except _NotJson as exc:
        raise bad_reply(f"the reply holds {exc}, which JSON cannot carry") from None
    except RecursionError:
        raise bad_reply("the reply is nested too deeply") from None
    except ValueError:  # not JSON, not UTF-8, or a number of too many digits
        raise bad_reply(f"the reply is not JSON ({len(content)} bytes)") from None
    if _nesting(reply) > MAX_NESTING:
        raise bad_reply(f"the reply is nested more than {MAX_NESTING} deep")
    return reply


def _json_or_none(content: bytes) -> Any:
    """An error reply's JSON if it is any (its message is logged, never shown)."""
    try:
        return _json(content)
    except BadGateway:
        return None


class _NotJson(ValueError):
    pass


def _not_json(name: str) -> Any:
    raise _NotJson(name)


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (iteratively: no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _refused(exc: requests.ConnectionError) -> bool:
    """True when the connection was never made, so the request cannot have run."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return isinstance(reason, NewConnectionError)


def _read_timeout(exc: requests.ConnectionError) -> bool:
    """A read timed out while streaming the body (requests reports it as a ConnectionError)."""
    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def _specs(infos: dict[str, Any]) -> dict[str, TensorSpec]:
    specs = {}
    for alias, info in infos.items():
        shape_info = info.get("tensor_shape") or {}
        shape = None if shape_info.get("unknown_rank") else tuple(
            int(d.get("size", -1)) for d in shape_info.get("dim", []))
        try:
            dtype = wire.dtype_name_from_enum_name(info.get("dtype", "DT_INVALID"))
        except wire.WireError:
            dtype = str(info.get("dtype"))  # unsupported: fine unless the metadata uses it
        specs[alias] = TensorSpec(dtype, shape)
    return specs

