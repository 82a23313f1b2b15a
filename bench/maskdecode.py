"""What a client does with a mask: any format back to an image-sized bool array.

Reference decoders in Python for the tests and the bench; the mini-program and the demo
page do the same in JavaScript.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from functions.answers.masks import THRESHOLD


def decode_mask(value: Any, fmt: str, box: Sequence[int], height: int,
                width: int) -> np.ndarray:
    """An instance's ``mask`` value in any format back to an image-sized bool array."""
    x1, y1, x2, y2 = box
    full = np.zeros((height, width), bool)
    if fmt == "float":
        full[y1:y2, x1:x2] = np.asarray(value, np.float64) >= THRESHOLD
    elif fmt == "png":
        with Image.open(io.BytesIO(base64.b64decode(value))) as image:
            full[y1:y2, x1:x2] = np.asarray(image) == 1
    elif fmt == "rle":
        counts = np.asarray(value["counts"], np.int64)
        values = np.arange(len(counts)) % 2 == 1
        flat = np.repeat(values, counts)
        full = flat.reshape(width, height).T.copy()
    elif fmt == "polygon":
        full = rasterize(value, height, width)
    else:
        raise ValueError(f"unknown mask format {fmt!r}")
    return full


def rasterize(rings: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Fill rings with the even-odd rule, sampling at pixel centres (as a canvas does)."""
    inside = np.zeros((height, width + 1), np.int64)
    for ring in rings:
        xy = np.asarray(ring, np.float64).reshape(-1, 2)
        x0, y0 = xy[:, 0], xy[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        rows = np.arange(height) + 0.5
        crosses = (lo[:, None] <= rows[None, :]) & (rows[None, :] < hi[:, None])
        e, r = np.nonzero(crosses)
        x = x0[e] + (rows[r] - y0[e]) * (x1[e] - x0[e]) / (y1[e] - y0[e])
        column = np.clip(np.ceil(x - 0.5).astype(np.int64), 0, width)
        np.add.at(inside, (r, column), 1)
    return (np.cumsum(inside, axis=1)[:, :width] % 2).astype(bool)

