"""The project's compiled TF Serving messages are wire-compatible with the real ones.

Every field of every project message must exist in the real message with the same
number, type and cardinality (fields only the real one has are fine: protobuf keeps
them as unknown fields), and messages must survive a trip through both.
"""

from __future__ import annotations

import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2, predict_pb2

from functions.backends.protos import tfserving_pb2 as ours

pytestmark = pytest.mark.slow  # imports TensorFlow's protos

PAIRS = [
    (ours.TensorShapeProto, tensor_shape_pb2.TensorShapeProto),
    (ours.TensorShapeProto.Dim, tensor_shape_pb2.TensorShapeProto.Dim),
    (ours.TensorProto, tensor_pb2.TensorProto),
    (ours.TensorInfo, meta_graph_pb2.TensorInfo),
    (ours.SignatureDef, meta_graph_pb2.SignatureDef),
    (ours.ModelSpec, model_pb2.ModelSpec),
    (ours.PredictRequest, predict_pb2.PredictRequest),
    (ours.PredictResponse, predict_pb2.PredictResponse),
    (ours.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
    (ours.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
    (ours.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
]


def _label(field) -> str:
    return "repeated" if field.is_repeated else "single"


@pytest.mark.parametrize(("mine", "real"), PAIRS, ids=[p[1].DESCRIPTOR.full_name for p in PAIRS])
def test_every_field_matches_the_real_message(mine, real):
    real_fields = {f.name: f for f in real.DESCRIPTOR.fields}
    for field in mine.DESCRIPTOR.fields:
        assert field.name in real_fields, field.name
        other = real_fields[field.name]
        assert (field.number, field.type, _label(field)) == \
            (other.number, other.type, _label(other)), field.name
        if field.message_type is not None:
            assert field.message_type.name == other.message_type.name
        if field.containing_oneof is not None:
            assert other.containing_oneof is not None
            assert field.containing_oneof.name == other.containing_oneof.name


def test_data_type_enum_is_complete():
    assert {v.name: v.number for v in ours.DataType.DESCRIPTOR.values} == \
        {v.name: v.number for v in types_pb2.DataType.DESCRIPTOR.values}


def test_predict_messages_round_trip_both_ways():
    request = ours.PredictRequest(output_filter=["scores"])
    request.model_spec.name = "digits"
    request.model_spec.version_label = "stable"
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["image_bytes"]
    tensor.dtype = ours.DT_STRING
    tensor.tensor_shape.dim.add(size=2)
    tensor.string_val.extend([b"\x89PNG", b"\xff\xd8"])
    real = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert real.model_spec.version_label == "stable"
    assert list(real.inputs["image_bytes"].string_val) == [b"\x89PNG", b"\xff\xd8"]
    assert real.inputs["image_bytes"].dtype == types_pb2.DT_STRING
    assert list(real.output_filter) == ["scores"]

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "digits"
    response.model_spec.version.value = 3
    out = response.outputs["scores"]
    out.dtype = types_pb2.DT_FLOAT
    out.tensor_shape.dim.add(size=1)
    out.float_val.extend([0.25, 0.75])
    out.half_val.append(15360)
    mine = ours.PredictResponse.FromString(response.SerializeToString())
    assert mine.model_spec.version.value == 3
    assert list(mine.outputs["scores"].float_val) == [0.25, 0.75]
    assert list(mine.outputs["scores"].half_val) == [15360]
    # What we do not model survives a round trip untouched.
    full = tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT)
    full.variant_val.add(type_name="x")
    again = tensor_pb2.TensorProto.FromString(
        ours.TensorProto.FromString(full.SerializeToString()).SerializeToString())
    assert again == full
