"""Model outputs to the JSON a phone can use, one entry per image.

Which outputs mean what comes from the model's metadata: classifier outputs
(probabilities or logits) become a class, a label, a score and the top k
(`classify`); detections with masks become instances (`masks`); outputs with no
special form are returned as plain lists, bytes as base64. Everything is
vectorised over the batch.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.answers import masks
from functions.answers.classify import CLASSIFIER_ROLES, SCORE_DIGITS, classify
from functions.answers.masks import DEFAULT_MASK_FORMAT, Geometry
from functions.quantization import dequantize, dequantize_reply
from modelmeta import ModelMetadata, OutputSpec


@dataclass(frozen=True)
class Options:
    top_k: int
    mask_format: str = DEFAULT_MASK_FORMAT
    """How instance masks are encoded (`functions.answers.masks.MASK_FORMATS`)."""
    max_response_bytes: int | None = None
    """The whole response's limit; mask answers are sized against it before being built."""
    response_overhead: int = 0
    """Bytes of the response outside the predictions list."""


def predictions(metadata: ModelMetadata, outputs: dict[str, np.ndarray], count: int,
                options: Options, geometries: Sequence[Geometry] | None = None
                ) -> list[dict[str, Any]]:
    """One dict per image, in request order.

    A model with ``detections`` and ``masks`` outputs is answered by `functions.answers.masks`
    (instances with boxes in the image's pixels, so it needs each image's `Geometry`).
    """
    segmentation = _segmentation_outputs(metadata)
    if segmentation is not None:
        if geometries is None:
            raise ValueError("instance masks need each image's geometry")
        det, mask = segmentation
        return masks.instance_predictions(
            dequantize(outputs[det.name], det.quantization),
            dequantize_reply(outputs[mask.name], mask.quantization, name=mask.name),
            geometries, metadata.labels, options.mask_format, options.max_response_bytes,
            options.response_overhead)
    entries: list[dict[str, Any]] = [{} for _ in range(count)]
    classifiers = [o for o in metadata.outputs if o.role in CLASSIFIER_ROLES]
    for spec in metadata.outputs:
        value = dequantize(outputs[spec.name], spec.quantization)
        if spec in classifiers and spec is classifiers[0]:
            for entry, item in zip(entries, classify(value, spec, metadata.labels,
                                                     options.top_k), strict=True):
                entry.update(item)
        else:
            for entry, row in zip(entries, value, strict=True):
                entry.setdefault("outputs", {})[spec.name] = _plain(row)
    return entries


def _segmentation_outputs(metadata: ModelMetadata) -> tuple[OutputSpec, OutputSpec] | None:
    """The ``detections`` and ``masks`` outputs of an instance-segmentation model."""
    det = [o for o in metadata.outputs if o.role == "detections"]
    mask = [o for o in metadata.outputs if o.role == "masks"]
    return (det[0], mask[0]) if det and mask else None


def _plain(value: Any) -> Any:
    """numpy to JSON-ready values; bytes (such as PNG outputs) as standard base64."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return np.round(value.astype(np.float64), SCORE_DIGITS).tolist()
        if value.dtype.kind not in "SO":
            return value.tolist()
        value = value.tolist()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
