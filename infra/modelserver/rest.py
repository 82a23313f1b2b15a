"""TF Serving's REST API over the stdlib HTTP server (HTTP/1.1, keep-alive, one thread a
connection).

    POST /v1/models/NAME[/versions/N | /labels/L]:predict     row or columnar JSON
    GET  /v1/models/NAME[/versions/N | /labels/L]             version status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata    signatures

Paths, JSON rules, ``{"error": "..."}`` bodies and the status-code mapping are TF
Serving's (http_rest_api_handler.cc, http_rest_api_util.cc, http_server.cc). Bodies
sent with ``Content-Encoding: gzip`` are inflated (up to ``max_body_bytes``).
``:classify`` and ``:regress`` are answered 501 here.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from infra.modelserver import json_tensor
from infra.modelserver.core import ServerCore
from infra.modelserver.metrics import Metrics
from infra.modelserver.status import ServingError

log = logging.getLogger("infra.modelserver")

PREDICTION_API = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)")
MODEL_STATUS_API = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?")
HANDLED_PATHS = re.compile(r"(?i)/v1/.*")
RESPONSE_BUFFER_BYTES = 1 << 16


class RestApi:
    """Requests to responses, without HTTP plumbing (tests call `handle` directly)."""

    def __init__(self, core: ServerCore, *, timeout_ms: int = 30_000,
                 max_body_bytes: int = 1 << 30, metrics: Metrics | None = None,
                 metrics_path: str | None = None) -> None:
        self.core = core
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.metrics_path = metrics_path
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                           thread_name_prefix="rest-predict")

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        """(HTTP status, JSON text) for one request, as TF Serving answers it."""
        model_name = ""
        try:
            if not HANDLED_PATHS.fullmatch(path):
                raise ServingError("NOT_FOUND", f"no handler for {path}")
            model_name, output = self._dispatch(method, path, body)
            status = 200
        except ServingError as exc:
            status, output = exc.http_status, json_tensor.make_json_from_status(exc.message)
            code = exc.code
        else:
            code = "OK"
        if self.metrics is not None and model_name:
            self.metrics.count_request(model_name, "REST", code)
        return status, output

    def _dispatch(self, method: str, path: str, body: bytes) -> tuple[str, str]:
        malformed = ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICTION_API.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, verb = match.groups()
            spec = _model_spec(name, version, label)
            if verb.lower() != "predict":
                raise ServingError("UNIMPLEMENTED",
                                   f"{verb.lower()} is not served by this local model server")
            return spec.name, self._predict(spec, body)
        if method == "GET":
            match = MODEL_STATUS_API.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, subresource = match.groups()
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            spec = _model_spec(name, version, label)
            if subresource:
                return spec.name, self._metadata(spec)
            return spec.name, self._status(spec)
        raise malformed

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)

        def tensor_infos(signature_name: str):
            servable = self.core.manager.resolve(request.model_spec)
            key = signature_name or "serving_default"
            if key not in servable.signature_defs:
                raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{key}" not '
                                                       "found in signature def")
            return servable.signature_defs[key].inputs

        fmt = json_tensor.fill_predict_request_from_json(body, tensor_infos, request)
        future = self._pool.submit(self.core.predict, request)
        try:
            response = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
        return json_tensor.make_json_from_tensors(response.outputs, fmt)

    def _metadata(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(spec)
        response = self.core.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return json.dumps({"model_spec": _to_dict(response.model_spec),
                           "metadata": {"signature_def": _to_dict(signature_map)}}, indent=1)

    def _status(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(spec)
        response = self.core.get_model_status(request)
        return json.dumps(json_format.MessageToDict(
            response, always_print_fields_with_no_presence=True), indent=1)

    def decode_body(self, body: bytes, encoding: str) -> bytes:
        if encoding.strip().lower() not in ("gzip", "x-gzip"):
            return body
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, self.max_body_bytes + 1)
        except zlib.error as exc:
            raise ServingError("INVALID_ARGUMENT", f"gzip request body is corrupt: {exc}") \
                from None
        if len(data) > self.max_body_bytes or inflater.unconsumed_tail:
            raise ServingError("RESOURCE_EXHAUSTED", "request body is too large")
        return data

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=unquote(name))
    if version:
        try:
            spec.version.value = int(version)
        except ValueError:
            raise ServingError("INVALID_ARGUMENT",
                               f"Failed to convert version: {version} to numeric.") from None
    if label:
        spec.version_label = unquote(label)
    return spec


def _to_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class _Handler(BaseHTTPRequestHandler):
    """One keep-alive connection. Each response leaves in one ``send`` on a TCP_NODELAY
    socket: written as status line, headers and body separately (http.server's default,
    an unbuffered ``wfile``), the second small segment waits for the client's delayed ACK
    of the first, about 40 ms on every request after the first on a reused connection."""

    protocol_version = "HTTP/1.1"
    server_version = "infra-modelserver"
    disable_nagle_algorithm = True
    wbufsize = RESPONSE_BUFFER_BYTES
    """Buffered ``wfile``: headers and body go out together when http.server flushes it at
    the end of the request (larger bodies in buffer-sized writes)."""
    api: RestApi  # set on the subclass made per server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def _serve(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        if method == "GET" and self.api.metrics_path and path == self.api.metrics_path:
            self._reply(200, self.api.metrics.render() if self.api.metrics else "",
                        "text/plain; version=0.0.4")
            return
        try:
            body = self._body()
        except ServingError as exc:
            self._reply(exc.http_status, json_tensor.make_json_from_status(exc.message))
            self.close_connection = True
            return
        status, output = self.api.handle(method, path, body)
        self._reply(status, output)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ServingError("INVALID_ARGUMENT", "chunked request bodies are not supported; "
                                                   "send Content-Length")
        size = int(length) if length and length.isdigit() else 0
        if size > self.api.max_body_bytes:
            raise ServingError("RESOURCE_EXHAUSTED", "request body is too large")
        body = self.rfile.read(size) if size else b""
        return self.api.decode_body(body, self.headers.get("Content-Encoding", ""))

    def _reply(self, status: int, text: str, content_type: str = "application/json") -> None:
        data = text.encode("utf-8", errors="surrogateescape")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.address_string(), format % args)


class RestServer:
    """The REST API on ``host:port`` in a background thread."""

    def __init__(self, api: RestApi, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"api": api})
        self.api = api
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest-api",
                                        daemon=True)

    def start(self) -> RestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.api.close()
