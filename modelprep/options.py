"""What a user asks for, in the one text form the command line and recipes share.

Plain option objects and parsers, free of TensorFlow, so the command line and a
recipe file build the same options cheaply: the per-input and per-output layer
specs (``--input``, ``--quantize-output``, ``--png-output``) and the text form of
every other flag value that is not a plain word (``--size 224x224``, ``--mean
1,2,3``, ``--labels``, ``--graph-inputs``, ``--keep-signatures``, ``--output``).
A recipe value that is a string goes through the same parser as the flag.  Each
object's fields are its recipe keys.

Input layers (``NAME=KIND[:OPTIONS]``)::

    image_bytes                       encoded image bytes, decoded in the graph
    image_base64                      base64 text of an image, decoded in the graph
    quantized_pixels[:Q]              uint8/int8 pixels, dequantized in the graph
    tensor[:SHAPE]                    passed through unchanged; SHAPE like -1,4

Output layers::

    float                             unchanged (the default)
    Q                                 quantized, e.g. uint8:0:1 (clipped, never wrapped)
    png[:LOW:HIGH]                    PNG per batch item; float outputs need LOW:HIGH

A quantization ``Q`` is ``DTYPE`` (inputs only: the range the normalisation
gives 0..255 pixels), ``DTYPE:LOW:HIGH`` (the real range spread over the whole
integer range) or ``DTYPE:scale=S:zero_point=Z`` (explicit), DTYPE uint8 or int8.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from modelmeta import QUANT_DTYPES, MetadataError, Normalization, Quantization
from modelprep.errors import ModelprepError

IMAGE_KINDS = ("image_bytes", "image_base64", "quantized_pixels")
"""Input kinds fed with the client's image (at most one input per model)."""
INPUT_LAYER_KINDS = (*IMAGE_KINDS, "tensor")
OUTPUT_LAYER_KINDS = ("float", "quantize", "png")

_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+(:\d+)?$")


class OptionSyntaxError(ModelprepError):
    """An option's text form does not parse; the message quotes it and shows the form."""


@dataclass(frozen=True)
class QuantizeSpec:
    """How to quantize a tensor: a dtype and either a real range or scale and zero point.

    Without either (inputs only), the range comes from the image normalisation.
    """

    dtype: str
    low: float | None = None
    high: float | None = None
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in QUANT_DTYPES:
            raise OptionSyntaxError(f"quantization dtype must be one of {sorted(QUANT_DTYPES)}, "
                                   f"got {self.dtype!r}")
        has_range = self.low is not None or self.high is not None
        has_affine = self.scale is not None or self.zero_point is not None
        if has_range and has_affine:
            raise OptionSyntaxError("give a quantization either a range (low, high) or "
                                   "scale and zero_point, not both")
        if has_range and (self.low is None or self.high is None
                          or not self.high > self.low):
            raise OptionSyntaxError(f"quantization range needs low < high, got "
                                   f"[{self.low}, {self.high}]")
        if has_affine and self.scale is None:
            raise OptionSyntaxError("an explicit quantization needs a scale")

    @property
    def is_default(self) -> bool:
        """True when only the dtype is given (the range comes from elsewhere)."""
        return self.low is None and self.scale is None

    def resolve(self, default_range: tuple[float, float] | None = None) -> Quantization:
        """The affine quantization this spec means; `default_range` fills a bare dtype."""
        try:
            if self.scale is not None:
                return Quantization(self.dtype, float(self.scale), int(self.zero_point or 0))
            low, high = (self.low, self.high) if self.low is not None else (
                default_range or (None, None))
            if low is None or high is None:
                raise OptionSyntaxError(f"quantization {self.dtype} needs a range "
                                       f"({self.dtype}:LOW:HIGH) or scale and zero_point")
            return Quantization.for_range(self.dtype, float(low), float(high))
        except MetadataError as exc:
            raise OptionSyntaxError(str(exc)) from exc

    @classmethod
    def parse(cls, text: str) -> QuantizeSpec:
        """``uint8``, ``int8:-1:1`` or ``int8:scale=0.5:zero_point=-3``."""
        dtype, *rest = text.split(":")
        form = "DTYPE, DTYPE:LOW:HIGH or DTYPE:scale=S:zero_point=Z"
        if dtype not in QUANT_DTYPES:
            raise OptionSyntaxError(f"{text!r}: quantization dtype must be uint8 or int8 "
                                   f"({form})")
        if not rest:
            return cls(dtype)
        if all("=" not in part for part in rest):
            if len(rest) != 2:
                raise OptionSyntaxError(f"{text!r}: expected {form}")
            low, high = (_number(text, part) for part in rest)
            return cls(dtype, low=low, high=high)
        values: dict[str, str] = {}
        for part in rest:
            key, sep, value = part.partition("=")
            if not sep or key not in ("scale", "zero_point") or key in values:
                raise OptionSyntaxError(f"{text!r}: expected {form}")
            values[key] = value
        zero_point = values.get("zero_point", "0")
        if not re.fullmatch(r"[+-]?\d+", zero_point):
            raise OptionSyntaxError(f"{text!r}: zero_point must be an integer")
        scale = _number(text, values["scale"]) if "scale" in values else None
        return cls(dtype, scale=scale, zero_point=int(zero_point))

    def __str__(self) -> str:
        if self.scale is not None:
            return f"{self.dtype}:scale={self.scale:g}:zero_point={self.zero_point or 0}"
        if self.low is not None:
            return f"{self.dtype}:{self.low:g}:{self.high:g}"
        return self.dtype


