"""The contract between a prepared model and the function that serves it.

`modelprep` writes this metadata next to every SavedModel it prepares, and
`functions` reads it to know how to feed the model and how to read its answers.
It is the contract between the two sides, so it lives here, at the root, with no
dependency on TensorFlow, HTTP or numpy, and both import it.

The dependency runs one way beyond it: `functions` knows nothing of `modelprep`,
but `modelprep` does use the function's runtime code where it checks what the
function will do: its numpy pixels and quantization (`functions.pixels`,
`functions.quantization`) to build verify's samples and LiteRT's calibration
images, and its LiteRT backend to run the flavours it verifies. Verifying with
the very code that serves is the point: a copy could agree with the graph while
the function does not.

The file is JSON at ``<saved model>/assets.extra/model_metadata.json``
(``assets.extra`` is where TF Serving keeps files it copies but never loads).
Its ``schema_version`` changes only when a reader of the old version would
misread the new one; readers refuse versions newer than they know.

Value conventions, relied on by both sides:

* Quantization is affine: ``real = scale * (quantized - zero_point)``.  Values
  outside the representable range are clipped, never wrapped.
* Normalization maps a pixel ``p`` in 0..255 to a model value:
  ``unit`` p/255, ``symmetric`` p/127.5 - 1, ``raw`` p, ``meanstd``
  (p - mean[c]) / std[c] with mean and std in pixel units (0..255); ``invert``
  first replaces p by 255 - p (black ink on white paper for a white-on-black model).
* Shapes use -1 for a dimension of unknown size (the batch, usually).
* A ``quantized_pixels`` input takes integers ``q`` of shape ``[batch, height,
  width, channels]`` whatever the original input's layout; the graph computes
  ``scale * (q - zero_point)``, which is the model's input value itself.  Its
  ``image.normalization`` says how that value relates to a 0..255 pixel, so a
  client sends ``q = clip(round(normalize(p) / scale) + zero_point)``.
* A PNG output (``encoding: "png"``) holds one PNG per batch item, 8-bit samples;
  when it has a quantization, ``real = scale * (sample - zero_point)`` gives the
  model's values back.
* ``original`` on an input or output names the source model's tensor it feeds
  or comes from (``image_bytes`` feeds ``images``; ``mask_bytes`` comes from
  ``mask``).  Absent means the same name.
* A ``pixels`` input is the source model's own input, in its own shape and
  ``image.layout``: the caller decodes, resizes and normalises (as the wrapped
  graph would) and reshapes.  With a quantization the caller then feeds
  ``q = clip(round(value / scale) + zero_point)``.  LiteRT flavours use it
  (``<prepared model>/litert/model_<flavour>.json``, see `modelprep.litert`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
METADATA_PATH = "assets.extra/model_metadata.json"

LITERT_DIR = "litert"
"""Where a prepared model's LiteRT flavours live, inside its directory (TF Serving
ignores it): ``litert/model_<flavour>.tflite``, each with its own metadata beside it
as ``litert/model_<flavour>.json`` (see `litert_files`)."""
LITERT_FLAVOURS = ("float", "int8")
"""``float``: the model as it is; ``int8``: full-integer, int8 in and out."""


def litert_files(flavour: str) -> tuple[str, str]:
    """The file names of a LiteRT flavour and its metadata, inside `LITERT_DIR`."""
    if flavour not in LITERT_FLAVOURS:
        raise MetadataError(f"LiteRT flavour must be one of {LITERT_FLAVOURS}, got {flavour!r}")
    return f"model_{flavour}.tflite", f"model_{flavour}.json"

INPUT_KINDS = ("image_bytes", "image_base64", "quantized_pixels", "tensor", "pixels")
"""How an input is fed: encoded image bytes (decoded in the graph), base64 text of
an image (decoded in the graph), quantized pixels, a tensor passed through, or
``pixels`` the caller decoded, resized and normalised itself (see the docstring)."""

IMAGE_INPUT_KINDS = ("image_bytes", "image_base64", "quantized_pixels", "pixels")
"""The kinds of input fed from the client's images."""

OUTPUT_ROLES = ("probabilities", "logits", "boxes", "scores", "classes", "detections",
                "masks", "image", "tensor")
"""What an output means, so the function knows how to post-process it."""

