"""Classifier outputs to a class, a label, a score and the top k, for a batch at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelmeta import OutputSpec

CLASSIFIER_ROLES = ("probabilities", "logits")
SCORE_DIGITS = 6
"""Scores are rounded: six digits tell 0.98 from 0.99 and keep the JSON short."""


def classify(value: np.ndarray, spec: OutputSpec, labels: tuple[str, ...] | None,
             top_k: int) -> list[dict[str, Any]]:
    probs = value.astype(np.float32).reshape(value.shape[0], -1)
    if spec.role == "logits":
        shifted = probs - probs.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probs = exp / exp.sum(axis=1, keepdims=True)
    k = min(top_k, probs.shape[1])
    # Stable sort: equal scores keep class order, so answers are reproducible.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(probs, order, axis=1)
    result = []
    for ids, row in zip(order.tolist(), scores.tolist(), strict=True):
        ranked = [{"class_id": i, "label": label(labels, i), "score": round(s, SCORE_DIGITS)}
                  for i, s in zip(ids, row, strict=True)]
        result.append({**ranked[0], "top_k": ranked})
    return result


def label(labels: Sequence[str] | None, index: int) -> str:
    """The class's name from the model's labels, or its number when it has none."""
    if labels and 0 <= index < len(labels):
        return labels[index]
    return str(index)
