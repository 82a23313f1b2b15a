"""What `modelprep verify` compares a prepared model with, besides its own declared steps.

Feeding the original model the pixels the wrapped model's *own* metadata says it
computes proves the wrapping right, but not the metadata: a model trained on
``p/127.5 - 1`` and wrapped with the default ``--normalize unit`` passes that
check, since both sides then get ``p/255``. An independent reference catches it:

* `ReferencePreprocess`: the preprocessing the model was trained with, named by the
  user: a Python callable by dotted name (``keras.applications.mobilenet_v2.
  preprocess_input``), called on float32 ``[n, h, w, c]`` pixels in 0..255 (RGB or
  gray, decoded and resized as the graph does), or ``SCALE,OFFSET`` for
  ``p * SCALE + OFFSET``. The original model is fed what it returns.
  `compare_normalization` then sets the wrapped model's normalisation beside it on
  the same pixels and, when they differ, says how and which ``--normalize`` flags
  would match;
* `ReferenceOutputs`: answers the user computed elsewhere (``.npz``, one array per
  output, one row per sample image in the order verify reads them).

Importing a callable by name runs that module's code, like any Python import: name
only modules you trust.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelmeta import Normalization, OutputSpec
from modelprep.errors import ModelprepError, SourceError, SpecMismatch

NORMALIZATION_TOLERANCE = 1e-3
"""Largest difference, in model units scaled by ``max(1, max|reference|)``, between the
declared normalisation and the reference that still counts as the same (float32
arithmetic in another order differs by about 1e-7)."""

_NUMBER = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_PROBES = (0.0, 255.0)


@dataclass(frozen=True)
class ReferencePreprocess:
    """The preprocessing the source model was trained with: a callable or an affine map.

    Text form (``--reference-preprocess``, recipe key ``reference_preprocess``):
    ``package.module.function`` or ``SCALE,OFFSET``.
    """

    function: str | None = None
    """Dotted name of a callable taking float32 pixels ``[n, h, w, c]`` in 0..255."""
    scale: float | None = None
    offset: float = 0.0
    """``p * scale + offset`` when no function is named."""

    def __post_init__(self) -> None:
        if (self.function is None) == (self.scale is None):
            raise ModelprepError("a reference preprocessing is a function's dotted name or "
                                 "SCALE,OFFSET, one of the two")
        if self.function is not None and not _DOTTED.match(self.function):
            raise ModelprepError(f"{self.function!r} is not a dotted name such as "
                                 "keras.applications.mobilenet_v2.preprocess_input")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale != 0
                                           and math.isfinite(self.offset)):
            raise ModelprepError(f"reference scale must be a non-zero number and offset a "
                                 f"number, got {self.scale}, {self.offset}")

    @classmethod
    def parse(cls, text: str) -> ReferencePreprocess:
        """``keras.applications.mobilenet_v2.preprocess_input`` or ``0.0078431,-1``."""
        text = text.strip()
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 2 and all(re.fullmatch(_NUMBER, p) for p in parts):
            return cls(scale=float(parts[0]), offset=float(parts[1]))
        if _DOTTED.match(text):
            return cls(function=text)
        raise ModelprepError(f"reference preprocessing {text!r}: expected a callable's dotted "
                             "name (keras.applications.mobilenet_v2.preprocess_input) or "
                             "SCALE,OFFSET (0.0078431,-1 for p/127.5 - 1)")

    def __str__(self) -> str:
        if self.function is not None:
            return self.function
        return f"p * {self.scale:g} + {self.offset:g}"

    def resolve(self) -> Callable[[np.ndarray], np.ndarray]:
        """The preprocessing as a numpy function (importing the named module)."""
        if self.function is None:
            scale, offset = float(self.scale or 1.0), float(self.offset)
            return lambda pixels: pixels * np.float32(scale) + np.float32(offset)
        fn = _import(self.function)

        def call(pixels: np.ndarray) -> np.ndarray:
            try:  # a copy: Keras' preprocess_input divides numpy arrays in place
                result = fn(np.array(pixels, dtype=np.float32, copy=True))
            except Exception as exc:  # the user's code: any error means "cannot use it"
                raise ModelprepError(f"reference preprocessing {self.function} failed on "
                                     f"pixels {list(pixels.shape)}: {exc}") from exc
            values = np.asarray(result, dtype=np.float32)
            if values.shape != pixels.shape:
                raise SpecMismatch(f"reference preprocessing {self.function} turned pixels "
                                   f"{list(pixels.shape)} into {list(values.shape)}; it must "
                                   "keep the shape")
            return values

        return call


def _import(dotted: str) -> Callable[..., Any]:
    """``a.b.c``: attribute ``c`` of module ``a.b`` (or ``b.c`` of ``a``, and so on)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name):
                raise ModelprepError(f"reference preprocessing {dotted}: importing "
                                     f"{module_name} failed: {exc}") from exc
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            raise ModelprepError(f"reference preprocessing {dotted}: module {module_name} "
                                 f"has no {'.'.join(parts[cut:])}") from None
        if not callable(target):
            raise ModelprepError(f"reference preprocessing {dotted} is not callable")
        return target
    raise ModelprepError(f"reference preprocessing {dotted}: no module {parts[0]!r} to import")


