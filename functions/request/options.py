"""The predict options a client may set, checked against the served model.

Options arrive as JSON values, form fields or query-string text; each parser accepts
the forms a client can send and answers anything else with `InvalidOption` naming the
field.
"""

from __future__ import annotations

from typing import Any

from functions.answers.classify import CLASSIFIER_ROLES
from functions.answers.masks import DEFAULT_MASK_FORMAT, MASK_FORMATS
from functions.errors import InvalidOption
from modelmeta import ModelMetadata


def top_k(raw: dict[str, Any], metadata: ModelMetadata, default: int) -> int:
    """How many ranked classes to return: a positive whole number, at most the classes."""
    value = raw.get("top_k", default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOption(f"top_k must be a positive whole number, got {value!r:.40}")
    classes = max((o.shape[-1] for o in metadata.outputs if o.role in CLASSIFIER_ROLES),
                  default=0)
    return min(value, classes) if classes > 0 else value


def mask_format(raw: dict[str, Any], metadata: ModelMetadata) -> str:
    """The ``mask_format`` option: one of `MASK_FORMATS`, for models that return masks."""
    value = raw.get("mask_format")
    if value is None:
        return DEFAULT_MASK_FORMAT
    if not any(o.role == "masks" for o in metadata.outputs):
        raise InvalidOption("mask_format applies to models that return masks; this one "
                            "does not")
    fmt = value.strip().lower() if isinstance(value, str) else value
    if fmt not in MASK_FORMATS:
        raise InvalidOption(f"mask_format must be one of {', '.join(MASK_FORMATS)}, "
                            f"got {value!r:.40}")
    return fmt