@dataclass(frozen=True)
class InputLayer:
    """How one input of the wrapped model is fed (recipe keys: kind, quantize, shape)."""

    kind: str
    quantize: QuantizeSpec | None = None
    """``quantized_pixels`` only: the wire dtype and quantization (default uint8)."""
    shape: tuple[int, ...] | None = None
    """``tensor`` only: the shape to declare, for inputs whose shape the model leaves
    open (-1 for any size); must agree with what the model does fix."""

    def __post_init__(self) -> None:
        if self.kind not in INPUT_LAYER_KINDS:
            raise OptionSyntaxError(f"input kind must be one of {', '.join(INPUT_LAYER_KINDS)}, "
                                   f"got {self.kind!r}")
        if self.quantize is not None and self.kind != "quantized_pixels":
            raise OptionSyntaxError(f"only quantized_pixels inputs take a quantization, "
                                   f"not {self.kind}")
        if self.shape is not None and self.kind != "tensor":
            raise OptionSyntaxError(f"only tensor inputs take a shape, not {self.kind}")
        if self.shape is not None and any(d < -1 or d == 0 for d in self.shape):
            raise OptionSyntaxError(f"tensor shape dimensions must be positive or -1, "
                                   f"got {list(self.shape)}")

    @property
    def takes_image(self) -> bool:
        return self.kind in IMAGE_KINDS

    @property
    def quantization_spec(self) -> QuantizeSpec:
        return self.quantize or QuantizeSpec("uint8")

    @classmethod
    def parse(cls, text: str) -> InputLayer:
        """``image_bytes``, ``image_base64``, ``quantized_pixels[:Q]``, ``tensor[:SHAPE]``."""
        kind, _, options = text.partition(":")
        if kind not in INPUT_LAYER_KINDS:
            raise OptionSyntaxError(f"{text!r}: input kind must be one of "
                                   f"{', '.join(INPUT_LAYER_KINDS)}")
        if not options:
            return cls(kind)
        if kind == "quantized_pixels":
            return cls(kind, quantize=QuantizeSpec.parse(options))
        if kind == "tensor":
            return cls(kind, shape=parse_shape(options, text))
        raise OptionSyntaxError(f"{text!r}: {kind} takes no options")


