"""In-graph image preprocessing: what the wrapped model does before the original one.

These are TensorFlow ops so that the work happens inside the SavedModel, where
TF Serving and the in-process backend both run it, and the client can send a
compressed photo instead of a float array 200x its size. Every step follows the
conventions written down in `modelmeta` so that any other runtime can repeat it.
"""

from __future__ import annotations

import tensorflow as tf

from modelmeta import ImageSpec, Normalization, Quantization

_BASE64_PREFIX = r"(?i)^\s*data:[^,]*,"


def decode_base64_text(text: tf.Tensor) -> tf.Tensor:
    """Base64 text as clients really send it, to raw bytes.

    `tf.io.decode_base64` accepts only the web-safe alphabet, so the standard
    one is translated first; a ``data:...;base64,`` prefix (any media type, any
    case), whitespace and padding are dropped (TF's decoder does not need the
    padding).
    """
    text = tf.strings.regex_replace(text, _BASE64_PREFIX, "")
    text = tf.strings.regex_replace(text, r"[\s=]+", "")
    text = tf.strings.regex_replace(text, r"\+", "-")
    text = tf.strings.regex_replace(text, "/", "_")
    return tf.io.decode_base64(text)


def decode_image(data: tf.Tensor, channels: int) -> tf.Tensor:
    """Encoded JPEG, PNG, GIF (first frame) or BMP to float32 pixels ``[h, w, channels]``.

    JPEG goes through `decode_jpeg` with the accurate integer DCT, the libjpeg
    default that Pillow also uses, so other runtimes can reproduce the pixels.
    GIF and BMP decoders only produce colour, so gray comes from a float
    conversion there; PNG and JPEG decode straight to gray, bit for bit.
    """
    head = tf.strings.substr(data, 0, 3)
    is_jpeg = tf.equal(head, b"\xff\xd8\xff")
    colour_only = tf.logical_or(tf.equal(head, b"GIF"), tf.equal(tf.strings.substr(data, 0, 2),
                                                                b"BM"))

    def jpeg():
        return tf.cast(tf.io.decode_jpeg(data, channels=channels,
                                         dct_method="INTEGER_ACCURATE"), tf.float32)

    def other():
        return tf.cast(tf.io.decode_image(data, channels=channels, expand_animations=False),
                       tf.float32)

    def colour_to_gray():
        rgb = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.int32)
        return tf.cast(rgb_to_gray(rgb), tf.float32)

    if channels == 1:
        pixels = tf.case([(is_jpeg, jpeg), (colour_only, colour_to_gray)], default=other)
    else:
        pixels = tf.cond(is_jpeg, jpeg, other)
    pixels.set_shape([None, None, channels])
    return pixels


def rgb_to_gray(rgb: tf.Tensor) -> tf.Tensor:
    """ITU-R 601 luma in integers, exactly as Pillow's ``convert("L")`` computes it.

    `tf.image.rgb_to_grayscale` uses weights that sum to 0.9999, which would
    darken a gray image by a hair; this keeps gray pixels exactly as they were.
    """
    weights = tf.constant([19595, 38470, 7471], tf.int32)
    luma = tf.reduce_sum(rgb * weights, axis=-1, keepdims=True) + 32768
    return tf.bitwise.right_shift(luma, 16)


def resize(pixels: tf.Tensor, spec: ImageSpec) -> tf.Tensor:
    """Resize ``[h, w, c]`` float pixels to the model's size, leaving exact sizes untouched.

    ``stretch`` ignores the aspect ratio (what most classifiers were trained
    with); ``pad`` fits the whole image and fills the rest with background;
    ``crop`` fills the frame and cuts the overflow, centred.
    """
    target = tf.constant([spec.height, spec.width], tf.int32)
    size = tf.shape(pixels)[:2]

    def scaled(scale: tf.Tensor) -> tf.Tensor:
        new = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
        return tf.image.resize(pixels, new, method="bilinear", antialias=True)

    def stretch():
        return tf.image.resize(pixels, target, method="bilinear", antialias=True)

    def pad():
        ratio = tf.cast(target, tf.float32) / tf.cast(size, tf.float32)
        fitted = scaled(tf.reduce_min(ratio))
        new = tf.shape(fitted)[:2]
        top, left = (spec.height - new[0]) // 2, (spec.width - new[1]) // 2
        paddings = [[top, spec.height - new[0] - top], [left, spec.width - new[1] - left], [0, 0]]
        background = 255.0 if spec.normalization.invert else 0.0
        return tf.pad(fitted, paddings, constant_values=background)

    def crop():
        ratio = tf.cast(target, tf.float32) / tf.cast(size, tf.float32)
        filled = scaled(tf.reduce_max(ratio))
        new = tf.shape(filled)[:2]
        top, left = (new[0] - spec.height) // 2, (new[1] - spec.width) // 2
        return filled[top:top + spec.height, left:left + spec.width, :]

    resized = {"stretch": stretch, "pad": pad, "crop": crop}[spec.resize]
    out = tf.cond(tf.reduce_all(tf.equal(size, target)), lambda: pixels, resized)
    out.set_shape([spec.height, spec.width, spec.channels])
    return out


def normalize(pixels: tf.Tensor, norm: Normalization) -> tf.Tensor:
    """0..255 float pixels to model values, per the `modelmeta` formulas."""
    if norm.invert:
        pixels = 255.0 - pixels
    if norm.mode == "unit":
        return pixels / 255.0
    if norm.mode == "symmetric":
        return pixels / 127.5 - 1.0
    if norm.mode == "meanstd":
        mean = tf.constant(norm.mean, tf.float32)
        std = tf.constant(norm.std, tf.float32)
        return (pixels - mean) / std
    return pixels


def image_batch(encoded: tf.Tensor, spec: ImageSpec) -> tf.Tensor:
    """A batch of encoded images ``[n]`` to normalised pixels ``[n, h, w, c]``."""

    def one(data: tf.Tensor) -> tf.Tensor:
        return resize(decode_image(data, spec.channels), spec)

    pixels = tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(
        [spec.height, spec.width, spec.channels], tf.float32))
    return normalize(pixels, spec.normalization)


def dequantize(q: tf.Tensor, quantization: Quantization) -> tf.Tensor:
    """Quantized integers to float32 values: ``scale * (q - zero_point)``."""
    return (tf.cast(q, tf.float32) - float(quantization.zero_point)) * quantization.scale


def to_dtype(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Float values to the dtype a model input wants.

    Integer inputs get rounded, clipped values: a plain cast would truncate
    254.9 to 254 and wrap 256 to 0.
    """
    if not dtype.is_integer:
        return tf.cast(values, dtype)
    return tf.cast(tf.clip_by_value(tf.round(values), float(dtype.min), float(dtype.max)), dtype)
