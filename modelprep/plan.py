"""Deciding, before any graph is built, what every input and output of the wrapped model is.

The options say what the user wants; the source says what the model has.  This
module checks one against the other and settles each tensor's name, dtype,
shape, layer and metadata, so that every mismatch is reported up front, naming
the tensor and what did not fit, and the graph-building code has no decisions
left to make.

Which input takes the image: the one ``--input NAME=KIND`` or ``--image-input``
names; otherwise, when exactly one input is left unnamed, that one.  All other
inputs pass through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelmeta import ImageSpec, InputSpec, Normalization, OutputSpec, Quantization
from modelprep.errors import SpecMismatch
from modelprep.options import InputLayer, OutputLayer, normalized_range

WIRE_NAMES = {"image_bytes": "image_bytes", "image_base64": "image_b64"}
"""Names of encoded-image inputs in the wrapped model. TF Serving's REST API
base64-decodes ``{"b64": ...}`` for any string input; the ``_bytes`` suffix is the
older Cloud ML convention, kept so both kinds of client work."""
PNG_SUFFIX = "_bytes"
"""TF Serving's REST API base64-wraps string outputs only when their alias ends so."""


@dataclass(frozen=True)
class InputPlan:
    wire: str
    """The input's name in the wrapped signature."""
    source: str
    """The source signature's input it feeds."""
    layer: InputLayer
    target: Any
    """The source input's `tf.TensorSpec`."""
    dtype: str
    shape: tuple[int | None, ...]
    """The wrapped input's dtype and shape (None: any size)."""
    image: ImageSpec | None = None
    quantization: Quantization | None = None

    def tensor_spec(self) -> Any:
        import tensorflow as tf

        return tf.TensorSpec(self.shape, tf.as_dtype(self.dtype), name=self.wire)

    def metadata(self) -> InputSpec:
        return InputSpec(name=self.wire, kind=self.layer.kind, dtype=self.dtype,
                         shape=_minus_one(self.shape), image=self.image,
                         quantization=self.quantization, original=self.source)


@dataclass(frozen=True)
class OutputPlan:
    wire: str
    source: str
    layer: OutputLayer
    role: str
    quantization: Quantization | None = None
    """For ``quantize``: the output's; for ``png`` of a non-uint8 output: the samples'."""

    def metadata(self, tensor: Any) -> OutputSpec:
        """The metadata entry, given the wrapped signature's output tensor."""
        if tensor.shape.rank is None:
            raise SpecMismatch(f"output {self.source!r} has unknown rank; the metadata needs "
                               "at least its rank (wrap a signature with shaped outputs)")
        return OutputSpec(name=self.wire, role=self.role, dtype=tensor.dtype.name,
                          shape=_minus_one(tuple(tensor.shape.as_list())),
                          quantization=self.quantization,
                          encoding="png" if self.layer.kind == "png" else None,
                          original=self.source)


# --- inputs ----------------------------------------------------------------------


def plan_inputs(signature: str, inputs: Mapping[str, Any], options: Any) -> list[InputPlan]:
    """One plan per source input: the image input first, then the others by name."""
    layers = _input_layers(signature, sorted(inputs), options)
    plans = [_input_plan(name, inputs[name], layer, options)
             for name, layer in sorted(layers.items(), key=lambda kv: (not kv[1].takes_image,
                                                                       kv[0]))]
    _unique("input", [(p.wire, p.source) for p in plans])
    return plans


def _input_layers(signature: str, names: list[str], options: Any) -> dict[str, InputLayer]:
    layers = dict(options.inputs)
    for name in layers:
        if name not in names:
            raise SpecMismatch(f"signature {signature!r} has no input {name!r}; it has {names}")
    if options.image_input is not None:
        name = options.image_input
        if name not in names:
            raise SpecMismatch(f"signature {signature!r} has no input {name!r}; it has {names}")
        if name in layers and not layers[name].takes_image:
            raise SpecMismatch(f"input {name!r} is named as the image input but also as "
                               f"{layers[name].kind}")
        layers.setdefault(name, InputLayer(options.input_kind))
    images = sorted(n for n, layer in layers.items() if layer.takes_image)
    if len(images) > 1:
        raise SpecMismatch(f"inputs {images} all take the image; only one input can take the "
                           "client's image (pass the others through with --input NAME=tensor)")
    rest = [n for n in names if n not in layers]
    if not images and len(rest) == 1:
        layers[rest[0]] = InputLayer(options.input_kind)
    elif not images and rest:
        raise SpecMismatch(f"signature {signature!r} has inputs {names}; say which one takes "
                           "the image (--image-input NAME or --input NAME=KIND) and pass the "
                           "others through (--input NAME=tensor)")
    for name in rest:
        layers.setdefault(name, InputLayer("tensor"))
    return layers


