"""Instance masks, from a Mask R-CNN-style model to something a phone can draw.

A Mask R-CNN answers with ``detections [B, N, 6]`` (y1, x1, y2, x2 normalised to the
molded image, class id, score; rows with class 0 pad) and ``masks [B, N, 28, 28,
classes]`` (per-detection probabilities for every class), often quantized to 8 bits to
cross the network. This module turns them into what a client draws:

    dequantize ─▶ each detection's own class mask ─▶ box in original-image pixels
      ─▶ resize the 28x28 mask to the box (bilinear, half-pixel centres, edges
         clamped) ─▶ threshold at 0.5 ─▶ encode: polygon | rle | png | float

Everything works on whole batches of detections with numpy; nothing loops over pixels.
Detections of similar size are resized together in padded blocks (`CHUNK_ELEMENTS`
bounds a block), and masks are kept box-sized: an image-sized array per detection
would cost 100 x 1 MB for a 1024x1024 photo.

Response formats (``mask_format``), each instance's ``mask`` value:

``polygon`` (default)
    ``[[x0, y0, x1, y1, ...], ...]``: rings in image pixel coordinates, where pixel
    (row r, column c) is the square from (c, r) to (c + 1, r + 1). Rings trace the
    pixel edges (4-connected), holes included, simplified with Douglas-Peucker to
    `POLYGON_TOLERANCE` pixel: filled with the even-odd rule, a polygon gives the mask
    except for pixels touching its edge. The smallest format, drawn by a canvas with
    no code beyond ``moveTo``/``lineTo``/``fill('evenodd')``.
``rle``
    ``{"size": [height, width], "counts": [...]}``: COCO's uncompressed run-length
    encoding over the whole image in column-major order (down the first column, then
    the next), starting with a run of zeros (possibly 0); pycocotools reads it as is.
``png``
    Standard base64 of a box-sized PNG: 1 bit per pixel, palette index 1 inside the
    mask (a colour at alpha 160), 0 transparent, to lay over the photo at ``box``.
``float``
    ``[[p, ...], ...]``: the box's probabilities, row by row, before the threshold, to
    3 decimals; rounding never moves a value across 0.5, so ``p >= 0.5`` gives the
    same mask as the other formats.

Boxes are ``[x1, y1, x2, y2]`` in original-image pixels, x2 and y2 exclusive.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from functions import affine
from functions.errors import BadGateway, PayloadTooLarge
from modelmeta import QUANT_DTYPES, Quantization

MASK_FORMATS = ("polygon", "rle", "png", "float")
DEFAULT_MASK_FORMAT = "polygon"
"""The smallest format on the wire that a mini-program draws with its canvas alone
(see the README's measurements)."""
THRESHOLD = 0.5
"""Mask R-CNN's: a pixel is in the mask when its probability is at least this."""
FLOAT_DIGITS = 3
"""Decimals of the ``float`` format: 0.001 is a quarter of a uint8 quantization step."""
POLYGON_TOLERANCE = 1.0
"""Largest distance, in pixels, between a simplified ring and the pixel edges it
follows; below 1.5 only pixels touching the mask's edge can change."""
CHUNK_ELEMENTS = 4_000_000
"""Largest padded block (detections x height x width) resized at once, about 16 MB."""
SCORE_DIGITS = 6
PNG_ALPHA = 160
PNG_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))
"""Instance colours of the ``png`` format, in turn, so neighbours differ."""
_JSON = {"separators": (",", ":"), "ensure_ascii": False}


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
        """A block's probabilities as thousandths (see `_float_steps`), computed once."""
        steps = self._float_steps.get(id(probs))
        if steps is None:
            steps = self._float_steps[id(probs)] = _float_steps(probs)
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


# --- dequantize ---------------------------------------------------------------------------


