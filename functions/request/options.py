"""The predict options a client may set: one strict parser for every source.

Options arrive as JSON values, multipart or form fields, or query-string text; they all
go through the readers here, which accept exactly the forms a client can mean and answer
anything else with `InvalidOption` naming the field:

* a whole number is a JSON integer (not a boolean, not ``2.0``) or text of ASCII digits,
  optionally surrounded by ASCII spaces, tabs or line breaks (form fields often end in a
  newline). Unicode digits (``"٣"``, ``"²"``), signs, underscores and more digits than
  the range needs are refused before `int()` ever sees them;
* a choice is text matched without regard to case, after the same trimming.

Every number is range-checked; the message gives the range and a clipped, printable copy
of the value that was sent.
"""

from __future__ import annotations

import re
from typing import Any

from functions.answers.classify import CLASSIFIER_ROLES
from functions.answers.masks import DEFAULT_MASK_FORMAT, MASK_FORMATS
from functions.errors import InvalidOption, clip
from modelmeta import ModelMetadata

MAX_TOP_K = 1000
"""The largest ``top_k`` a request may ask for; it is then capped at the model's classes."""

_ASCII_SPACE = " \t\r\n"
_DIGITS = re.compile(r"[0-9]{1,18}")


def whole_number(raw: dict[str, Any], name: str, default: int, *, minimum: int,
                 maximum: int, what: str = "a whole number") -> int:
    """The option ``name`` as an int within ``minimum..maximum``, or ``default`` if absent."""
    if name not in raw:
        return default
    value = raw[name]
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip(_ASCII_SPACE)
        if _DIGITS.fullmatch(text):
            number = int(text)
    if number is None or not minimum <= number <= maximum:
        raise InvalidOption(f"{name} must be {what} from {minimum} to {maximum:,}, "
                            f"got {describe(value)}")
    return number


def choice(raw: dict[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    """The option ``name`` as one of ``choices`` (case-insensitive), or None if absent."""
    if name not in raw or raw[name] is None:
        return None
    value = raw[name]
    text = value.strip(_ASCII_SPACE).lower() if isinstance(value, str) else None
    if text not in choices:
        raise InvalidOption(f"{name} must be one of {', '.join(choices)}, got {describe(value)}")
    return text


def top_k(raw: dict[str, Any], metadata: ModelMetadata, default: int) -> int:
    """How many ranked classes to return: 1 to `MAX_TOP_K`, capped at the model's classes."""
    value = whole_number(raw, "top_k", default, minimum=1, maximum=MAX_TOP_K,
                         what="a positive whole number")
    classes = max((o.shape[-1] for o in metadata.outputs if o.role in CLASSIFIER_ROLES),
                  default=0)
    return min(value, classes) if classes > 0 else value


def mask_format(raw: dict[str, Any], metadata: ModelMetadata) -> str:
    """The ``mask_format`` option: one of `MASK_FORMATS`, for models that return masks."""
    if raw.get("mask_format") is None:
        return DEFAULT_MASK_FORMAT
    if not any(o.role == "masks" for o in metadata.outputs):
        raise InvalidOption("mask_format applies to models that return masks; this one "
                            "does not")
    fmt = choice(raw, "mask_format", MASK_FORMATS)
    assert fmt is not None
    return fmt


def describe(value: Any) -> str:
    """A client's value, safe to echo: its JSON kind, or a clipped printable copy of text.

    Never calls ``repr`` on a number: a JSON integer of thousands of digits has a repr
    that Python refuses to build.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "an integer of more digits than allowed" if abs(value) >= 10**18 else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return f"'{clip(value)}'"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