def _input_plan(name: str, target: Any, layer: InputLayer, options: Any) -> InputPlan:
    if layer.kind == "tensor":
        shape = _declared_shape(name, target, layer.shape)
        return InputPlan(wire=name, source=name, layer=layer, target=target,
                         dtype=target.dtype.name, shape=shape)
    normalization = options.normalization or Normalization(
        "raw" if target.dtype.is_integer else "unit")
    if target.dtype.is_integer and normalization.mode in ("unit", "symmetric"):
        raise SpecMismatch(f"input {name!r} is {target.dtype.name}: {normalization.mode} "
                           "normalisation gives values within [-1, 1], which round to -1, 0 "
                           "or 1; use --normalize raw (or meanstd)")
    image = image_spec(name, target, options, normalization)
    if layer.kind in WIRE_NAMES:
        return InputPlan(wire=WIRE_NAMES[layer.kind], source=name, layer=layer, target=target,
                         dtype="string", shape=(None,), image=image)
    quantization = layer.quantization_spec.resolve(normalized_range(normalization))
    return InputPlan(wire=name, source=name, layer=layer, target=target,
                     dtype=quantization.dtype,
                     shape=(None, image.height, image.width, image.channels),
                     image=image, quantization=quantization)


def _declared_shape(name: str, target: Any, declared: tuple[int, ...] | None):
    import tensorflow as tf

    shape = target.shape
    if declared is not None:
        wanted = tf.TensorShape([None if d == -1 else d for d in declared])
        if not wanted.is_compatible_with(shape):
            raise SpecMismatch(f"input {name!r} is {format_shape(shape)}, but the options "
                               f"declare {format_shape(wanted)}")
        shape = wanted.merge_with(shape)
    if shape.rank is None:
        raise SpecMismatch(f"input {name!r} has unknown rank; declare its shape "
                           f"(--input {name}=tensor:-1,...)")
    return tuple(shape.as_list())


def image_spec(name: str, tensor: Any, options: Any, normalization: Normalization) -> ImageSpec:
    """The pixel size and channels the input wants, checked against the options."""
    shape = tensor.shape
    if shape.rank is None:
        raise SpecMismatch(f"input {name!r} has unknown rank; cannot tell the image size "
                           f"(pass it through with --input {name}=tensor:SHAPE)")
    dims = [None if d is None else int(d) for d in shape.as_list()[1:]]
    if not tensor.dtype.is_floating and not tensor.dtype.is_integer:
        raise SpecMismatch(f"input {name!r} is {tensor.dtype.name}, not a numeric tensor")
    if len(dims) == 3:
        height, width, channels = dims
        layout = "nhwc"
    elif len(dims) == 2:
        height, width, channels, layout = dims[0], dims[1], 1, "nhwc"
    elif len(dims) == 1 and dims[0] is not None:
        if dims[0] < 4:
            raise SpecMismatch(f"input {name!r} is {format_shape(shape)}: too small to be an "
                               f"image; pass it through with --input {name}=tensor")
        height, width, channels = _flat_size(name, dims[0], options)
        layout = "flat"
    else:
        raise SpecMismatch(f"input {name!r} has shape {format_shape(shape)}; expected "
                           "[batch, height, width, channels] or [batch, height*width*channels]")

    def pick(what: str, model_value: int | None, asked: int | None) -> int:
        if model_value is not None and asked is not None and model_value != asked:
            raise SpecMismatch(f"input {name!r} is {format_shape(shape)}: its {what} is "
                               f"{model_value}, but the options say {asked}")
        value = model_value if model_value is not None else asked
        if value is None:
            raise SpecMismatch(f"input {name!r} is {format_shape(shape)}: its {what} is not "
                               f"fixed; give it (--size HxW / --channels)")
        return value

    height = pick("height", height, options.height)
    width = pick("width", width, options.width)
    channels = pick("channels", channels, options.channels)
    if channels not in (1, 3):
        raise SpecMismatch(f"input {name!r} wants {channels} channels; only 1 (gray) and "
                           "3 (RGB) images can be decoded into it")
    return ImageSpec(height=height, width=width, channels=channels,
                     normalization=normalization, resize=options.resize, layout=layout)


