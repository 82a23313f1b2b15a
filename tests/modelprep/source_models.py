"""Real source models of every kind `modelprep wrap` takes, each built once per test process.

* a TF1 graph-mode image model written with ``SavedModelBuilder`` (reference
  variables, two signatures), shaped like the Mask R-CNN service: ``input_image``
  (pixels minus the mean, float [None, 32, 32, 3]) and ``input_image_meta``
  (float [None, 4]) in; ``probs``, a sigmoid ``mask`` and a tanh ``image`` out;
* the same model frozen with ``convert_variables_to_constants`` into a ``.pb``;
* a Keras MobileNetV2 (``weights=None``: no download) saved as ``.keras``;
* a small two-input functional Keras model saved as ``.h5``;
* a TF2 identity model (``mask`` out = ``x`` in) for feeding chosen output values.

The builders cache in one temporary directory, so test modules share them.
"""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import SHARED_FIXTURES

TFSERVING = SHARED_FIXTURES / "tfserving"
HALF_PLUS_TWO = TFSERVING / "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = TFSERVING / "saved_model_half_plus_three"
MEAN = (123.7, 116.8, 103.9)
"""Mask R-CNN's MEAN_PIXEL: the TF1 model takes ``pixels - MEAN``."""
TF1_SIZE = 32
KERAS_SIZE = 96

_ROOT = Path(tempfile.mkdtemp(prefix="modelprep-sources-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@functools.cache
def tf1_image_model() -> Path:
    """The TF1 SavedModel directory (signatures ``serving_default`` and ``probs_only``)."""
    path, _ = _tf1_build()
    return path


@functools.cache
def frozen_graph() -> Path:
    """The TF1 model frozen: ``input_image:0``, ``input_image_meta:0`` in; ``probs:0``,
    ``mask:0``, ``image:0``, ``probs_only:0`` out."""
    _, frozen = _tf1_build()
    return frozen


@functools.cache
def _tf1_build() -> tuple[Path, Path]:
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir, frozen = _ROOT / "tf1_image", _ROOT / "frozen_image.pb"
    graph = tf.Graph()
    with graph.as_default():
        def variable(name, shape, seed):
            return v1.get_variable(name, shape, initializer=v1.random_normal_initializer(
                stddev=0.5, seed=seed), use_resource=False)

        image = v1.placeholder(tf.float32, [None, TF1_SIZE, TF1_SIZE, 3], name="input_image")
        meta = v1.placeholder(tf.float32, [None, 4], name="input_image_meta")
        x = image / 64.0
        hidden = tf.nn.relu(tf.nn.conv2d(x, variable("conv1/w", [3, 3, 3, 8], 1), 1, "SAME")
                            + variable("conv1/b", [8], 2))
        mask = tf.sigmoid(tf.nn.conv2d(hidden, variable("mask/w", [1, 1, 8, 1], 3), 1, "SAME")
                          - 0.5, name="mask")
        picture = tf.tanh(tf.nn.conv2d(hidden, variable("image/w", [1, 1, 8, 3], 4), 1,
                                       "SAME"), name="image")
        pooled = tf.reduce_mean(hidden, axis=[1, 2])
        logits = tf.matmul(pooled, variable("dense/w", [8, 3], 5))
        probs = tf.nn.softmax(logits + tf.matmul(meta, variable("meta/w", [4, 3], 6)),
                              name="probs")
        probs_only = tf.nn.softmax(logits, name="probs_only")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": v1.saved_model.predict_signature_def(
                    {"input_image": image, "input_image_meta": meta},
                    {"probs": probs, "mask": mask, "image": picture}),
                "probs_only": v1.saved_model.predict_signature_def(
                    {"input_image": image}, {"probs": probs_only}),
            })
            builder.save()
            constant = v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), ["probs", "mask", "image", "probs_only"])
    frozen.write_bytes(constant.SerializeToString())
    return export_dir, frozen


@functools.cache
def mobilenet_keras() -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(KERAS_SIZE, KERAS_SIZE, 3),
                                           alpha=0.35, classes=5)
    path = _ROOT / "mobilenet.keras"
    model.save(path)
    return path


