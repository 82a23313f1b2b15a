"""Demo models are built once per checkout and then reused.

A build lives in ``BASE/original`` and ``BASE/served`` with ``BASE/stamp.json``
recording which recipe made it; a different recipe number rebuilds, anything else
is a cache hit. A file lock keeps two commands (say, the server and the tests) from
building the same model at once; the stamp is written last, so a build cut short is
never taken for a finished one.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cached_build(base: Path, recipe: int, build: Callable[[Path, Path], dict[str, Any]], *,
                 force: bool = False) -> tuple[dict[str, Any], bool]:
    """Run ``build(original, served)`` unless ``base`` holds a build of ``recipe``.

    Returns the stamp (the recipe, what ``build`` returned, and ``seconds``) and whether
    it came from the cache.
    """
    base.mkdir(parents=True, exist_ok=True)
    original, served = base / "original", base / "served"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _read_stamp(base)
        if (not force and stamp and stamp.get("recipe") == recipe
                and (original / "saved_model.pb").is_file()
                and (served / "saved_model.pb").is_file()):
            return stamp, True
        (base / "stamp.json").unlink(missing_ok=True)
        for path in (original, served):
            shutil.rmtree(path, ignore_errors=True)
        start = time.monotonic()
        facts = build(original, served)
        stamp = {"recipe": recipe, **facts, "seconds": round(time.monotonic() - start, 1)}
        (base / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        return stamp, False


def _read_stamp(base: Path) -> dict[str, Any] | None:
    try:
        return json.loads((base / "stamp.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
