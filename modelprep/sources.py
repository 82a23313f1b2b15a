"""Loading a source model as one callable signature with named tensor specs.

Whatever the source format, wrapping needs the same three things: a function
to call, the specs of its inputs and outputs, and the object that owns its
variables (so that saving the wrapper saves them too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelprep.errors import SourceError


@dataclass
class Source:
    fn: Any
    """A concrete function taking the inputs as keyword arguments, returning a dict."""
    inputs: dict[str, Any]
    """Input name to `tf.TensorSpec`."""
    outputs: dict[str, Any]
    """Output name to `tf.TensorSpec`."""
    owner: Any
    """The loaded object that tracks the variables; the wrapper keeps a reference."""
    format: str
    path: str
    signature: str
    other_signatures: dict[str, Any]


def load_source(path: str | Path, signature: str = "serving_default") -> Source:
    import tensorflow as tf

    path = Path(path)
    if not path.exists():
        raise SourceError(f"source model {path} does not exist")
    if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
        raise SourceError(f"{path} is not a SavedModel directory (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many kinds; all mean "cannot load"
        raise SourceError(f"cannot load SavedModel {path}: {_first_line(exc)}") from exc
    signatures = dict(loaded.signatures)
    if signature not in signatures:
        raise SourceError(f"SavedModel {path} has no signature {signature!r}; "
                          f"it has {sorted(signatures) or 'none'}")
    fn = signatures.pop(signature)
    _, kwargs = fn.structured_input_signature
    return Source(
        fn=fn,
        inputs=dict(kwargs),
        outputs=dict(fn.structured_outputs),
        owner=loaded,
        format="saved_model",
        path=str(path),
        signature=signature,
        other_signatures=signatures,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
