"""Small real TensorFlow models, and prepared forms of them written by hand.

`verify` and `export` must work on every kind of prepared model: quantized and
PNG-encoded outputs, quantized pixel inputs, pass-through tensor inputs, TF1
graph-mode exports. These builders make such models directly, with the same
graph ops and metadata a preparation writes, so the checks do not depend on
which of those modes `modelprep wrap` supports yet, and so a deliberately
broken one (the wrapping int8 cast from the design notes) can be built too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from modelmeta import (
    ImageSpec,
    InputSpec,
    ModelMetadata,
    Normalization,
    OutputSpec,
    Quantization,
)
from modelprep.input_ops import image_batch

SIZE = 8
MASK_QUANT = Quantization.for_range("uint8", 0.0, 1.0)
"""Masks quantized to uint8 over [0, 1]: scale 1/255, zero point 0."""
MASK_QUANT_INT8 = Quantization.for_range("int8", 0.0, 1.0)
"""The right int8 form: scale 1/255 and zero point -128."""
NAIVE_INT8 = Quantization("int8", 1 / 255, 0)
"""What ``cast(mask * 255, int8)`` claims to be; 0.6 comes back as -103."""


class MaskNet(tf.Module):
    """An 8x8 gray image model with a mask (values up to 1.1), an image and class logits."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        self.kernel = tf.Variable(rng.normal(0, 1, (SIZE * SIZE, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32, name="image")])
    def serve(self, image):
        flat = tf.reshape(image, [-1, SIZE * SIZE])
        return {"mask": image * 1.1, "picture": 255.0 * (1.0 - image),
                "logits": tf.matmul(flat - 0.5, self.kernel)}


def save_original(path: Path) -> Path:
    net = MaskNet()
    tf.saved_model.save(net, str(path), signatures={"serving_default": net.serve})
    return path


def _quantize(value, q: Quantization):
    lo, hi = (0, 255) if q.dtype == "uint8" else (-128, 127)
    scaled = tf.clip_by_value(tf.round(value / q.scale) + q.zero_point, lo, hi)
    return tf.cast(scaled, tf.as_dtype(q.dtype))


def save_prepared_mask_model(original: Path, out: Path, *, mask: str = "uint8") -> ModelMetadata:
    """The prepared form of `MaskNet`: encoded images in; mask quantized, ``picture`` as PNG
    (``picture_bytes``), logits unchanged. ``mask="naive"`` builds the wrapping cast."""
    loaded = tf.saved_model.load(str(original))
    spec = ImageSpec(height=SIZE, width=SIZE, channels=1, normalization=Normalization("unit"))
    quant = {"uint8": MASK_QUANT, "int8": MASK_QUANT_INT8, "naive": NAIVE_INT8}[mask]

    class Prepared(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.original = loaded
            self._fn = loaded.signatures["serving_default"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            out = self._fn(image=image_batch(image_bytes, spec))
            if mask == "naive":  # through int32, so it wraps on every CPU path: 0.6 -> -103
                mask_q = tf.cast(tf.cast(out["mask"] * 255, tf.int32), tf.int8)
            else:
                mask_q = _quantize(out["mask"], quant)
            picture = tf.cast(tf.clip_by_value(tf.round(out["picture"]), 0, 255), tf.uint8)
            pngs = tf.map_fn(tf.io.encode_png, picture, fn_output_signature=tf.string)
            return {"mask": mask_q, "picture_bytes": pngs, "logits": out["logits"]}

    module = Prepared()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    metadata = ModelMetadata(
        name="masknet",
        inputs=(InputSpec("image_bytes", "image_bytes", "string", (-1,), image=spec),),
        outputs=(
            OutputSpec("logits", "logits", "float32", (-1, 3)),
            OutputSpec("mask", "masks", quant.dtype, (-1, SIZE, SIZE, 1), quantization=quant),
            OutputSpec("picture_bytes", "image", "string", (-1,), quantization=Quantization(
                "uint8", 1.0, 0), encoding="png"),
        ),
        labels=("a", "b", "c"),
        source={"path": str(original), "format": "saved_model", "signature": "serving_default",
                "input": "image"},
    )
    metadata.save(out)
    return metadata


def save_quantized_pixels_digits(original: Path, out: Path, dtype: str) -> ModelMetadata:
    """The demo digits model fed quantized model values ``[n, 28, 28, 1]``: pixel/255 as
    uint8 (scale 1/255) or int8 (scale 1/255, zero point -128)."""
    loaded = tf.saved_model.load(str(original))
    quant = Quantization.for_range(dtype, 0.0, 1.0)
    spec = ImageSpec(height=28, width=28, channels=1, normalization=Normalization("unit"),
                     layout="flat")

    class Prepared(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.original = loaded
            self._fn = loaded.signatures["serving_default"]

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.as_dtype(dtype),
                                                    name="pixels")])
        def serve(self, pixels):
            real = (tf.cast(pixels, tf.float32) - quant.zero_point) * quant.scale
            return dict(self._fn(images=tf.reshape(real, [-1, 784])))

    module = Prepared()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    metadata = ModelMetadata(
        name=f"digits-{dtype}",
        inputs=(InputSpec("pixels", "quantized_pixels", dtype, (-1, 28, 28, 1), image=spec,
                          quantization=quant, original="images"),),
        outputs=(OutputSpec("scores", "probabilities", "float32", (-1, 10)),),
        labels=tuple("0123456789"),
        source={"path": str(original), "format": "saved_model", "signature": "serving_default"},
    )
    metadata.save(out)
    return metadata


def save_prepared_half_plus_two(fixture: Path, out: Path, low: float = 0.0,
                                high: float = 4.0) -> ModelMetadata:
    """TF Serving's TF1 half_plus_two re-exported in graph mode with SavedModelBuilder, its
    ``y`` quantized to int8 over [low, high] and ``x`` passed through."""
    quant = Quantization.for_range("int8", low, high)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(fixture))
        sig = meta.signature_def["serving_default"]
        x = graph.get_tensor_by_name(sig.inputs["x"].name)
        y = graph.get_tensor_by_name(sig.outputs["y"].name)
        y_q = _quantize(y, quant)
        builder = tf.compat.v1.saved_model.Builder(str(out))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            "serving_default": tf.compat.v1.saved_model.predict_signature_def(
                inputs={"x": x}, outputs={"y": y_q})})
        builder.save()
    metadata = ModelMetadata(
        name="half_plus_two",
        inputs=(InputSpec("x", "tensor", "float32", (-1, 1)),),
        outputs=(OutputSpec("y", "tensor", "int8", (-1, 1), quantization=quant),),
        source={"path": str(fixture), "format": "saved_model", "signature": "serving_default"},
    )
    metadata.save(out)
    return metadata