def dequantize(value: Any, quantization: Quantization | None, *,
               shape: Sequence[int] | None = None, name: str = "masks") -> np.ndarray:
    """Quantized integers from any source back to float32, ``scale * (q - zero_point)``.

    ``value`` may be a numpy array of any integer dtype (the in-process backend, or a
    REST reply parsed to int64), nested lists of integers (TF Serving REST JSON), a
    flat sequence (gRPC ``int_val``) or bytes (gRPC ``tensor_content``); give ``shape``
    for the flat ones. Values outside the quantized dtype's range mean the model server
    sent something else than the metadata says (say, a wrapped cast): `BadGateway`.
    Without a quantization the values are taken as floats already.
    """
    if quantization is None:
        array = np.asarray(value, np.float32)
        return array.reshape(shape) if shape is not None else array
    lo, hi = QUANT_DTYPES[quantization.dtype]
    if isinstance(value, (bytes, bytearray, memoryview)):
        array = np.frombuffer(value, np.dtype(quantization.dtype))
    else:
        array = np.asarray(value)
    if array.dtype.kind == "f" and array.size and not np.array_equal(array, np.rint(array)):
        raise BadGateway(f"output {name!r} should hold {quantization.dtype} integers, "
                         "but has fractions")
    if array.dtype.kind not in "iuf" and array.size:
        raise BadGateway(f"output {name!r} should hold {quantization.dtype} integers, "
                         f"not {array.dtype}")
    if array.size and (array.min() < lo or array.max() > hi):
        raise BadGateway(f"output {name!r} holds {array.min()}..{array.max()}, outside "
                         f"{quantization.dtype}'s {lo}..{hi}: the model server's output "
                         "does not match the model's metadata")
    if shape is not None:
        if int(np.prod(shape)) != array.size:
            raise BadGateway(f"output {name!r} has {array.size} values, not the "
                             f"{int(np.prod(shape))} of shape {list(shape)}")
        array = array.reshape(shape)
    return affine.dequantize(array, quantization)


# --- unmold -------------------------------------------------------------------------------


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


# --- encoders -----------------------------------------------------------------------------


def encode(instances: Instances, fmt: str) -> list[Any]:
    """Each instance's ``mask`` value in format ``fmt``, in instance order."""
    if fmt not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {fmt!r}")
    out: list[Any] = [None] * len(instances)
    for indices, probs in instances.blocks:
        for i, value in zip(indices.tolist(), _ENCODERS[fmt](instances, indices, probs),
                            strict=True):
            out[i] = value
    return out


def _extents(instances: Instances, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = instances.boxes[indices]
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def _float_block(instances: Instances, indices: np.ndarray, probs: np.ndarray):
    hs, ws = _extents(instances, indices)
    q = instances.float_steps(probs)
    for j in range(len(indices)):
        yield (q[j, :hs[j], :ws[j]] / 10.0 ** FLOAT_DIGITS).tolist()


def _float_steps(probs: np.ndarray) -> np.ndarray:
    """Probabilities as integer thousandths, never crossing the threshold by rounding."""
    steps = 10 ** FLOAT_DIGITS
    q = np.rint(np.clip(probs.astype(np.float64), 0, 1) * steps).astype(np.int32)
    edge = int(np.ceil(THRESHOLD * steps))
    return np.where((probs < THRESHOLD) & (q >= edge), edge - 1, q)


def float_json_bytes(instances: Instances) -> np.ndarray:
    """Bytes of each instance's ``float`` mask in the response JSON, without building it.

    JSON writes ``q / 1000`` as Python's shortest repr: ``0.0``, ``1.0`` and ``0.5``
    take 3 characters, ``0.25`` 4, ``0.125`` 5; rows add brackets and commas.
    """
    sizes = np.zeros(len(instances), np.int64)
    for indices, probs in instances.blocks:
        hs, ws = _extents(instances, indices)
        q = instances.float_steps(probs)
        chars = np.where(q % 100 == 0, 3, np.where(q % 10 == 0, 4, 5))
        inside = ((np.arange(probs.shape[1])[None, :, None] < hs[:, None, None])
                  & (np.arange(probs.shape[2])[None, None, :] < ws[:, None, None]))
        numbers = (chars * inside).sum(axis=(1, 2))
        sizes[indices] = numbers + (ws - 1) * hs + 2 * hs + (hs - 1) + 2
    return sizes


def _rle_block(instances: Instances, indices: np.ndarray, probs: np.ndarray):
    """COCO RLE over the whole image, column-major, from box-sized masks, all at once."""
    height, width = instances.height, instances.width
    boxes = instances.boxes[indices]
    columns = np.pad((probs >= THRESHOLD).transpose(0, 2, 1), ((0, 0), (0, 0), (1, 1)))
    inst, col, row = np.nonzero(np.diff(columns.view(np.int8), axis=2))
    position = (boxes[inst, 1] + col) * height + boxes[inst, 0] + row
    # A run reaching the image's bottom goes on at the top of the next column.
    joined = np.flatnonzero((position[1:] == position[:-1]) & (inst[1:] == inst[:-1]))
    drop = np.zeros(len(position), bool)
    drop[joined] = drop[joined + 1] = True
    position, inst = position[~drop], inst[~drop]
    bounds = np.searchsorted(inst, np.arange(len(indices) + 1))
    total = height * width
    for j in range(len(indices)):
        edges = position[bounds[j]:bounds[j + 1]]
        tail = [] if edges.size and edges[-1] == total else [total]  # as pycocotools
        counts = np.diff(np.concatenate(([0], edges, tail)))
        yield {"size": [height, width], "counts": counts.tolist()}


def _png_block(instances: Instances, indices: np.ndarray, probs: np.ndarray):
    hs, ws = _extents(instances, indices)
    inside = probs >= THRESHOLD
    for j, i in enumerate(indices.tolist()):
        colour = PNG_COLOURS[i % len(PNG_COLOURS)]
        png = png_1bit(inside[j, :hs[j], :ws[j]], colour)
        yield base64.b64encode(png).decode("ascii")


def png_1bit(mask: np.ndarray, colour: tuple[int, int, int], alpha: int = PNG_ALPHA) -> bytes:
    """A 1-bit palette PNG of a bool mask: transparent outside, ``colour`` inside."""
    height, width = mask.shape
    rows = np.packbits(mask, axis=1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)),
        chunk(b"PLTE", bytes((0, 0, 0, *colour))),
        chunk(b"tRNS", bytes((0, alpha))),
        chunk(b"IDAT", zlib.compress(raw, 9)),
        chunk(b"IEND", b""),
    ])


