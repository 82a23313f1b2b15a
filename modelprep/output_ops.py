"""In-graph output layers: what the wrapped model does after the original one.

Outputs leave the model smaller than they came: quantized to 8-bit integers
with the scale and zero point written in the metadata, or encoded as PNG.
Both clip to the declared range before the cast.  A bare cast would wrap: the
Mask R-CNN service's ``cast(mask * 255, int8)`` turns a mask value of 0.6 into
-103 and 1.0 into -1.
"""

from __future__ import annotations

import tensorflow as tf

from modelmeta import QUANT_DTYPES, Quantization


def quantize(values: tf.Tensor, quantization: Quantization) -> tf.Tensor:
    """Real values to integers, ``round(x / scale) + zero_point`` clipped to the dtype's range.

    Rounding is half to even; NaN becomes the zero point (real 0), since
    casting NaN to an integer has no defined result.
    """
    low, high = QUANT_DTYPES[quantization.dtype]
    scaled = tf.cast(values, tf.float32) / quantization.scale + float(quantization.zero_point)
    scaled = tf.where(tf.math.is_nan(scaled), float(quantization.zero_point), scaled)
    clipped = tf.clip_by_value(tf.round(scaled), float(low), float(high))
    return tf.cast(clipped, tf.as_dtype(quantization.dtype))


def encode_png_batch(images: tf.Tensor) -> tf.Tensor:
    """uint8 images ``[n, h, w]`` or ``[n, h, w, c]`` (c 1 to 4) to ``[n]`` PNG strings."""
    if images.shape.rank == 3:
        images = images[..., tf.newaxis]
    return tf.map_fn(tf.io.encode_png, images,
                     fn_output_signature=tf.TensorSpec([], tf.string))