@dataclass(frozen=True)
class OutputLayer:
    """What happens to one output (recipe keys: kind, quantize, low, high)."""

    kind: str = "float"
    quantize: QuantizeSpec | None = None
    """``quantize`` only: dtype and range (or scale and zero point)."""
    low: float | None = None
    high: float | None = None
    """``png`` only: the value range of a non-uint8 output, mapped onto 0..255."""

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_LAYER_KINDS:
            raise OptionSyntaxError(f"output layer must be one of "
                                   f"{', '.join(OUTPUT_LAYER_KINDS)}, got {self.kind!r}")
        if self.kind == "quantize":
            if self.quantize is None or self.quantize.is_default:
                raise OptionSyntaxError("a quantized output needs its range (uint8:LOW:HIGH) "
                                       "or scale and zero_point")
        elif self.quantize is not None:
            raise OptionSyntaxError(f"a {self.kind} output takes no quantization")
        if (self.low is None) != (self.high is None) or (
                self.low is not None and self.high is not None and not self.high > self.low):
            raise OptionSyntaxError(f"png range needs LOW < HIGH, got [{self.low}, {self.high}]")
        if self.low is not None and self.kind != "png":
            raise OptionSyntaxError(f"only png outputs take a value range, not {self.kind}")

    @classmethod
    def parse(cls, text: str) -> OutputLayer:
        """``float``, ``png``, ``png:LOW:HIGH`` or a quantization such as ``uint8:0:1``."""
        head, _, options = text.partition(":")
        if head == "float" and not options:
            return cls("float")
        if head == "png":
            if not options:
                return cls("png")
            parts = options.split(":")
            if len(parts) != 2:
                raise OptionSyntaxError(f"{text!r}: expected png or png:LOW:HIGH")
            low, high = (_number(text, p) for p in parts)
            return cls("png", low=low, high=high)
        if head in QUANT_DTYPES:
            return cls("quantize", quantize=QuantizeSpec.parse(text))
        raise OptionSyntaxError(f"{text!r}: an output layer is float, png[:LOW:HIGH], "
                               "or a quantization such as uint8:0:1")


