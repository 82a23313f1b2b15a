"""A tiny tensor-fed model for the LiteRT tests: Mask R-CNN's input contract at toy size.

Two inputs, as the segmentation demo takes them: ``input_image`` int8 pixels with zero
point -128 (``pixel = q + 128``, exact) and ``input_image_meta`` float32 (filled by the
function's own feed); two float outputs, class probabilities and a small heat map.
Small enough that both LiteRT flavours convert and verify in seconds, and simple
enough (convolution, mean, matmul, softmax) that int8 converts, which the segmentation
demo's loops do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelmeta import ImageSpec, InputSpec, ModelMetadata, Normalization, OutputSpec, Quantization

SIZE = 16
META = 16
"""12 values of matterport's image meta plus 4 class flags."""
PIXELS = Quantization("int8", 1.0, -128)
LABELS = ("a", "b", "c", "d")


def metadata() -> ModelMetadata:
    return ModelMetadata(
        name="tiny-tensor-fed",
        inputs=(InputSpec("input_image", "quantized_pixels", "int8", (-1, SIZE, SIZE, 3),
                          image=ImageSpec(SIZE, SIZE, 3, Normalization("raw"), resize="pad"),
                          quantization=PIXELS),
                InputSpec("input_image_meta", "tensor", "float32", (-1, META))),
        outputs=(OutputSpec("scores", "probabilities", "float32", (-1, len(LABELS))),
                 OutputSpec("heat", "tensor", "float32", (-1, SIZE, SIZE))),
        labels=LABELS,
        source={"format": "saved_model", "signature": "serving_default",
                "built_by": "tests.litert.tensor_model"})


def build(out: Path) -> ModelMetadata:
    """Save the model at `out` with its metadata, as `modelprep wrap` lays models out."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    weights = tf.constant(rng.normal(0, 1, (3, len(LABELS))).astype(np.float32))
    from_meta = tf.constant(rng.normal(0, 0.1, (META, len(LABELS))).astype(np.float32))
    kernel = tf.constant(rng.normal(0, 1, (3, 3, 3, 2)).astype(np.float32))

    class TensorFed(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, SIZE, SIZE, 3], tf.int8, name="input_image"),
            tf.TensorSpec([None, META], tf.float32, name="input_image_meta")])
        def serve(self, input_image, input_image_meta):
            x = (tf.cast(input_image, tf.float32) + 128.0) / 255.0
            features = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))
            logits = (tf.matmul(tf.reduce_mean(x, axis=[1, 2]), weights)
                      + tf.matmul(input_image_meta / 100.0, from_meta))
            return {"scores": tf.nn.softmax(logits),
                    "heat": tf.reduce_mean(features, axis=-1)}

    module = TensorFed()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    meta = metadata()
    meta.save(out)
    return meta
