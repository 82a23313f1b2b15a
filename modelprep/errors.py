"""modelprep's errors, each with the exit code the CLI ends with.

    ModelprepError           exit 1
    ├── SourceError          exit 2  the source model is missing, unreadable or of an unknown kind
    ├── SpecMismatch         exit 3  an option does not fit the model (names the tensor and why)
    └── VerificationFailed   exit 4  the prepared model disagrees with the original beyond tolerance

    PreprocessingHintWarning         the source hints at another normalisation than the
                                     wrap options give (a warning: wrap goes on)
"""

from __future__ import annotations

import re


class ModelprepError(Exception):
    exit_code = 1


class SourceError(ModelprepError):
    exit_code = 2


class SpecMismatch(ModelprepError):
    exit_code = 3


class VerificationFailed(ModelprepError):
    exit_code = 4


class PreprocessingHintWarning(UserWarning):
    """The source model hints at a normalisation the wrap options do not give."""


def first_line(exc: BaseException) -> str:
    """An exception's message in one line: TensorFlow's run to pages, with
    ``{{function_node ...}}`` and ``[Op:...]`` decorations that say nothing to a user."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()
    return text[:300] or type(exc).__name__
