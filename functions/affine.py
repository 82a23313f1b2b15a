"""Affine quantization in numpy, the one implementation the function and modelprep share.

``real = scale * (q - zero_point)``, as `modelmeta` defines it. Quantizing rounds half to
even and clips to the dtype's range, never wraps; dequantizing computes in float32, as
the model's graph does, so both sides get the same bits.
"""

from __future__ import annotations

import numpy as np

from modelmeta import QUANT_DTYPES, Quantization


def quantize(values: np.ndarray, quantization: Quantization) -> np.ndarray:
    """Real values to the quantized dtype: round half to even, clip, cast."""
    lo, hi = QUANT_DTYPES[quantization.dtype]
    q = np.rint(np.asarray(values, np.float64) / quantization.scale) + quantization.zero_point
    return np.clip(q, lo, hi).astype(quantization.dtype)


def dequantize(values: np.ndarray, quantization: Quantization | None) -> np.ndarray:
    """Quantized integers back to float32 reals; values without a quantization unchanged."""
    if quantization is None:
        return values
    real = np.asarray(values).astype(np.float32) - np.float32(quantization.zero_point)
    return real * np.float32(quantization.scale)
