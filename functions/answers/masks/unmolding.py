"""Mask R-CNN detections back onto the client's image: boxes in its pixels, masks resized.

The model sees a "molded" image (the photo scaled, and padded or cropped, onto its input
size); `Geometry` records where the photo went, `unmold` undoes it. Masks are kept
box-sized and resized in padded blocks of similar size (`CHUNK_ELEMENTS` bounds a block):
an image-sized array per detection would cost 100 x 1 MB for a 1024x1024 photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from functions.errors import BadGateway

CHUNK_ELEMENTS = 4_000_000
"""Largest padded block (detections x height x width) resized at once, about 16 MB."""



@dataclass(frozen=True)
class Geometry:
    """Where the client's image sits inside the model's input (the "molded" image)."""

    height: int
    width: int
    """The client's image, in pixels."""
    molded_height: int
    molded_width: int
    window: tuple[float, float, float, float]
    """y1, x1, y2, x2 in molded pixels: the rectangle the whole image was scaled onto
    (past the edges when the image was cropped)."""


@dataclass(frozen=True)
class Instances:
    """One image's detections, unmolded: boxes in image pixels and box-sized masks."""

    height: int
    width: int
    boxes: np.ndarray
    """int64 ``[n, 4]``: y1, x1, y2, x2 in image pixels, ends exclusive, never empty."""
    class_ids: np.ndarray
    scores: np.ndarray
    blocks: tuple[tuple[np.ndarray, np.ndarray], ...]
    """``(indices, probabilities [k, h, w])`` pairs: instance ``indices[j]``'s mask is
    ``probabilities[j, :box height, :box width]``; the rest of the block is zero."""
    _float_steps: dict[int, np.ndarray] = field(default_factory=dict, compare=False,
                                                repr=False)
    """Each block's ``float`` rounding, shared by the size check and the encoder."""

    def float_steps(self, probs: np.ndarray) -> np.ndarray:
        """A block's probabilities as thousandths (see `encode.float_steps`), computed once."""
        steps = self._float_steps.get(id(probs))
        if steps is None:
            from functions.answers.masks.encode import float_steps

            steps = self._float_steps[id(probs)] = float_steps(probs)
        return steps

    def __len__(self) -> int:
        return len(self.boxes)

    def probabilities(self, i: int) -> np.ndarray:
        """Instance ``i``'s box-sized probabilities (for tests and reference code)."""
        for indices, probs in self.blocks:
            hit = np.flatnonzero(indices == i)
            if hit.size:
                y1, x1, y2, x2 = self.boxes[i]
                return probs[hit[0], :y2 - y1, :x2 - x1]
        raise IndexError(i)



def unmold(detections: np.ndarray, masks: np.ndarray, geometry: Geometry) -> Instances:
    """One image's detections ``[N, 6]`` and float masks ``[N, 28, 28, C]`` to `Instances`.

    Boxes follow matterport's ``unmold_detections``: normalised molded coordinates are
    moved into the window, then denormalised to the image (``norm_boxes`` convention:
    ``(y2 - 1) / (height - 1)``), rounded, clipped to the image. Padding rows (class 0)
    and boxes that end up empty are dropped; order is kept.
    """
    detections = np.asarray(detections, np.float64)
    masks = np.asarray(masks, np.float32)
    if detections.ndim != 2 or detections.shape[1] < 6:
        raise BadGateway(f"detections should be [N, 6], got {list(detections.shape)}")
    if masks.ndim != 4 or masks.shape[0] != detections.shape[0]:
        raise BadGateway(f"masks should be [{detections.shape[0]}, h, w, classes], "
                         f"got {list(masks.shape)}")
    classes = np.rint(detections[:, 4]).astype(np.int64)
    real = classes > 0
    if np.any(classes[real] >= masks.shape[3]):
        raise BadGateway(f"a detection has class {int(classes[real].max())} but masks "
                         f"have {masks.shape[3]} classes")
    boxes = _image_boxes(detections[:, :4], geometry)
    keep = np.flatnonzero(real & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    boxes, classes = boxes[keep], classes[keep]
    own = masks[keep, :, :, classes]  # each detection's own class: [n, mh, mw]
    return Instances(height=geometry.height, width=geometry.width, boxes=boxes,
                     class_ids=classes, scores=detections[keep, 5].astype(np.float32),
                     blocks=tuple(_resize_blocks(own, boxes)))


def _image_boxes(normalised: np.ndarray, g: Geometry) -> np.ndarray:
    mh, mw = g.molded_height, g.molded_width
    window = (np.asarray(g.window, np.float64) - [0, 0, 1, 1]) / [mh - 1, mw - 1, mh - 1,
                                                                   mw - 1]
    wh, ww = window[2] - window[0], window[3] - window[1]
    shifted = (normalised - window[[0, 1, 0, 1]]) / [wh, ww, wh, ww]
    boxes = np.rint(shifted * [g.height - 1, g.width - 1, g.height - 1, g.width - 1]
                    + [0, 0, 1, 1]).astype(np.int64)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, g.height)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, g.width)
    return boxes