def parse_assignments(items: list[str] | tuple[str, ...], flag: str,
                      value_optional: bool = False) -> dict[str, str | None]:
    """``NAME=VALUE`` items (a repeated flag) to a dict; each name at most once."""
    result: dict[str, str | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name or (not sep and not value_optional) or (sep and not value):
            form = "NAME[=VALUE]" if value_optional else "NAME=VALUE"
            raise OptionSyntaxError(f"{flag} takes {form}, got {item!r}")
        if name in result:
            raise OptionSyntaxError(f"{flag} names {name!r} twice")
        result[name] = value if sep else None
    return result


def parse_graph_tensors(text: str, flag: str = "--graph-inputs") -> dict[str, str]:
    """``ALIAS=op:0,other:1`` to ``{alias: tensor name}``.

    The alias defaults to the op name's last part (``scope/logits:0`` is
    ``logits``); a name without ``:N`` means output 0.
    """
    result: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise OptionSyntaxError(f"{flag}: empty item in {text!r}")
        alias, sep, tensor = item.rpartition("=")
        if not sep:
            tensor = item
        if not _TENSOR_NAME.match(tensor):
            raise OptionSyntaxError(f"{flag}: {tensor!r} is not a tensor name such as "
                                   "input:0 or scope/logits:0")
        if ":" not in tensor:
            tensor += ":0"
        op, index = tensor.rsplit(":", 1)
        if not alias:
            alias = op.rsplit("/", 1)[-1] + ("" if index == "0" else f"_{index}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", alias):
            raise OptionSyntaxError(f"{flag}: alias {alias!r} must be a Python-style "
                                   f"identifier; write ALIAS={tensor}")
        if alias in result:
            raise OptionSyntaxError(f"{flag}: alias {alias!r} used twice")
        result[alias] = tensor
    return result


def parse_shape(text: str, context: str | None = None) -> tuple[int, ...]:
    """``-1,4`` (or ``[-1, 4]``) to ``(-1, 4)``; ``[]`` is a scalar."""
    body = text.strip().removeprefix("[").removesuffix("]").strip()
    if not body:
        return ()
    try:
        return tuple(int(part) for part in body.split(","))
    except ValueError:
        raise OptionSyntaxError(f"{(context or text)!r}: a shape is comma-separated "
                               "integers such as -1,4") from None


def normalized_range(norm: Normalization) -> tuple[float, float]:
    """The smallest and largest model value that 0..255 pixels normalise to."""
    if norm.mode == "unit":
        return 0.0, 1.0
    if norm.mode == "symmetric":
        return -1.0, 1.0
    if norm.mode == "raw":
        return 0.0, 255.0
    assert norm.mean is not None and norm.std is not None
    lows = [(0.0 - m) / s for m, s in zip(norm.mean, norm.std, strict=True)]
    highs = [(255.0 - m) / s for m, s in zip(norm.mean, norm.std, strict=True)]
    return min(lows), max(highs)


def _number(text: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise OptionSyntaxError(f"{text!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise OptionSyntaxError(f"{text!r}: {value!r} is not a finite number")
    return number


# --- command-line flags (and recipe keys of the same names) --------------------


def input_layers(items: list[str] | tuple[str, ...]) -> dict[str, InputLayer]:
    """``--input NAME=KIND[:OPTIONS]`` items to `WrapOptions.inputs`."""
    return {name: InputLayer.parse(text or "")
            for name, text in parse_assignments(items, "--input").items()}


def output_layers(quantize: list[str] | tuple[str, ...] = (),
                  png: list[str] | tuple[str, ...] = ()) -> dict[str, OutputLayer]:
    """``--quantize-output NAME=Q`` and ``--png-output NAME[=LOW:HIGH]`` items to
    `WrapOptions.outputs`; an output can have only one layer."""
    layers = {name: OutputLayer("quantize", quantize=QuantizeSpec.parse(text or ""))
              for name, text in parse_assignments(quantize, "--quantize-output").items()}
    for name, text in parse_assignments(png, "--png-output", value_optional=True).items():
        if name in layers:
            raise OptionSyntaxError(f"output {name!r} is given both --quantize-output and "
                                   "--png-output; choose one")
        layers[name] = OutputLayer.parse("png" if text is None else f"png:{text}")
    return layers


def keep_signatures(value: bool | str | None) -> bool | tuple[str, ...]:
    """``--keep-signatures`` (all: True) or ``--keep-signatures a,b`` to the option."""
    if value is None or isinstance(value, bool):
        return bool(value)
    names = tuple(part.strip() for part in value.split(","))
    if not all(names):
        raise OptionSyntaxError(f"--keep-signatures takes comma-separated signature keys, "
                               f"got {value!r}")
    return names


def output_roles(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``--output NAME=ROLE`` items to `WrapOptions.output_roles`."""
    return {name: role or "" for name, role in parse_assignments(items, "--output").items()}


def parse_size(text: str) -> tuple[int, int]:
    """``--size 224x224`` (height x width) to ``(224, 224)``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise OptionSyntaxError(f"size must be HxW, e.g. 224x224, got {text!r}") from None
    if height < 1 or width < 1:
        raise OptionSyntaxError(f"size must be positive, got {text!r}")
    return height, width


def parse_floats(text: str) -> tuple[float, ...]:
    """``--mean 123.675,116.28,103.53`` to a tuple of numbers."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise OptionSyntaxError(f"expected comma-separated numbers, got {text!r}") from None


def parse_labels(text: str, base_dir: Path | None = None) -> tuple[str, ...]:
    """``--labels``: a text file (relative to `base_dir`, a recipe's folder) with one label
    per line, blank lines skipped; or, when no such file exists, a comma-separated list."""
    path = (base_dir or Path()) / text
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return tuple(line for line in lines if line)
    return tuple(part.strip() for part in text.split(","))


def normalization_from_flags(normalize: str | None = None,
                             mean: tuple[float, ...] | None = None,
                             std: tuple[float, ...] | None = None,
                             invert: bool = False) -> Normalization | None:
    """``--normalize``, ``--mean``, ``--std`` and ``--invert`` to one `Normalization`;
    ``meanstd`` when a mean is given without a mode, None when no flag is."""
    if normalize is None and mean is None and std is None and not invert:
        return None
    mode = normalize or ("meanstd" if mean is not None else "unit")
    return Normalization(mode=mode, mean=None if mean is None else tuple(mean),
                         std=None if std is None else tuple(std), invert=invert)


def parse_name_number(text: str) -> tuple[str, float]:
    """``--output-tolerance NAME=TOL`` to ``(name, tol)``."""
    name, sep, number = text.partition("=")
    if not sep or not name:
        raise OptionSyntaxError(f"expected NAME=TOL, got {text!r}")
    return name, parse_non_negative_float(number)


def parse_non_negative_float(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number >= 0 or number == float("inf"):
        raise OptionSyntaxError(f"expected a non-negative number, got {text!r}")
    return number


def parse_non_negative_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise OptionSyntaxError(f"expected a non-negative integer, got {text!r}")
    return number


def parse_positive_int(text: str) -> int:
    number = parse_non_negative_int(text)
    if number < 1:
        raise OptionSyntaxError(f"expected a positive integer, got {text!r}")
    return number
