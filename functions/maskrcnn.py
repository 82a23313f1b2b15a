"""Mask R-CNN's extra inputs, built as matterport's code builds them.

``input_image_meta`` ``[B, 12 + classes]``
    matterport's ``compose_image_meta``: image id, original shape (h, w, c), molded
    shape, window (y1, x1, y2, x2), scale, then 1 for every class (all active).
``input_anchors`` ``[B, A, 4]``
    matterport's ``generate_pyramid_anchors`` with its default configuration
    (scales 32-512, ratios 0.5/1/2, strides 4-64, anchor stride 1), normalised to the
    molded size; when the metadata fixes ``A``, it is checked.

"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from functions.answers.masks import Geometry

IMAGE_META = "input_image_meta"
ANCHORS = "input_anchors"
META_FIXED = 12
"""Values of the image meta before the per-class flags."""
ANCHOR_SCALES = (32, 64, 128, 256, 512)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
BACKBONE_STRIDES = (4, 8, 16, 32, 64)
ANCHOR_STRIDE = 1



def image_meta(geometries: Sequence[Geometry], channels: int, classes: int) -> np.ndarray:
    """matterport's ``compose_image_meta`` for each image, as float32 ``[B, 12 + classes]``."""
    rows = []
    for i, g in enumerate(geometries):
        y1, _x1, y2, _x2 = g.window
        scale = (y2 - y1) / g.height
        rows.append([i, g.height, g.width, channels, g.molded_height, g.molded_width,
                     channels, *g.window, scale, *([1] * classes)])
    return np.array(rows, np.float32).reshape(len(geometries), META_FIXED + classes)


def pyramid_anchors(height: int, width: int) -> np.ndarray:
    """matterport's pyramid anchors for a molded image, normalised: float32 ``[A, 4]``.

    One level per backbone stride, each the cells of a ``ceil(size / stride)`` feature
    map times the ratios, as (y1, x1, y2, x2); then ``norm_boxes``:
    ``(box - (0, 0, 1, 1)) / (h - 1, w - 1, h - 1, w - 1)``.
    """
    levels = []
    for scale, stride in zip(ANCHOR_SCALES, BACKBONE_STRIDES, strict=True):
        ratios = np.asarray(ANCHOR_RATIOS, np.float64)
        heights, widths = scale / np.sqrt(ratios), scale * np.sqrt(ratios)
        ys = np.arange(0, math.ceil(height / stride), ANCHOR_STRIDE) * stride
        xs = np.arange(0, math.ceil(width / stride), ANCHOR_STRIDE) * stride
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        centres = np.stack([cy.ravel(), cx.ravel()], axis=1)[:, None, :]
        sizes = np.stack([heights, widths], axis=1)[None, :, :]
        boxes = np.concatenate([centres - 0.5 * sizes, centres + 0.5 * sizes], axis=2)
        levels.append(boxes.reshape(-1, 4))
    anchors = np.concatenate(levels)
    extent = np.array([height - 1, width - 1, height - 1, width - 1], np.float64)
    return ((anchors - [0, 0, 1, 1]) / extent).astype(np.float32)