def _resize_blocks(masks: np.ndarray, boxes: np.ndarray):
    """Resize every mask to its box, in blocks of similar size: ``(indices, probs)``."""
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    order = np.argsort(heights * widths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        top_h, top_w = heights[order[start]], widths[order[start]]
        while end < len(order):
            h, w = max(top_h, heights[order[end]]), max(top_w, widths[order[end]])
            if (end + 1 - start) * h * w > CHUNK_ELEMENTS:
                break
            top_h, top_w, end = h, w, end + 1
        idx = order[start:end]
        yield idx, _resize(masks[idx], heights[idx], widths[idx], int(top_h), int(top_w))
        start = end


def _resize(masks: np.ndarray, heights: np.ndarray, widths: np.ndarray, top_h: int,
            top_w: int) -> np.ndarray:
    """Bilinear resize of ``[k, mh, mw]`` masks to each one's size, padded with zeros.

    Separable: two taps and a weight per output row, then per output column, gathered
    for the whole block at once (no BLAS: a loaded two-core machine is where a
    function runs, and threaded matrix products degrade badly there).
    """
    y0, y1, fy = _taps(heights, top_h, masks.shape[1])
    x0, x1, fx = _taps(widths, top_w, masks.shape[2])
    top = np.take_along_axis(masks, y0[:, :, None], axis=1)
    bottom = np.take_along_axis(masks, y1[:, :, None], axis=1)
    rows = top + (bottom - top) * fy[:, :, None]  # [k, top_h, mw]
    left = np.take_along_axis(rows, x0[:, None, :], axis=2)
    right = np.take_along_axis(rows, x1[:, None, :], axis=2)
    out = left + (right - left) * fx[:, None, :]
    out *= (np.arange(top_h)[None, :, None] < heights[:, None, None])
    out *= (np.arange(top_w)[None, None, :] < widths[:, None, None])
    return out


def _taps(sizes: np.ndarray, padded: int, source: int):
    """Source taps and weights for resizing ``source`` samples to each of ``sizes``.

    Output pixel j samples the source at ``(j + 0.5) * source / size - 0.5`` (pixel
    centres, as skimage, OpenCV and TF's half_pixel_centers do), clamped to the edge
    samples. Returns ``(first tap, second tap, weight of the second)``, each ``[k, padded]``.
    """
    j = np.arange(padded, dtype=np.float32)[None, :]
    size = np.maximum(sizes, 1).astype(np.float32)[:, None]
    at = np.clip((j + 0.5) * np.float32(source) / size - 0.5, 0, source - 1)
    first = np.minimum(at.astype(np.int64), source - 1)
    second = np.minimum(first + 1, source - 1)
    return first, second, (at - first).astype(np.float32)