# --- the declared normalisation beside the reference --------------------------------


@dataclass(frozen=True)
class NormalizationCheck:
    """The wrapped model's normalisation against the reference, on the verify samples."""

    declared: Normalization
    reference: str
    max_difference: float
    """Largest difference in model units over every sample pixel."""
    limit: float
    declared_probes: np.ndarray
    reference_probes: np.ndarray
    """Model values of gray pixels 0 and 255, ``[2, channels]``, for the message."""
    suggestion: str
    """The wrap flags that reproduce the reference, or why none do."""

    @property
    def passed(self) -> bool:
        return self.max_difference <= self.limit

    def summary(self) -> str:
        verdict = "ok" if self.passed else "DIFFERS"
        return (f"normalisation: wrapped {describe_normalization(self.declared)}, reference "
                f"{self.reference}: max difference {self.max_difference:.3g} (limit "
                f"{self.limit:.3g})  {verdict}")

    def failure(self) -> str:
        return (f"normalisation differs: the wrapped model maps pixels 0 and 255 to "
                f"{_pair(self.declared_probes)} ({describe_normalization(self.declared)}), "
                f"the reference ({self.reference}) to {_pair(self.reference_probes)}; "
                f"{self.suggestion}")


def describe_normalization(norm: Normalization) -> str:
    """``symmetric: p/127.5 - 1`` and the like, for people."""
    formula = {"unit": "p/255", "symmetric": "p/127.5 - 1", "raw": "p",
               "meanstd": f"(p - {_numbers(norm.mean)}) / {_numbers(norm.std)}"}[norm.mode]
    text = f"{norm.mode}: {formula}"
    return text + ", p = 255 - pixel" if norm.invert else text


def compare_normalization(declared: Normalization, reference: ReferencePreprocess,
                          reference_fn: Callable[[np.ndarray], np.ndarray],
                          pixels: np.ndarray, reference_values: np.ndarray
                          ) -> NormalizationCheck:
    """Both normalisations of the same 0..255 `pixels` ``[n, h, w, c]``; `reference_values`
    is ``reference_fn(pixels)``, already computed for the original model."""
    from functions.pixels import normalize

    declared_values = normalize(pixels.astype(np.float32), declared)
    scale = max(1.0, float(np.abs(reference_values).max()) if reference_values.size else 1.0)
    difference = float(np.abs(declared_values - reference_values).max()) \
        if reference_values.size else 0.0
    channels = pixels.shape[-1]
    probes = np.broadcast_to(np.array(_PROBES, np.float32)[:, None, None],
                             (len(_PROBES), 1, channels))[None].astype(np.float32)
    probes = np.ascontiguousarray(probes)  # [1, 2, 1, c]: gray 0, gray 255
    declared_probes = normalize(probes, declared)[0, :, 0, :]
    reference_probes = reference_fn(probes)[0, :, 0, :]
    limit = NORMALIZATION_TOLERANCE * scale
    return NormalizationCheck(declared=declared, reference=str(reference),
                              max_difference=difference, limit=limit,
                              declared_probes=declared_probes, reference_probes=reference_probes,
                              suggestion=suggest_flags(pixels, reference_values,
                                                       reference_probes, limit))


