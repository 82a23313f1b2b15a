"""The demo model the function serves out of the box, built once and cached.

``build/models/digits/original`` is the MNIST-shaped classifier trained by
`modelprep.digits`; ``build/models/digits/served`` is its wrapped form, which
takes encoded images. `modelprep.buildcache` keeps them until the recipe changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelmeta import Normalization
from modelprep.buildcache import cached_build

RECIPE_VERSION = 3
"""Bump when the data, training or wrapping of the demo changes."""

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "build" / "models" / "digits"
LABELS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DemoModel:
    original: Path
    served: Path
    accuracy: float
    seconds: float
    cached: bool


def build_demo(base: Path | None = None, *, force: bool = False,
               progress: Callable[[str], None] = lambda _msg: None) -> DemoModel:
    base = Path(base or DEFAULT_DIR)
    stamp, cached = cached_build(base, RECIPE_VERSION, lambda original, served: _build(
        original, served, progress), force=force)
    return DemoModel(base / "original", base / "served", stamp["accuracy"], stamp["seconds"],
                     cached)


def _build(original: Path, served: Path, progress) -> dict:
    from modelprep.digits import train_digits_model
    from modelprep.wrap import WrapOptions, wrap

    progress("training the digits model on scikit-learn's bundled digits")
    report = train_digits_model(original)
    progress(f"held-out accuracy {report['accuracy']:.4f}; wrapping it")
    wrap(original, served, WrapOptions(
        name="digits", labels=LABELS, normalization=Normalization("unit"), resize="pad",
        output_roles={"scores": "probabilities"}, overwrite=True), progress=progress)
    return {"accuracy": report["accuracy"]}