NORMALIZATIONS = ("unit", "symmetric", "meanstd", "raw")
RESIZE_MODES = ("stretch", "pad", "crop")
LAYOUTS = ("nhwc", "flat")
QUANT_DTYPES = {"uint8": (0, 255), "int8": (-128, 127)}


class MetadataError(ValueError):
    """The metadata file is missing, malformed, or from a newer schema."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    dtype: str
    scale: float
    zero_point: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in QUANT_DTYPES:
            raise MetadataError(f"quantization dtype must be one of {sorted(QUANT_DTYPES)}, "
                                f"got {self.dtype!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale)
                and self.scale > 0):
            raise MetadataError(f"quantization scale must be a positive number, got {self.scale!r}")
        lo, hi = QUANT_DTYPES[self.dtype]
        if not (isinstance(self.zero_point, int) and lo <= self.zero_point <= hi):
            raise MetadataError(f"quantization zero_point must be an integer in {lo}..{hi} "
                                f"for {self.dtype}, got {self.zero_point!r}")

    @property
    def real_range(self) -> tuple[float, float]:
        """The smallest and largest real values this quantization represents."""
        lo, hi = QUANT_DTYPES[self.dtype]
        return self.scale * (lo - self.zero_point), self.scale * (hi - self.zero_point)

    @classmethod
    def for_range(cls, dtype: str, low: float, high: float) -> Quantization:
        """The quantization that spreads ``[low, high]`` over the whole integer range.

        The range is first widened to include 0, as TFLite does, so that the zero point
        is a representable integer and 0.0 is exact; a range such as [0.5, 1.0] then
        costs some resolution but is never clipped.
        """
        if not high > low:
            raise MetadataError(f"quantization range must have high > low, got [{low}, {high}]")
        low, high = min(low, 0.0), max(high, 0.0)
        qlo, qhi = QUANT_DTYPES[dtype]
        scale = (high - low) / (qhi - qlo)
        zero_point = int(round(qlo - low / scale))
        return cls(dtype=dtype, scale=scale, zero_point=max(qlo, min(qhi, zero_point)))


@dataclass(frozen=True)
class Normalization:
    """How 0..255 pixels become model values (see the module docstring)."""

    mode: str = "unit"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    invert: bool = False

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATIONS:
            raise MetadataError(f"normalization must be one of {NORMALIZATIONS}, got {self.mode!r}")
        if self.mode == "meanstd":
            if not self.mean or not self.std or len(self.mean) != len(self.std):
                raise MetadataError("normalization 'meanstd' needs mean and std of equal length")
            if any(s <= 0 for s in self.std):
                raise MetadataError("normalization std values must be positive")
        elif self.mean is not None or self.std is not None:
            raise MetadataError(f"mean and std apply only to 'meanstd', not {self.mode!r}")


@dataclass(frozen=True)
class ImageSpec:
    """The pixels a model input wants: size, channels and how to get there."""

    height: int
    width: int
    channels: int
    normalization: Normalization = field(default_factory=Normalization)
    resize: str = "stretch"
    layout: str = "nhwc"

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise MetadataError(f"image {name} must be a positive integer, got {value!r}")
        if self.channels not in (1, 3):
            raise MetadataError(f"image channels must be 1 or 3, got {self.channels!r}")
        if self.resize not in RESIZE_MODES:
            raise MetadataError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.layout not in LAYOUTS:
            raise MetadataError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        norm = self.normalization
        if norm.mean is not None and len(norm.mean) not in (1, self.channels):
            raise MetadataError(f"normalization mean has {len(norm.mean)} values for "
                                f"{self.channels} channel(s)")


@dataclass(frozen=True)
class InputSpec:
    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    image: ImageSpec | None = None
    quantization: Quantization | None = None
    original: str | None = None
    """The source model's input this one feeds, when the name differs (see above)."""

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise MetadataError(f"input {self.name!r}: kind must be one of {INPUT_KINDS}, "
                                f"got {self.kind!r}")
        if self.kind in IMAGE_INPUT_KINDS and self.image is None:
            raise MetadataError(f"input {self.name!r}: kind {self.kind!r} needs an image spec")
        if self.kind == "quantized_pixels" and self.quantization is None:
            raise MetadataError(f"input {self.name!r}: quantized pixels need a quantization")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    role: str
    dtype: str
    shape: tuple[int, ...]
    quantization: Quantization | None = None
    encoding: str | None = None
    """``"png"`` when the tensor holds PNG bytes, one string per batch item."""
    original: str | None = None
    """The source model's output this one comes from, when the name differs."""

    def __post_init__(self) -> None:
        if self.role not in OUTPUT_ROLES:
            raise MetadataError(f"output {self.name!r}: role must be one of {OUTPUT_ROLES}, "
                                f"got {self.role!r}")
        if self.encoding not in (None, "png"):
            raise MetadataError(f"output {self.name!r}: encoding must be 'png' or null")


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    signature: str = "serving_default"
    labels: tuple[str, ...] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    """Where the model came from (path, format, signature): for people, not for code."""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.inputs:
            raise MetadataError("a model needs at least one input")
        if not self.outputs:
            raise MetadataError("a model needs at least one output")
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise MetadataError(f"{kind} names must be unique, got {names}")

    def input(self, name: str) -> InputSpec:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> OutputSpec:
        return _by_name(self.outputs, name, "output")

    @property
    def image_input(self) -> InputSpec | None:
        """The one input the function feeds with the client's images, if any."""
        for spec in self.inputs:
            if spec.kind in IMAGE_INPUT_KINDS:
                return spec
        return None

    # --- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> ModelMetadata:
        if not isinstance(data, dict):
            raise MetadataError("metadata must be a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise MetadataError("metadata has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise MetadataError(f"metadata schema_version {version} is newer than this code "
                                f"understands ({SCHEMA_VERSION}); upgrade the function")
        try:
            return cls(
                name=_required(data, "name", str),
                inputs=tuple(_input_from(d) for d in _required(data, "inputs", list)),
                outputs=tuple(_output_from(d) for d in _required(data, "outputs", list)),
                signature=data.get("signature", "serving_default"),
                labels=tuple(str(x) for x in data["labels"]) if data.get("labels") else None,
                source=dict(data.get("source") or {}),
                schema_version=version,
            )
        except (TypeError, KeyError, AttributeError) as exc:
            raise MetadataError(f"malformed metadata: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"metadata is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    # --- files ---------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelMetadata:
        path = Path(model_dir) / METADATA_PATH
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise MetadataError(f"no metadata at {path}: prepare the model with "
                                "`modelprep wrap` first") from exc
        return cls.from_json(text)

    def save(self, model_dir: str | Path) -> Path:
        """Write atomically, so a reader never sees half a file."""
        path = Path(model_dir) / METADATA_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path


def _by_name(specs, name, kind):
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"no {kind} named {name!r}; have {[s.name for s in specs]}")


def _required(data: dict, key: str, typ: type):
    if key not in data:
        raise MetadataError(f"metadata is missing {key!r}")
    value = data[key]
    if not isinstance(value, typ):
        raise MetadataError(f"metadata {key!r} must be a {typ.__name__}")
    return value


def _quant_from(d: dict | None) -> Quantization | None:
    return None if d is None else Quantization(d["dtype"], float(d["scale"]),
                                               int(d.get("zero_point", 0)))


def _image_from(d: dict | None) -> ImageSpec | None:
    if d is None:
        return None
    n = d.get("normalization") or {}
    norm = Normalization(
        mode=n.get("mode", "unit"),
        mean=tuple(float(x) for x in n["mean"]) if n.get("mean") is not None else None,
        std=tuple(float(x) for x in n["std"]) if n.get("std") is not None else None,
        invert=bool(n.get("invert", False)),
    )
    return ImageSpec(height=d["height"], width=d["width"], channels=d["channels"],
                     normalization=norm, resize=d.get("resize", "stretch"),
                     layout=d.get("layout", "nhwc"))


def _input_from(d: dict) -> InputSpec:
    return InputSpec(name=d["name"], kind=d["kind"], dtype=d["dtype"],
                     shape=tuple(int(x) for x in d["shape"]), image=_image_from(d.get("image")),
                     quantization=_quant_from(d.get("quantization")), original=d.get("original"))


def _output_from(d: dict) -> OutputSpec:
    return OutputSpec(name=d["name"], role=d["role"], dtype=d["dtype"],
                      shape=tuple(int(x) for x in d["shape"]),
                      quantization=_quant_from(d.get("quantization")),
                      encoding=d.get("encoding"), original=d.get("original"))


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value
