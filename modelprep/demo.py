"""The demo model the function serves out of the box, built once and cached.

``build/models/digits/original`` is the MNIST-shaped classifier trained by
`modelprep.digits`; ``build/models/digits/served`` is its wrapped form, which
takes encoded images. A stamp file records which recipe built them, so a
change to the recipe rebuilds and anything else is a cache hit. A file lock
keeps two commands (say, the server and the tests) from building at once.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelmeta import Normalization

RECIPE_VERSION = 2
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
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _read_stamp(base)
        original, served = base / "original", base / "served"
        if (not force and stamp and stamp.get("recipe") == RECIPE_VERSION
                and original.is_dir() and served.is_dir()):
            return DemoModel(original, served, stamp["accuracy"], stamp["seconds"], cached=True)
        return _build(base, original, served, progress)


def _build(base: Path, original: Path, served: Path, progress) -> DemoModel:
    from modelprep.digits import train_digits_model
    from modelprep.wrap import WrapOptions, wrap

    start = time.monotonic()
    (base / "stamp.json").unlink(missing_ok=True)
    shutil.rmtree(original, ignore_errors=True)
    progress("training the digits model on scikit-learn's bundled digits")
    report = train_digits_model(original)
    progress(f"held-out accuracy {report['accuracy']:.4f}; wrapping it")
    wrap(original, served, WrapOptions(
        name="digits", labels=LABELS, normalization=Normalization("unit"), resize="pad",
        output_roles={"scores": "probabilities"}, overwrite=True), progress=progress)
    seconds = time.monotonic() - start
    stamp = {"recipe": RECIPE_VERSION, "accuracy": report["accuracy"], "seconds": seconds}
    (base / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return DemoModel(original, served, report["accuracy"], seconds, cached=False)


def _read_stamp(base: Path) -> dict | None:
    try:
        return json.loads((base / "stamp.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