def _flat_size(name: str, size: int, options: Any) -> tuple[int, int, int]:
    """Height, width and channels of a flattened image input such as ``[-1, 784]``."""
    if options.height and options.width:
        channels = options.channels or max(1, size // (options.height * options.width))
        if options.height * options.width * channels != size:
            raise SpecMismatch(f"input {name!r} holds {size} values per image, but "
                               f"{options.height}x{options.width}x{channels} is "
                               f"{options.height * options.width * channels}")
        return options.height, options.width, channels
    for channels in ([options.channels] if options.channels else [1, 3]):
        side = math.isqrt(size // channels)
        if side * side * channels == size:
            return side, side, channels
    raise SpecMismatch(f"input {name!r} holds {size} values per image, not a square image; "
                       "give its size (--size HxW --channels C)")


# --- outputs ---------------------------------------------------------------------


def plan_outputs(signature: str, outputs: Mapping[str, Any], options: Any) -> list[OutputPlan]:
    names = sorted(outputs)
    for what, mapping in (("output", options.outputs), ("output role for", options.output_roles)):
        for name in mapping:
            if name not in outputs:
                raise SpecMismatch(f"signature {signature!r} has no output {name!r} (named by "
                                   f"an {what} option); it has {names}")
    plans = [_output_plan(name, outputs[name], options.outputs.get(name) or OutputLayer(),
                          options.output_roles.get(name)) for name in names]
    _unique("output", [(p.wire, p.source) for p in plans])
    return plans


def _output_plan(name: str, tensor: Any, layer: OutputLayer, role: str | None) -> OutputPlan:
    dtype = tensor.dtype
    if layer.kind == "float":
        return OutputPlan(wire=name, source=name, layer=layer, role=role or guess_role(name,
                                                                                       tensor))
    if layer.kind == "quantize":
        if not dtype.is_floating:
            raise SpecMismatch(f"output {name!r} is {dtype.name}; only float outputs can be "
                               "quantized")
        assert layer.quantize is not None
        return OutputPlan(wire=name, source=name, layer=layer,
                          role=role or guess_role(name, tensor),
                          quantization=layer.quantize.resolve())
    rank = tensor.shape.rank
    channels = tensor.shape[-1] if rank == 4 else 1
    if rank not in (3, 4) or channels is None or not 1 <= channels <= 4:
        raise SpecMismatch(f"output {name!r} is {format_shape(tensor.shape)}; a PNG output "
                           "must be [batch, height, width] or [batch, height, width, "
                           "channels] with 1 to 4 channels")
    quantization = None
    if dtype.name == "uint8":
        if layer.low is not None:
            raise SpecMismatch(f"output {name!r} is uint8 already; a PNG of it takes no "
                               "value range")
    elif not (dtype.is_floating or dtype.is_integer):
        raise SpecMismatch(f"output {name!r} is {dtype.name}; only numeric outputs can be "
                           "PNG-encoded")
    elif layer.low is None:
        raise SpecMismatch(f"output {name!r} is {dtype.name}; say which value range maps "
                           f"onto the PNG's 0..255 (--png-output {name}=LOW:HIGH)")
    else:
        assert layer.high is not None
        quantization = Quantization.for_range("uint8", layer.low, layer.high)
    wire = name if name.endswith(PNG_SUFFIX) else name + PNG_SUFFIX
    return OutputPlan(wire=wire, source=name, layer=layer, role=role or "image",
                      quantization=quantization)


def guess_role(name: str, tensor: Any) -> str:
    """A 2-D float output of several classes is a classifier's; others are plain tensors."""
    if (tensor.dtype.is_floating and tensor.shape.rank == 2
            and tensor.shape[-1] not in (0, 1)):
        return "logits" if "logit" in name.lower() else "probabilities"
    return "tensor"


# --- helpers ---------------------------------------------------------------------


def _unique(kind: str, pairs: list[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for wire, source in pairs:
        if wire in seen:
            raise SpecMismatch(f"the wrapped model would have two {kind}s named {wire!r} "
                               f"(from {seen[wire]!r} and {source!r}); rename one in the "
                               "source model or choose another layer")
        seen[wire] = source


def _minus_one(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in shape)


def format_shape(shape: Any) -> str:
    if getattr(shape, "rank", 0) is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in _minus_one(tuple(shape.as_list()))) + "]"
