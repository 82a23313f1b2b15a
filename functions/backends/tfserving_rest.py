"""TF Serving's REST API as a backend: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict``.

Requests follow TF Serving's JSON rules: columnar ``{"inputs": {...}}`` or row
``{"instances": [...]}`` (TFSERVING_REST_FORMAT), every string input as
``{"b64": ...}`` in the standard alphabet, bodies over `GZIP_MIN_BYTES` gzipped.
Replies are read with the signature's dtypes from the metadata endpoint, string
outputs named ``*_bytes`` unwrapped from base64. One `requests.Session` keeps
connections open across calls and threads.
"""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any
from urllib.parse import quote

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from functions import logs
from functions.backends import wire
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
MAX_REPLY_BYTES = 256 * 1024 * 1024
_STATUS_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
"""TF Serving's gRPC-code-to-HTTP mapping (http_server.cc), read backwards."""


class RestBackend(RemoteBackend):
    def __init__(self, metadata: ModelMetadata, target: Target, base_url: str, *,
                 timeout: float, retries: int, request_format: str = "columnar",
                 gzip_min_bytes: int = GZIP_MIN_BYTES, pool_size: int = 32) -> None:
        super().__init__(metadata, target, timeout=timeout, retries=retries)
        if request_format not in ("columnar", "row"):
            raise ValueError(f"request_format must be columnar or row, not {request_format!r}")
        self.request_format = request_format
        self.gzip_min_bytes = gzip_min_bytes
        model = f"{base_url.rstrip('/')}/v1/models/{quote(target.model_name, safe='')}"
        if target.version is not None:
            model += f"/versions/{target.version}"
        elif target.label is not None:
            model += f"/labels/{quote(target.label, safe='')}"
        self.predict_url = model + ":predict"
        self.metadata_url = model + "/metadata"
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

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
        try:
            with self._session.request(method, url, data=body, headers=headers,
                                       timeout=(left, left), stream=True) as response:
                content = self._read(response, deadline)
                status = response.status_code
        except requests.Timeout as exc:
            raise timed_out(deadline.seconds) from exc
        except requests.ConnectionError as exc:
            if _refused(exc):
                raise TryAgain(unavailable()) from exc
            if _read_timeout(exc) or deadline.remaining() <= 0:
                raise timed_out(deadline.seconds) from exc
            log.warning("model server connection failed: %s", exc)
            raise BadGateway("the model server closed the connection before answering") \
                from exc
        try:
            reply = json.loads(content)
        except ValueError:
            reply = None
        if status == 200:
            if reply is None:
                raise bad_reply(f"the reply is not JSON ({len(content)} bytes)")
            return reply
        message = reply.get("error") if isinstance(reply, dict) else None
        code = _STATUS_CODES.get(status, "UNKNOWN")
        error = upstream_error(code, str(message if message is not None else content[:300]),
                               self.target, deadline.seconds)
        if code == "UNKNOWN" and status < 500:
            error = BadGateway(f"the model server answered HTTP {status}")
        raise error

    def _read(self, response: requests.Response, deadline: Deadline) -> bytes:
        """The whole body, checking the deadline between reads (each read is bounded too)."""
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise BadGateway(f"the model server's reply is over {MAX_REPLY_BYTES:,} "
                                     "bytes")
                chunks.append(chunk)
                deadline.check()
        except requests.exceptions.ContentDecodingError as exc:
            raise bad_reply("the reply's content encoding is broken") from exc
        except requests.exceptions.ChunkedEncodingError as exc:
            raise BadGateway("the model server cut its reply short") from exc
        return b"".join(chunks)


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