@functools.cache
def two_input_h5() -> Path:
    """``pixels`` float [None, 16, 16, 3] and ``meta`` float [None, 4] in; ``probs`` [None, 5]
    and ``aux`` [None, 2] out."""
    import keras

    keras.utils.set_random_seed(1)
    pixels = keras.Input((16, 16, 3), name="pixels")
    meta = keras.Input((4,), name="meta")
    hidden = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(6, 3, activation="relu")(pixels))
    joined = keras.layers.Concatenate()([hidden, meta])
    probs = keras.layers.Dense(5, activation="softmax", name="probs")(joined)
    aux = keras.layers.Dense(2, name="aux")(joined)
    path = _ROOT / "two_input.h5"
    keras.Model([pixels, meta], [probs, aux]).save(path)
    return path


@functools.cache
def identity_model() -> Path:
    """A TF2 SavedModel whose ``mask`` output is its float input ``x`` [None, 2, 3]."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda x: {"mask": tf.identity(x)},
                               input_signature=[tf.TensorSpec([None, 2, 3], tf.float32,
                                                              name="x")])
    path = _ROOT / "identity"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@functools.cache
def photos(size: int, count: int = 4) -> np.ndarray:
    """Real photos (scikit-learn's china.jpg and flower.jpg), cropped and scaled to
    ``size`` x ``size``: ``[count, size, size, 3]`` uint8."""
    from sklearn.datasets import load_sample_images

    result = []
    for i in range(count):
        photo = load_sample_images().images[i % 2]
        h, w = photo.shape[:2]
        side = min(h, w) // (1 + i // 2)
        top, left = (h - side) // 2, (w - side) // 2 + 17 * i
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        result.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)))
    return np.stack(result)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _wrap_configs() -> dict:
    from modelmeta import Normalization
    from modelprep.options import InputLayer, OutputLayer, parse_graph_tensors
    from modelprep.wrap import WrapOptions

    minus_mean = Normalization("meanstd", mean=MEAN, std=(1.0, 1.0, 1.0))
    return {
        # the Mask R-CNN service done right: int8 pixels with a scale and zero point that
        # hold pixels minus the mean, meta passed through, uint8 mask, PNG image
        "tf1_int8": (tf1_image_model, WrapOptions(
            inputs={"input_image": InputLayer.parse("quantized_pixels:int8"),
                    "input_image_meta": InputLayer("tensor")},
            normalization=minus_mean, keep_signatures=("probs_only",),
            outputs={"mask": OutputLayer.parse("uint8:0:1"),
                     "image": OutputLayer.parse("png:-1:1")},
            output_roles={"mask": "masks"})),
        "tf1_bytes": (tf1_image_model, WrapOptions(
            image_input="input_image", normalization=minus_mean,
            outputs={"mask": OutputLayer.parse("png:0:1")}, output_roles={"mask": "masks"})),
        "frozen": (frozen_graph, WrapOptions(
            graph_inputs=parse_graph_tensors("input_image:0,meta=input_image_meta:0"),
            graph_outputs=parse_graph_tensors("probs:0,mask"),
            image_input="input_image", normalization=minus_mean)),
        "mobilenet": (mobilenet_keras, WrapOptions(
            normalization=Normalization("symmetric"), labels=tuple("abcde"))),
        "h5": (two_input_h5, WrapOptions(inputs={"pixels": InputLayer("image_base64")})),
        "half_plus_two": (lambda: HALF_PLUS_TWO, WrapOptions(
            inputs={"x": InputLayer("tensor")}, keep_signatures=True,
            outputs={"y": OutputLayer.parse("int8:0:10")})),
        "identity": (identity_model, WrapOptions(
            inputs={"x": InputLayer("tensor")}, outputs={"mask": OutputLayer.parse("uint8:0:1")},
            output_roles={"mask": "masks"})),
    }


WRAPPED = ("tf1_int8", "tf1_bytes", "frozen", "mobilenet", "h5", "half_plus_two", "identity")


@functools.cache
def wrapped(name: str):
    """``(path, metadata)`` of a source model wrapped as configured above, built once."""
    from modelprep.wrap import wrap

    source, options = _wrap_configs()[name]
    out = _ROOT / "wrapped" / name
    return out, wrap(source(), out, options)
