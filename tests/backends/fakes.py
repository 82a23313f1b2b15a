"""Misbehaving model servers on loopback, for fault tests.

A real TF Serving cannot be made slow, broken or down on cue, so these speak its
REST and gRPC protocols for the digits model and answer as `mode` says: ``ok``
(class 7 for every image), ``slow`` (past any test deadline), ``unavailable`` (503 /
UNAVAILABLE), ``error`` (500 / INTERNAL), ``malformed`` (a reply that does not fit
the signature), ``garbage`` (not JSON / not a PredictResponse), ``missing``
(404 / NOT_FOUND). ``stop()`` and ``start()`` take the same port down and up.

The REST fake also misbehaves at the byte level, for the hostile-upstream tests:
``custom`` answers `FakeRestServer.reply` (status, headers, body, chunked or not)
verbatim, and `FakeRestServer.drip` (seconds per byte, and from where: the status line,
the headers or the body) sends any answer a byte at a time. The gRPC fake's ``nan``
mode answers NaN and infinite scores.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

from functions.backends.protos import tfserving_pb2 as pb
from functions.backends.tfserving_grpc import GET_MODEL_METADATA, PREDICT, SIGNATURE_DEF_MAP

SLOW_SECONDS = 4.0
CLASS = 7


def _scores(count: int) -> list[list[float]]:
    return [[1.0 if i == CLASS else 0.0 for i in range(10)] for _ in range(count)]


REST_METADATA = {
    "model_spec": {"name": "digits", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {"serving_default": {
        "inputs": {"image_bytes": {"dtype": "DT_STRING", "name": "serving_default_image_bytes:0",
                                   "tensor_shape": {"dim": [{"size": "-1", "name": ""}],
                                                    "unknown_rank": False}}},
        "outputs": {"scores": {"dtype": "DT_FLOAT", "name": "StatefulPartitionedCall:0",
                               "tensor_shape": {"dim": [{"size": "-1", "name": ""},
                                                        {"size": "10", "name": ""}],
                                                "unknown_rank": False}}},
        "method_name": "tensorflow/serving/predict", "defaults": {}}}}},
}


class _Fake:
    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def record(self, what: str) -> str:
        with self._lock:
            self.calls.append(what)
            return self.mode

    def predict_calls(self) -> int:
        return sum(1 for c in self.calls if c == "predict")


class FakeRestServer(_Fake):
    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.connections: set[socket.socket] = set()
        self.reply: tuple[int, dict[str, str], bytes, bool] = (200, {}, b"{}", False)
        """``custom`` mode's answer: status, extra headers, body, sent chunked or not."""
        self.drip: tuple[float, str] | None = None
        """(seconds per byte, "status" | "headers" | "body"): send the answer dripping."""
        self.bodies: list[bytes] = []
        """Every predict request body received, in order."""
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                fake.connections.add(self.connection)

            def do_GET(self) -> None:  # noqa: N802
                fake.record("metadata")
                self._send(200, json.dumps(REST_METADATA).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = fake.record("predict")
                fake.bodies.append(body)
                if mode == "custom":
                    status, headers, data, chunked = fake.reply
                    self._raw(status, headers, data, chunked)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                count = len(json.loads(body)["inputs"]["image_bytes"])
                if mode == "slow":
                    time.sleep(SLOW_SECONDS)
                replies = {
                    "unavailable": (503, b'{"error": "Model is not available"}'),
                    "error": (500, b'{"error": "Internal: kernel failed"}'),
                    "missing": (404, b'{"error": "Servable not found for request: '
                                     b'Latest(digits)"}'),
                    "garbage": (200, b"<html>proxy error</html>"),
                    "malformed": (200, json.dumps({"outputs": [[0.5, 0.5]] * count}).encode()),
                }
                status, data = replies.get(mode, (200, json.dumps(
                    {"outputs": _scores(count)}).encode()))
                self._send(status, data)

            def _send(self, status: int, data: bytes) -> None:
                self._raw(status, {}, data, False)

            def _raw(self, status: int, headers: dict[str, str], data: bytes,
                     chunked: bool) -> None:
                head = [f"HTTP/1.1 {status} Whatever", "Content-Type: application/json"]
                head += [f"{k}: {v}" for k, v in headers.items()]
                if chunked:
                    head.append("Transfer-Encoding: chunked")
                    data = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 4096]),
                                                       data[i:i + 4096])
                                    for i in range(0, len(data), 4096)) + b"0\r\n\r\n"
                elif "Content-Length" not in headers:
                    head.append(f"Content-Length: {len(data)}")
                status_line, rest = head[0].encode() + b"\r\n", \
                    ("\r\n".join(head[1:]) + "\r\n\r\n").encode()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                    if fake.drip is None:
                        self.wfile.write(status_line + rest + data)
                        return
                    interval, stage = fake.drip
                    whole = status_line + rest + data
                    start = {"status": 0, "headers": len(status_line),
                             "body": len(status_line) + len(rest)}[stage]
                    self.wfile.write(whole[:start])
                    self.wfile.flush()
                    for i in range(start, len(whole)):
                        time.sleep(interval)
                        self.wfile.write(whole[i:i + 1])
                        self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        for connection in list(self.connections):  # kept-alive connections go down too
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self.connections.clear()