def suggest_flags(pixels: np.ndarray, values: np.ndarray, probes: np.ndarray,
                  limit: float) -> str:
    """The ``modelprep wrap`` flags whose normalisation matches the reference, found by
    fitting ``value = a * pixel + b`` per channel through gray 0 and 255."""
    a = (probes[1] - probes[0]).astype(np.float64) / 255.0
    b = probes[0].astype(np.float64)
    fitted = pixels.astype(np.float64) * a + b
    if values.size and float(np.abs(fitted - values).max()) > limit:
        return ("the reference is not a per-channel p * a + b (it may reorder channels, as "
                "Keras' caffe-mode preprocess_input does), so no --normalize reproduces it; "
                "convert the model to take RGB pixels first")
    if np.any(a == 0):
        return "the reference maps every pixel to one value; check it"
    invert = bool(np.all(a < 0))
    if np.any(a < 0) and not invert:
        return "the reference inverts some channels only; no --normalize reproduces it"
    if invert:  # value = a * (255 - q) + b = -a * q + (255 a + b), q the inverted pixel
        a, b = -a, 255.0 * a + b
    flags = _named_mode(a, b)
    if flags is None:
        mean = -b / a
        std = 1.0 / a
        flags = (f"--normalize meanstd --mean {_csv(mean)} --std {_csv(std)}")
    if invert:
        flags += " --invert"
    return f"wrap again with {flags}"


def _named_mode(a: np.ndarray, b: np.ndarray) -> str | None:
    for mode, (scale, offset) in (("unit", (1 / 255, 0.0)), ("symmetric", (1 / 127.5, -1.0)),
                                  ("raw", (1.0, 0.0))):
        if np.allclose(a, scale, rtol=1e-4, atol=0) and np.allclose(b, offset, atol=1e-4):
            return f"--normalize {mode}"
    return None


# --- answers computed elsewhere --------------------------------------------------------


SAMPLE_NAMES_KEY = "sample_names"
"""Optional array of the sample images' names (file names), checked against verify's order."""


@dataclass(frozen=True)
class ReferenceOutputs:
    """Arrays from an ``.npz``: output name to ``[samples, ...]``."""

    path: Path
    arrays: Mapping[str, np.ndarray]
    sample_names: tuple[str, ...] | None

    @classmethod
    def load(cls, path: str | Path) -> ReferenceOutputs:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise SourceError(f"reference outputs {path} do not exist") from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"reference outputs {path} are not a numpy .npz file of plain "
                              f"arrays: {exc}") from exc
        names = arrays.pop(SAMPLE_NAMES_KEY, None)
        return cls(path, arrays, None if names is None else tuple(str(n) for n in names))

    def array_for(self, spec: OutputSpec, original_name: str | None) -> tuple[str, np.ndarray]:
        """The array of a prepared output: by its original's name, its own, or its own
        without the ``_bytes`` of a PNG output."""
        candidates = [c for c in (original_name, spec.original, spec.name,
                                  spec.name.removesuffix("_bytes")) if c]
        for key in dict.fromkeys(candidates):
            if key in self.arrays:
                return key, self.arrays[key]
        raise SpecMismatch(f"reference outputs {self.path} have no array for output "
                           f"{spec.name!r} (looked for {', '.join(dict.fromkeys(candidates))}); "
                           f"they have {sorted(self.arrays)}")

    def check_samples(self, names: list[str], total: int) -> None:
        """The arrays must have one row per sample, in the samples' order."""
        for key, array in self.arrays.items():
            if array.ndim == 0 or len(array) != total:
                rows = "a scalar" if array.ndim == 0 else f"{len(array)} rows"
                raise SpecMismatch(f"reference outputs {self.path}: {key!r} has {rows}, but "
                                   f"verify reads {total} samples; give as many images "
                                   "(--images DIR, --count N) as the arrays have rows")
        if self.sample_names is not None and list(self.sample_names) != names[:total]:
            first = next(i for i, (a, b) in enumerate(zip(self.sample_names, names,
                                                          strict=False)) if a != b) \
                if len(self.sample_names) == total else 0
            raise SpecMismatch(f"reference outputs {self.path}: {SAMPLE_NAMES_KEY} does not "
                               f"match the samples (row {first}: "
                               f"{self.sample_names[first] if self.sample_names else None!r} "
                               f"vs {names[first] if names else None!r}); verify reads the "
                               "folder's files sorted by name")


def _pair(probes: np.ndarray) -> str:
    return f"{_numbers(probes[0])} and {_numbers(probes[1])}"


def _numbers(values: Any) -> str:
    if values is None:
        return "?"
    array = np.atleast_1d(np.asarray(values, np.float64))
    if np.allclose(array, array[0], rtol=0, atol=1e-6):
        return f"{array[0]:.4g}"
    return "[" + ", ".join(f"{v:.4g}" for v in array) + "]"


def _csv(values: np.ndarray) -> str:
    array = np.atleast_1d(values)
    if np.allclose(array, array[0], rtol=1e-6):
        array = array[:1]
    return ",".join(f"{v:.6g}" for v in array)
