"""TF Serving's gRPC services with tensorflow-serving-api's own stubs.

PredictionService (Predict, GetModelMetadata; Classify, Regress and MultiInference
answer UNIMPLEMENTED) and ModelService.GetModelStatus, over `ServerCore`. Message
size limits are lifted as TF Serving lifts them.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from infra.modelserver.core import ServerCore
from infra.modelserver.metrics import Metrics
from infra.modelserver.status import ServingError

log = logging.getLogger("infra.modelserver")

MAX_MESSAGE_BYTES = 2 ** 31 - 1


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServerCore, metrics: Metrics | None = None) -> None:
        self.core = core
        self.metrics = metrics

    def Predict(self, request, context):  # noqa: N802 (the service's method names)
        return _call(self.core.predict, request, context, self.metrics)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _call(self.core.get_model_metadata, request, context, None)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def GetModelStatus(self, request, context):  # noqa: N802
        return _call(self.core.get_model_status, request, context, None)


def _call(method, request, context, metrics: Metrics | None):
    name = request.model_spec.name
    try:
        response = method(request)
    except ServingError as exc:
        if metrics is not None:
            metrics.count_request(name, "GRPC", exc.code)
        context.abort(grpc.StatusCode[exc.code], exc.message)
    if metrics is not None:
        metrics.count_request(name, "GRPC", "OK")
    return response


class GrpcServer:
    """Both services on ``host:port`` (0 picks a free port)."""

    def __init__(self, core: ServerCore, host: str, port: int, *, max_threads: int = 16,
                 metrics: Metrics | None = None) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(core, metrics), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), self.server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")

    def start(self) -> GrpcServer:
        self.server.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()