def _polygon_block(instances: Instances, indices: np.ndarray, probs: np.ndarray):
    points, offsets, owner = _trace(probs >= THRESHOLD)
    sizes = np.diff(offsets)
    keep = simplify_rings(points, offsets, POLYGON_TOLERANCE)
    corners = instances.boxes[indices][:, [1, 0]]  # box-local (x, y) to image pixels
    placed = (points + np.repeat(corners[owner], sizes, axis=0))[keep]
    kept_offsets = np.r_[0, np.cumsum(np.add.reduceat(keep, offsets[:-1]))] if len(
        sizes) else np.zeros(1, np.int64)
    per_instance: list[list[list[int]]] = [[] for _ in indices]
    flat = placed.ravel().tolist()
    for j, a, b in zip(owner.tolist(), kept_offsets[:-1].tolist(), kept_offsets[1:].tolist(),
                       strict=True):
        per_instance[j].append(flat[2 * a:2 * b])
    yield from per_instance


_ENCODERS = {"float": _float_block, "rle": _rle_block, "png": _png_block,
             "polygon": _polygon_block}


# --- polygons -----------------------------------------------------------------------------

_STEPS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
"""(dy, dx) of the four directions, clockwise on screen: right, down, left, up."""


def trace_rings(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Every boundary ring of a batch of bool masks ``[k, h, w]``, as ``(mask index,
    points)`` pairs ordered by mask; see `_trace`."""
    points, offsets, owner = _trace(masks)
    return [(o, points[a:b]) for o, a, b in zip(owner.tolist(), offsets[:-1].tolist(),
                                                offsets[1:].tolist(), strict=True)]


def _trace(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every boundary ring of a batch of bool masks ``[k, h, w]``, vectorised.

    Returns ``(points, offsets, owner)``: int64 ``[T, 2]`` (x, y) pixel corners of all
    rings one after another, with collinear points dropped; ring r is
    ``points[offsets[r]:offsets[r + 1]]`` and belongs to mask ``owner[r]``; rings are
    ordered by mask. Each pixel edge between inside and outside becomes a directed edge
    with the inside on its right; at a corner where two diagonal pixels meet, the ring
    turns right, so diagonal neighbours belong to separate rings (4-connectivity).
    Rings are found as cycles of the successor permutation by pointer jumping, so the
    cost is O(E log E) array work for E edges, with no loop per edge.
    """
    k, h, w = masks.shape
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    vw = w + 3  # vertices per row of the padded grid
    per_mask = (h + 3) * vw

    n, r, c = np.nonzero(padded[:, 1:, :] != padded[:, :-1, :])  # horizontal edges
    below = padded[n, r + 1, c]
    y = r + 1
    h_start = np.where(below, y * vw + c, y * vw + c + 1)
    h_dir = np.where(below, 0, 2)
    h_n = n
    n, r, c = np.nonzero(padded[:, :, 1:] != padded[:, :, :-1])  # vertical edges
    right = padded[n, r, c + 1]
    x = c + 1
    v_start = np.where(right, (r + 1) * vw + x, r * vw + x)
    v_dir = np.where(right, 3, 1)
    owner = np.concatenate([h_n, n])
    start = np.concatenate([h_start, v_start]) + owner * per_mask
    direction = np.concatenate([h_dir, v_dir])
    count = len(start)
    if count == 0:
        return np.zeros((0, 2), np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64)
    step = _STEPS[direction]
    end = start + step[:, 0] * vw + step[:, 1]

    by_start = np.argsort(start, kind="stable")
    sorted_start = start[by_start]
    first = np.searchsorted(sorted_start, end, "left")
    choices = np.searchsorted(sorted_start, end, "right") - first
    successor = by_start[first]
    saddle = np.flatnonzero(choices == 2)
    if saddle.size:
        other = by_start[first[saddle] + 1]
        right_turn = (direction[saddle] + 1) % 4
        successor[saddle] = np.where(direction[successor[saddle]] == right_turn,
                                     successor[saddle], other)

    ring = np.arange(count)
    jump = successor.copy()
    for _ in range(int(np.ceil(np.log2(count))) + 1):
        ring = np.minimum(ring, ring[jump])
        jump = jump[jump]
    last = successor == ring  # the edge before its ring's first (smallest) edge
    jump = np.where(last, np.arange(count), successor)
    to_last = (~last).astype(np.int64)
    for _ in range(int(np.ceil(np.log2(count))) + 1):
        to_last = to_last + to_last[jump]
        jump = jump[jump]
    length = np.bincount(ring, minlength=count)[ring]
    order = np.lexsort((length - 1 - to_last, ring, owner))

    ring, direction, start = ring[order], direction[order], start[order]
    first_of_ring = np.r_[True, ring[1:] != ring[:-1]]
    starts = np.flatnonzero(first_of_ring)
    previous = np.arange(count) - 1
    ends = np.r_[starts[1:], count] - 1
    previous[starts] = ends
    corner = direction != direction[previous]
    local = start % per_mask
    points = np.stack([local % vw - 1, local // vw - 1], axis=1)
    ring_of = np.cumsum(first_of_ring) - 1
    mask_of = owner[order][starts]
    keep = np.flatnonzero(corner)
    offsets = np.r_[np.searchsorted(ring_of[keep], np.arange(len(starts))), len(keep)]
    return points[keep], offsets, mask_of


def simplify_ring(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on one closed ring (see `simplify_rings`)."""
    return points[simplify_rings(points, np.array([0, len(points)]), tolerance)]


def simplify_rings(points: np.ndarray, offsets: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on many closed rings at once: which points to keep, as a bool mask.

    Each ring starts from its first point and the point farthest from it; then, level
    by level for all rings together, every stretch between kept points whose farthest
    point lies more than ``tolerance`` from the chord keeps that point. That is exactly
    the recursive algorithm's result (each stretch is decided by its own points), in a
    few array passes instead of a Python call per stretch. Every dropped point lies
    within ``tolerance`` of the kept outline, so the outline stays within ``tolerance``
    of the original everywhere. Rings of four points or fewer, and rings that would
    collapse below three points, are kept whole.
    """
    total = len(points)
    keep = np.zeros(total, bool)
    starts, ends = offsets[:-1], offsets[1:]
    sizes = ends - starts
    if total == 0 or tolerance <= 0:
        keep[:] = True
        return keep
    ring = np.repeat(np.arange(len(sizes)), sizes)
    keep[np.repeat(sizes <= 4, sizes)] = True
    xy = points.astype(np.float64)
    keep[starts] = True
    spread = np.hypot(*(xy - xy[starts][ring]).T)
    by_spread = np.lexsort((-spread, ring))
    keep[by_spread[starts]] = True  # sorted by ring first, so each ring's block starts there
    first, last = starts[ring], ends[ring]
    index = np.arange(total)
    for _ in range(int(sizes.max())):
        kept = np.flatnonzero(keep)
        after = np.searchsorted(kept, index, "right")
        before = kept[after - 1]
        following = kept[np.minimum(after, len(kept) - 1)]
        following = np.where((after >= len(kept)) | (following >= last), first, following)
        candidates = np.flatnonzero(~keep)
        if candidates.size == 0:
            break
        distance = _segment_distance(xy[candidates], xy[before[candidates]],
                                     xy[following[candidates]])
        stretch = before[candidates]
        runs = np.flatnonzero(np.r_[True, stretch[1:] != stretch[:-1]])
        largest = np.maximum.reduceat(distance, runs)
        run_of = np.repeat(np.arange(len(runs)), np.diff(np.r_[runs, len(candidates)]))
        hits = np.flatnonzero(distance == largest[run_of])
        first_hits = hits[np.r_[True, run_of[hits][1:] != run_of[hits][:-1]]]
        split = candidates[first_hits[largest[run_of[first_hits]] > tolerance]]
        if split.size == 0:
            break
        keep[split] = True
    collapsed = np.add.reduceat(keep, starts) < 3
    keep[np.repeat(collapsed, sizes)] = True
    return keep


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point to its own segment ``a``-``b`` (rows pair up)."""
    ab = b - a
    length = np.einsum("ij,ij->i", ab, ab)
    along = np.einsum("ij,ij->i", points - a, ab) / np.where(length > 0, length, 1)
    t = np.where(length > 0, np.clip(along, 0, 1), 0)
    return np.hypot(*(points - (a + t[:, None] * ab)).T)


# --- decoding (what a client does; used by tests and the bench) ---------------------------


def decode_mask(value: Any, fmt: str, box: Sequence[int], height: int,
                width: int) -> np.ndarray:
    """An instance's ``mask`` value in any format back to an image-sized bool array."""
    x1, y1, x2, y2 = box
    full = np.zeros((height, width), bool)
    if fmt == "float":
        full[y1:y2, x1:x2] = np.asarray(value, np.float64) >= THRESHOLD
    elif fmt == "png":
        import io

        from PIL import Image

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


# --- the response -------------------------------------------------------------------------


def instance_predictions(detections: np.ndarray, masks: np.ndarray,
                         geometries: Sequence[Geometry], labels: Sequence[str] | None,
                         fmt: str, max_bytes: int | None = None,
                         overhead: int = 0) -> list[dict[str, Any]]:
    """One entry per image: its size, the format and its instances with encoded masks.

    ``max_bytes`` is the limit of the whole response, of which ``overhead`` bytes are
    taken outside the predictions list. The size of the answer is worked out before
    anything large is built; over the limit, `PayloadTooLarge` says by how much and
    which formats would fit.
    """
    if len(detections) != len(geometries):
        raise BadGateway(f"the model answered for {len(detections)} images, "
                         f"not {len(geometries)}")
    all_instances = [unmold(d, m, g) for d, m, g in zip(detections, masks, geometries,
                                                        strict=True)]
    cache: dict[str, list[list[Any]]] = {}

    def encoded(f: str) -> list[list[Any]]:
        if f not in cache:
            cache[f] = [encode(inst, f) for inst in all_instances]
        return cache[f]

    def size(f: str) -> int:
        skeleton = len(json.dumps(_entries(all_instances, labels, f, None), **_JSON))
        if f == "float":
            masks_bytes = sum(int(float_json_bytes(inst).sum()) for inst in all_instances)
        else:
            masks_bytes = sum(len(json.dumps(v, **_JSON)) for per in encoded(f) for v in per)
        nulls = 4 * sum(len(inst) for inst in all_instances)
        return overhead + skeleton - nulls + masks_bytes

    if max_bytes is not None:
        total = size(fmt)
        if total > max_bytes:
            others = sorted((size(f), f) for f in MASK_FORMATS if f != fmt)
            fitting = {f: n for n, f in others if n <= max_bytes}
            listed = ", ".join(f"{f} ({n:,} bytes)" for f, n in fitting.items())
            advice = (f"ask for mask_format {listed}" if fitting else
                      "no mask format fits; send fewer images per request")
            raise PayloadTooLarge(
                f"the response would be {total:,} bytes with mask_format {fmt!r}, over the "
                f"limit of {max_bytes:,} bytes (MAX_RESPONSE_BYTES); {advice}",
                details={"response_bytes": total, "limit_bytes": max_bytes,
                         "mask_format": fmt, "formats_that_fit": fitting})
    return _entries(all_instances, labels, fmt, encoded(fmt))


def _entries(all_instances: Sequence[Instances], labels: Sequence[str] | None, fmt: str,
             masks: list[list[Any]] | None) -> list[dict[str, Any]]:
    entries = []
    for i, inst in enumerate(all_instances):
        boxes = inst.boxes[:, [1, 0, 3, 2]].tolist()
        scores = np.round(inst.scores.astype(np.float64), SCORE_DIGITS).tolist()
        items = []
        for j, (class_id, score, box) in enumerate(zip(inst.class_ids.tolist(), scores, boxes,
                                                       strict=True)):
            label = labels[class_id] if labels and class_id < len(labels) else str(class_id)
            items.append({"class_id": class_id, "label": label, "score": score, "box": box,
                          "mask": None if masks is None else masks[i][j]})
        entries.append({"width": inst.width, "height": inst.height, "mask_format": fmt,
                        "instances": items})
    return entries