class FakeGrpcServer(_Fake):
    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.server: grpc.Server | None = None
        self.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _metadata(self, request, context):
        self.record("metadata")
        signature = pb.SignatureDef(method_name="tensorflow/serving/predict")
        signature.inputs["image_bytes"].dtype = pb.DT_STRING
        signature.inputs["image_bytes"].tensor_shape.dim.add(size=-1)
        signature.outputs["scores"].dtype = pb.DT_FLOAT
        signature.outputs["scores"].tensor_shape.dim.add(size=-1)
        signature.outputs["scores"].tensor_shape.dim.add(size=10)
        packed = pb.SignatureDefMap()
        packed.signature_def["serving_default"].CopyFrom(signature)
        response = pb.GetModelMetadataResponse()
        response.model_spec.name = "digits"
        response.metadata["signature_def"].type_url = SIGNATURE_DEF_MAP
        response.metadata["signature_def"].value = packed.SerializeToString()
        return response

    def _predict(self, request, context):
        mode = self.record("predict")
        count = request.inputs["image_bytes"].tensor_shape.dim[0].size
        if mode == "slow":
            time.sleep(SLOW_SECONDS)
        if mode in ("nan", "huge"):
            response = pb.PredictResponse()
            scores = response.outputs["scores"]
            scores.dtype = pb.DT_FLOAT
            scores.tensor_shape.dim.add(size=count)
            scores.tensor_shape.dim.add(size=10 if mode == "nan" else 10 * 300_000)
            values = [float("nan"), float("inf"), float("-inf")] + [0.0] * 7
            scores.float_val.extend(values * count if mode == "nan" else [0.5] * count * 10
                                    * 300_000)
            return response
        aborts = {"unavailable": grpc.StatusCode.UNAVAILABLE,
                  "error": grpc.StatusCode.INTERNAL, "missing": grpc.StatusCode.NOT_FOUND}
        if mode in aborts:
            context.abort(aborts[mode], f"fake {mode}")
        response = pb.PredictResponse()
        scores = response.outputs["scores"]
        scores.dtype = pb.DT_FLOAT
        scores.tensor_shape.dim.add(size=count)
        scores.tensor_shape.dim.add(size=2 if mode == "malformed" else 10)
        if mode == "malformed":
            scores.float_val.extend([0.5] * 2 * count)
        else:
            scores.float_val.extend(v for row in _scores(count) for v in row)
        return response

    def start(self) -> None:
        handlers = {
            "Predict": grpc.unary_unary_rpc_method_handler(
                self._predict, request_deserializer=pb.PredictRequest.FromString,
                response_serializer=lambda m: (b"\x0a\x03bad" if self.mode == "garbage"
                                               else m.SerializeToString())),
            "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
                self._metadata, request_deserializer=pb.GetModelMetadataRequest.FromString,
                response_serializer=pb.GetModelMetadataResponse.SerializeToString),
        }
        assert PREDICT.startswith("/tensorflow.serving.PredictionService/")
        assert GET_MODEL_METADATA.endswith("/GetModelMetadata")
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", handlers),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.server = None
