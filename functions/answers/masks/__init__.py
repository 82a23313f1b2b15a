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

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from functions.answers.classify import SCORE_DIGITS, label
from functions.answers.masks.encode import (
    MASK_FORMATS,
    POLYGON_TOLERANCE,
    THRESHOLD,
    encode,
    float_json_bytes,
)
from functions.answers.masks.polygons import simplify_ring, simplify_rings, trace_rings
from functions.answers.masks.unmolding import CHUNK_ELEMENTS, Geometry, Instances, unmold
from functions.errors import BadGateway, PayloadTooLarge

__all__ = ["CHUNK_ELEMENTS", "DEFAULT_MASK_FORMAT", "MASK_FORMATS", "POLYGON_TOLERANCE",
           "THRESHOLD", "Geometry", "Instances", "encode", "float_json_bytes",
           "instance_predictions", "simplify_ring", "simplify_rings", "trace_rings", "unmold"]

DEFAULT_MASK_FORMAT = "polygon"
"""The smallest format on the wire that a mini-program draws with its canvas alone
(see the README's measurements)."""
_JSON: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}


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
            items.append({"class_id": class_id, "label": label(labels, class_id),
                          "score": score, "box": box,
                          "mask": None if masks is None else masks[i][j]})
        entries.append({"width": inst.width, "height": inst.height, "mask_format": fmt,
                        "instances": items})
    return entries
