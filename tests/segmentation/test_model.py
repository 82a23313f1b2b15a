"""The segmentation demo's SavedModels, run with real TensorFlow: the float model against
the quantized one the function serves, and the mask tensor through TF's own protos."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from functions.answers import masks as M
from functions.feed import model_inputs
from functions.quantization import dequantize_reply
from functions.request.images import ImageInput
from modelmeta import ModelMetadata
from modelprep import segmentation as S
from tests.conftest import ROOT, encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(seg_demo):
    import tensorflow as tf

    original = tf.saved_model.load(str(seg_demo.original)).signatures["serving_default"]
    served = tf.saved_model.load(str(seg_demo.served)).signatures["serving_default"]
    return original, served


@pytest.fixture(scope="module")
def run(models):
    """Both models on the same scenes, fed exactly as the function feeds the served one."""
    import tensorflow as tf

    original, served = models
    scenes = [S.random_scene(11, 480, 640), S.random_scene(12, 700, 500, sizes=(60, 240))]
    images = [ImageInput(encode(s.image), "png", s.image.shape[1], s.image.shape[0],
                         f"images[{i}]") for i, s in enumerate(scenes)]
    inputs = model_inputs(S.served_metadata(), images)
    quantized = served(**{k: tf.constant(v) for k, v in inputs.items()})
    pixels = inputs["input_image"].astype(np.float32) + 128  # what the int8 stands for
    floats = original(input_image=tf.constant(pixels),
                      input_image_meta=tf.constant(inputs["input_image_meta"]),
                      input_anchors=tf.constant(inputs["input_anchors"]))
    return ({k: v.numpy() for k, v in quantized.items()},
            {k: v.numpy() for k, v in floats.items()}, scenes)


def test_the_served_model_is_what_its_metadata_says(seg_demo):
    meta = ModelMetadata.load(seg_demo.served)
    expected = S.served_metadata(seg_demo.original)
    assert meta == expected
    assert meta.input("input_image").quantization.zero_point == -128
    assert meta.output("masks").quantization.scale == pytest.approx(1 / 255)
    assert meta.labels == ("BG", "circle", "square", "triangle")


def test_outputs_have_mask_rcnns_shapes_and_find_every_shape(run):
    quantized, floats, scenes = run
    assert quantized["detections"].shape == (2, 100, 6)
    assert quantized["masks"].shape == (2, 100, 28, 28, 4)
    assert quantized["masks"].dtype == np.uint8
    assert floats["masks"].dtype == np.float32
    for b, scene in enumerate(scenes):
        det = quantized["detections"][b]
        found = det[det[:, 4] > 0]
        assert len(found) == len(scene.shapes)
        assert np.all(det[len(found):] == 0)  # zero rows pad, as in Mask R-CNN
        assert sorted(found[:, 4].astype(int)) == sorted(s.class_id for s in scene.shapes)
        assert np.all(np.diff(found[:, 5]) <= 0)  # by score, highest first


def test_dequantized_masks_equal_the_float_models_within_one_step(run):
    quantized, floats, _ = run
    assert np.array_equal(quantized["detections"], floats["detections"])
    step = S.MASK_QUANTIZATION.scale
    restored = dequantize_reply(quantized["masks"], S.MASK_QUANTIZATION)
    error = np.abs(restored - floats["masks"])
    assert error.max() <= step / 2 + 1e-6, error.max() / step


def test_values_above_one_half_survive_quantization_but_not_the_naive_cast(run):
    import tensorflow as tf

    quantized, floats, _ = run
    probs = floats["masks"]
    high = probs > 0.5
    assert high.sum() > 2_000 and probs.max() > 0.97
    restored = dequantize_reply(quantized["masks"], S.MASK_QUANTIZATION)
    assert np.all(restored[high] > 0.5)
    assert np.array_equal(restored >= M.THRESHOLD, probs >= M.THRESHOLD)
    # The original int8 export. Out of int8's range TF's cast wraps (small tensors:
    # 0.6 -> -103) or saturates at 127 (its vectorised kernel); 127/255 is below 0.5 too.
    naive = tf.cast(probs * 255, tf.int8).numpy()
    out_of_range = probs >= 128 / 255
    assert np.all(naive[out_of_range] / 255 < 0.5)
    lost = (naive.astype(np.float32) / 255 < M.THRESHOLD) & high
    assert lost.sum() / high.sum() > 0.99


def test_tf_serving_wire_forms_of_the_real_mask_tensor(run):
    """The mask tensor as TF Serving sends it: REST JSON integers, gRPC int_val (the
    default) and gRPC tensor_content, in TensorFlow's real TensorProto."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    quantized, _, _ = run
    q = quantized["masks"]
    expected = dequantize_reply(q, S.MASK_QUANTIZATION)
    content = tensor_pb2.TensorProto.FromString(
        tf.make_tensor_proto(q).SerializeToString())
    assert content.tensor_content and not content.int_val
    typed = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_UINT8, int_val=q.ravel().tolist(),
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in q.shape]))
    typed = tensor_pb2.TensorProto.FromString(typed.SerializeToString())
    shape = [d.size for d in typed.tensor_shape.dim]
    forms = {
        "rest": dequantize_reply(json.loads(json.dumps({"masks": q.tolist()}))["masks"],
                             S.MASK_QUANTIZATION),
        "int_val": dequantize_reply(typed.int_val, S.MASK_QUANTIZATION, shape=shape),
        "tensor_content": dequantize_reply(content.tensor_content, S.MASK_QUANTIZATION,
                                       shape=[d.size for d in content.tensor_shape.dim]),
    }
    for name, value in forms.items():
        assert np.array_equal(value, expected), name


def test_anchors_of_the_wrong_count_fail_loudly(models, run):
    import tensorflow as tf

    _, served = models
    meta = np.zeros((1, S.META_SIZE), np.float32)
    meta[0, 7:11] = [0, 0, 512, 512]
    with pytest.raises(tf.errors.InvalidArgumentError, match="65472 pyramid anchors"):
        served(input_image=tf.zeros([1, 512, 512, 3], tf.int8),
               input_image_meta=tf.constant(meta), input_anchors=tf.zeros([1, 10, 4]))


def test_cli_builds_or_reuses_the_demo(seg_demo):
    out = subprocess.run([sys.executable, "-m", "modelprep.cli", "demo", "--segmentation"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == f"segmentation demo ready: {seg_demo.served}  (cached)"
