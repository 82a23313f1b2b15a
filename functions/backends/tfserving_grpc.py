"""TF Serving's gRPC PredictionService as a backend, without TensorFlow.

The stubs are written out here over the project's own compiled messages
(`protos/tfserving.proto`, wire-compatible with tensorflow-serving-api's), because
that package's modules import all of TensorFlow. Inputs go as ``tensor_content``;
outputs are read from the typed fields TF Serving sends by default or from
``tensor_content`` (``--enable_serialization_as_tensor_content``) alike. One channel
per process is kept open, with the receive limit at MAX_UPSTREAM_REPLY_BYTES (a larger
reply is a 502, not gRPC's 4 MiB default refusal) and reconnect backoff kept short so a
restarted server is found again quickly. The call's deadline is gRPC's own, which covers
connecting, sending and the whole reply.
"""

from __future__ import annotations

import logging

import grpc
import numpy as np

from functions import logs
from functions.backends import wire
from functions.backends.protos import tfserving_pb2 as pb
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

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_REPLY_BYTES = 64 * 1024 * 1024
"""The default cap on a reply message (MAX_UPSTREAM_REPLY_BYTES)."""
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def channel_target(url: str) -> tuple[str, bool]:
    """``host:port``, ``grpc://host:port`` or ``grpcs://host:port`` -> (target, use TLS)."""
    for scheme, secure in (("grpcs://", True), ("grpc://", False), ("http://", False),
                           ("https://", True)):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/"), secure
    return url.rstrip("/"), False


class GrpcBackend(RemoteBackend):
    def __init__(self, metadata: ModelMetadata, target: Target, url: str, *,
                 timeout: float, retries: int, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        super().__init__(metadata, target, timeout=timeout, retries=retries)
        address, secure = channel_target(url)
        self.address = address
        self.max_reply_bytes = max_reply_bytes
        options = tuple((name, max_reply_bytes if name == "grpc.max_receive_message_length"
                         else value) for name, value in CHANNEL_OPTIONS)
        if secure:
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(),
                                                options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._predict = self._channel.unary_unary(
            PREDICT, request_serializer=pb.PredictRequest.SerializeToString,
            response_deserializer=pb.PredictResponse.FromString)
        self._get_metadata = self._channel.unary_unary(
            GET_MODEL_METADATA, request_serializer=pb.GetModelMetadataRequest.SerializeToString,
            response_deserializer=pb.GetModelMetadataResponse.FromString)

    def close(self) -> None:
        self._channel.close()

    def _model_spec(self, spec: pb.ModelSpec) -> None:
        spec.name = self.target.model_name
        spec.signature_name = self.target.signature
        if self.target.version is not None:
            spec.version.value = self.target.version
        elif self.target.label is not None:
            spec.version_label = self.target.label

    def _fetch_signatures(self, deadline: Deadline) -> dict[str, Signature]:
        request = pb.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._model_spec(request.model_spec)
        request.model_spec.signature_name = ""
        reply = self._call(self._get_metadata, request, deadline)
        packed = reply.metadata.get("signature_def")
        if packed is None or packed.type_url != SIGNATURE_DEF_MAP:
            raise bad_reply("the metadata reply has no SignatureDefMap")
        try:
            defs = pb.SignatureDefMap.FromString(packed.value).signature_def
        except Exception as exc:  # protobuf's DecodeError has no stable import path
            raise bad_reply("the SignatureDefMap does not parse") from exc
        return {name: Signature(_specs(d.inputs), _specs(d.outputs)) for name, d in defs.items()}

    def _predict_once(self, inputs: dict[str, np.ndarray], signature: Signature,
                      deadline: Deadline) -> dict[str, np.ndarray]:
        request = pb.PredictRequest(output_filter=[spec.name for spec in self.metadata.outputs])
        self._model_spec(request.model_spec)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(wire.to_proto(value, signature.inputs[name].dtype))
        reply = self._call(self._predict, request, deadline)
        outputs = {}
        for name, proto in reply.outputs.items():
            try:
                outputs[name] = wire.to_numpy(proto)
            except wire.WireError as exc:
                raise bad_reply(f"output {name!r}: {exc}") from exc
            expected = signature.outputs.get(name)
            actual = wire.dtype_name(proto.dtype)
            if expected is not None and expected.dtype != actual:
                raise bad_reply(f"output {name!r} is {actual}, the signature says "
                                f"{expected.dtype}")
        return outputs

    def _call(self, method, request, deadline: Deadline):
        """One RPC within the deadline: the reply, or the mapped error."""
        left = deadline.check()
        try:
            return method(request, timeout=left,
                          metadata=tuple(logs.outgoing_headers().items()) or None)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = (exc.details() if hasattr(exc, "details") else None) or ""
            if code == grpc.StatusCode.UNAVAILABLE:
                log.info("model server at %s unavailable: %s", self.address, details)
                raise TryAgain(unavailable()) from exc
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise timed_out(deadline.seconds) from exc
            if code == grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
                raise bad_reply("the reply does not parse as a PredictResponse") from exc
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
                log.warning("model server reply refused: %s", details)
                raise BadGateway(f"the model server's reply is over {self.max_reply_bytes:,} "
                                 "bytes (MAX_UPSTREAM_REPLY_BYTES)") from exc
            raise upstream_error(code.name, details, self.target, deadline.seconds) from exc


def _specs(infos) -> dict[str, TensorSpec]:
    specs = {}
    for alias, info in infos.items():
        shape = None if info.tensor_shape.unknown_rank else tuple(
            int(d.size) for d in info.tensor_shape.dim)
        try:
            dtype = wire.dtype_name(info.dtype)
        except wire.WireError:
            dtype = pb.DataType.Name(info.dtype) if info.dtype in pb.DataType.values() \
                else str(info.dtype)
        specs[alias] = TensorSpec(dtype, shape)
    return specs
