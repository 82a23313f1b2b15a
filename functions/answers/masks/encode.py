"""Each instance's mask in the format the client asked for: polygon, rle, png or float.

The formats are described in `functions.answers.masks`; all of them threshold the
box-sized probabilities that `unmold` produced at `THRESHOLD`, block by block.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from functions.answers.masks.polygons import simplify_rings, trace
from functions.answers.masks.unmolding import Instances

MASK_FORMATS = ("polygon", "rle", "png", "float")
THRESHOLD = 0.5
"""Mask R-CNN's: a pixel is in the mask when its probability is at least this."""
FLOAT_DIGITS = 3
"""Decimals of the ``float`` format: 0.001 is a quarter of a uint8 quantization step."""
POLYGON_TOLERANCE = 1.0
"""Largest distance, in pixels, between a simplified ring and the pixel edges it
follows; below 1.5 only pixels touching the mask's edge can change."""
PNG_ALPHA = 160
PNG_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))
"""Instance colours of the ``png`` format, in turn, so neighbours differ."""


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


def float_steps(probs: np.ndarray) -> np.ndarray:
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
    points, offsets, owner = trace(probs >= THRESHOLD)
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

