"""The model server's three calls on TF Serving's own messages, shared by REST and gRPC.

`ServerCore.predict`, `get_model_metadata` and `get_model_status` take and return
tensorflow-serving-api protos and raise `ServingError`s, exactly the split TF
Serving has between its servables and its two front ends. Outputs are written to
the typed proto fields (TF Serving's default) or, with
``--enable_serialization_as_tensor_content``, to ``tensor_content``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    prediction_log_pb2,
)

from infra.modelserver.models import DEFAULT_SIGNATURE, ModelManager, Servable
from infra.modelserver.repository import RepositoryError
from infra.modelserver.status import ServingError

log = logging.getLogger("infra.modelserver")

PREDICT_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                   "tensorflow/serving/regress")
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


class ServerCore:
    def __init__(self, manager: ModelManager, *, tensor_content: bool = False,
                 warmup: bool = True) -> None:
        self.manager = manager
        self.tensor_content = tensor_content
        self.warmup = warmup

    def load(self) -> None:
        self.manager.load_all(warm_up=self._warm_up if self.warmup else None)

    # --- Predict ---------------------------------------------------------------------

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        return self._run(self.manager.resolve(request.model_spec), request)

    def _run(self, servable: Servable,
             request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        if signature.method_name not in PREDICT_METHODS:
            raise ServingError("INTERNAL", "Expected prediction signature method_name to be one "
                                           f"of {{{', '.join(PREDICT_METHODS)}}}. Was: "
                                           f"{signature.method_name}")
        _check_input_names(signature, request)
        inputs = {}
        for index, (alias, proto) in enumerate(sorted(request.inputs.items())):
            expected = signature.inputs[alias].dtype
            if proto.dtype != expected:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expects arg[{index}] to be {_type_name(expected)} but "
                    f"{_type_name(proto.dtype)} is provided")
            try:
                inputs[alias] = tf.make_ndarray(proto)
            except Exception as exc:
                raise ServingError("INVALID_ARGUMENT",
                                   f"input tensor alias {alias} does not parse: {exc}") from exc
        aliases = _output_aliases(signature, request)
        outputs = servable.run(name, inputs, aliases)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = name
        for alias in aliases:
            response.outputs[alias].CopyFrom(
                to_tensor_proto(outputs[alias], signature.outputs[alias].dtype,
                                as_content=self.tensor_content))
        return response

    # --- metadata and status ---------------------------------------------------------

    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                           ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        if not request.metadata_field:
            raise ServingError("INVALID_ARGUMENT",
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
        servable = self.manager.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for alias, signature in servable.signature_defs.items():
            signature_map.signature_def[alias].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                         ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        spec = request.model_spec
        versions: dict[int, Any] = dict(self.manager.versions(spec.name))
        if spec.WhichOneof("version_choice") == "version_label":
            versions = {self.manager.resolve(spec).version: None}
        elif spec.WhichOneof("version_choice") == "version":
            if spec.version.value not in versions:
                raise ServingError("NOT_FOUND", f"Could not find version {spec.version.value} "
                                                f"of model {spec.name}")
            versions = {spec.version.value: None}
        elif not versions:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(versions, reverse=True):
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            status.status.error_code = 0
        return response

    # --- warmup ----------------------------------------------------------------------

    def _warm_up(self, servable: Servable) -> None:
        """Replay ``assets.extra/tf_serving_warmup_requests``: any failure fails the load."""
        path = servable.path / WARMUP_FILE
        if not path.is_file():
            return
        records = list(tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS + 1))
        if len(records) > MAX_WARMUP_RECORDS:
            raise RepositoryError(f"{path}: more than {MAX_WARMUP_RECORDS} warmup records")
        for index, record in enumerate(records):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                raise RepositoryError(f"{path}: record {index} is not a predict_log "
                                      "(only Predict warmup is supported here)")
            try:
                self._run(servable, entry.predict_log.request)
            except ServingError as exc:
                raise RepositoryError(f"{path}: warmup record {index} failed: "
                                      f"{exc.message}") from exc
        log.info("warmed up %s version %d with %d request(s)", servable.name,
                 servable.version, len(records))


def _type_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype)[3:].lower()


def _check_input_names(signature, request) -> None:
    sent, wanted = set(request.inputs), set(signature.inputs)
    if len(sent) > len(wanted) or (len(sent) < len(wanted) and not signature.defaults) \
            or sent - wanted:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")


def _output_aliases(signature, request) -> list[str]:
    aliases: list[str] = []
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise ServingError("INVALID_ARGUMENT",
                               f"output tensor alias not found in signature: {alias} Outputs "
                               "expected to be in the set "
                               f"{{{','.join(sorted(signature.outputs))}}}.")
        if alias in aliases:
            raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
        aliases.append(alias)
    return aliases or list(signature.outputs)


_TYPED_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_COMPLEX64: "scomplex_val", types_pb2.DT_COMPLEX128: "dcomplex_val",
}


def to_tensor_proto(value: np.ndarray, dtype: int, *,
                    as_content: bool = False) -> tensor_pb2.TensorProto:
    """A tensor as TensorFlow's ``AsProtoField`` (typed fields) or ``AsProtoTensorContent``."""
    if as_content:
        return tf.make_tensor_proto(value, dtype=tf.as_dtype(dtype))
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in value.shape:
        proto.tensor_shape.dim.add(size=size)
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(value.ravel().tolist())
    elif dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        proto.half_val.extend(np.ascontiguousarray(value).view(np.uint16).ravel().tolist())
    elif dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        flat = np.ascontiguousarray(value).ravel()
        getattr(proto, _TYPED_FIELDS[dtype]).extend(
            np.stack([flat.real, flat.imag], axis=-1).ravel().tolist())
    elif dtype in _TYPED_FIELDS:
        getattr(proto, _TYPED_FIELDS[dtype]).extend(value.ravel().tolist())
    else:
        return tf.make_tensor_proto(value, dtype=tf.as_dtype(dtype))
    return proto
