"""Wrap a model so that it takes encoded images and says what it returns.

The wrapped SavedModel's ``serving_default`` takes a batch of encoded images
(``tf.string [None]``), decodes, resizes and normalises them in the graph,
reshapes them to whatever the original input wants (``[-1, 784]`` included)
and calls the original signature, whose outputs it returns unchanged. Next to
it goes the `modelmeta` file the function reads.

The result is written to a temporary directory beside ``out`` and renamed into
place, so a half-written model is never left where a server could load it.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelmeta import ImageSpec, InputSpec, ModelMetadata, Normalization, OutputSpec
from modelprep.errors import ModelprepError, SpecMismatch
from modelprep.sources import Source, load_source

IMAGE_INPUT_NAME = {"image_bytes": "image_bytes", "image_base64": "image_b64"}
"""Input names of the wrapped model. TF Serving's REST API base64-decodes
``{"b64": ...}`` for any string input; the ``_bytes`` suffix is the older
Cloud ML convention, kept so both kinds of client work."""


@dataclass(frozen=True)
class WrapOptions:
    """What to build; every field has a CLI flag and a recipe key of the same name."""

    name: str | None = None
    """Model name recorded in the metadata; default: the output directory's name."""
    signature: str = "serving_default"
    image_input: str | None = None
    """Which input of the signature takes the image; default: its only input."""
    input_kind: str = "image_bytes"
    height: int | None = None
    width: int | None = None
    channels: int | None = None
    normalization: Normalization = field(default_factory=Normalization)
    resize: str = "stretch"
    labels: tuple[str, ...] | None = None
    output_roles: Mapping[str, str] = field(default_factory=dict)
    overwrite: bool = False


def wrap(src: str | Path, out: str | Path, options: WrapOptions | None = None,
         progress: Callable[[str], None] = lambda _msg: None) -> ModelMetadata:
    """Write the wrapped SavedModel of ``src`` at ``out`` and return its metadata."""
    import tensorflow as tf

    from modelprep.preprocess import image_batch

    options = options or WrapOptions()
    out = Path(out)
    if out.exists() and not options.overwrite:
        raise ModelprepError(f"{out} already exists; pass --overwrite to replace it")
    progress(f"loading {src}")
    source = load_source(src, options.signature)
    image_name, image_spec = _image_input(source, options)
    target = source.inputs[image_name]
    spec = _image_spec(image_name, target, options)
    if options.input_kind not in IMAGE_INPUT_NAME:
        raise SpecMismatch(f"input kind {options.input_kind!r} cannot be wrapped yet; "
                           f"use one of {sorted(IMAGE_INPUT_NAME)}")
    wrapped_name = IMAGE_INPUT_NAME[options.input_kind]
    target_shape = [-1] + [int(d) for d in target.shape[1:]]

    class Wrapped(tf.Module):
        def __init__(self, source: Source) -> None:
            super().__init__()
            self.original = source.owner  # tracked, so its variables are saved with us
            self._fn = source.fn

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=wrapped_name)])
        def serve(self, images):
            if options.input_kind == "image_base64":
                from modelprep.preprocess import decode_base64_text

                images = decode_base64_text(images)
            pixels = image_batch(images, spec)
            model_input = tf.cast(tf.reshape(pixels, target_shape), target.dtype)
            return dict(self._fn(**{image_name: model_input}))

    module = Wrapped(source)
    concrete = module.serve.get_concrete_function()
    outputs = concrete.structured_outputs
    metadata = ModelMetadata(
        name=options.name or out.name,
        inputs=(InputSpec(name=wrapped_name, kind=options.input_kind, dtype="string",
                          shape=(-1,), image=spec),),
        outputs=tuple(_output_spec(name, t, options, source) for name, t in sorted(
            outputs.items())),
        labels=options.labels,
        source={"path": str(src), "format": source.format, "signature": source.signature,
                "input": image_name, "input_shape": _shape(image_spec.shape)},
    )
    _check_labels(metadata)
    progress(f"saving {out}")
    with _atomic_dir(out, options.overwrite) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": concrete})
        metadata.save(tmp)
    return metadata


def _image_input(source: Source, options: WrapOptions):
    names = sorted(source.inputs)
    if options.image_input is None:
        if len(names) != 1:
            raise SpecMismatch(f"signature {source.signature!r} has inputs {names}; "
                               "say which one takes the image (--image-input)")
        name = names[0]
    elif options.image_input not in source.inputs:
        raise SpecMismatch(f"signature {source.signature!r} has no input "
                           f"{options.image_input!r}; it has {names}")
    else:
        name = options.image_input
    if len(names) > 1:
        raise SpecMismatch(f"signature {source.signature!r} has inputs {names}; wrapping "
                           "models with several inputs needs pass-through inputs, "
                           "not supported yet")
    return name, source.inputs[name]


def _image_spec(name: str, tensor, options: WrapOptions) -> ImageSpec:
    """The pixel size and channels the input wants, checked against the options."""
    shape = tensor.shape
    if shape.rank is None:
        raise SpecMismatch(f"input {name!r} has unknown rank; cannot tell the image size")
    dims = [None if d is None else int(d) for d in shape.as_list()[1:]]
    if not tensor.dtype.is_floating and not tensor.dtype.is_integer:
        raise SpecMismatch(f"input {name!r} is {tensor.dtype.name}, not a numeric tensor")
    if len(dims) == 3:
        height, width, channels = dims
        layout = "nhwc"
    elif len(dims) == 2:
        height, width, channels, layout = dims[0], dims[1], 1, "nhwc"
    elif len(dims) == 1 and dims[0] is not None:
        height, width, channels = _flat_size(name, dims[0], options)
        layout = "flat"
    else:
        raise SpecMismatch(f"input {name!r} has shape {_shape(shape)}; expected "
                           "[batch, height, width, channels] or [batch, height*width*channels]")

    def pick(what: str, model_value: int | None, asked: int | None) -> int:
        if model_value is not None and asked is not None and model_value != asked:
            raise SpecMismatch(f"input {name!r} is {_shape(shape)}: its {what} is "
                               f"{model_value}, but the options say {asked}")
        value = model_value if model_value is not None else asked
        if value is None:
            raise SpecMismatch(f"input {name!r} is {_shape(shape)}: its {what} is not fixed; "
                               f"give it (--size HxW / --channels)")
        return value

    height = pick("height", height, options.height)
    width = pick("width", width, options.width)
    channels = pick("channels", channels, options.channels)
    if channels not in (1, 3):
        raise SpecMismatch(f"input {name!r} wants {channels} channels; only 1 (gray) and "
                           "3 (RGB) images can be decoded into it")
    return ImageSpec(height=height, width=width, channels=channels,
                     normalization=options.normalization, resize=options.resize, layout=layout)


def _flat_size(name: str, size: int, options: WrapOptions) -> tuple[int, int, int]:
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


def _output_spec(name: str, tensor, options: WrapOptions, source: Source) -> OutputSpec:
    role = options.output_roles.get(name) or _guess_role(name, tensor)
    return OutputSpec(name=name, role=role, dtype=tensor.dtype.name,
                      shape=_shape_tuple(tensor.shape))


def _guess_role(name: str, tensor) -> str:
    """A 2-D float output is a classifier's; other outputs are plain tensors."""
    if tensor.dtype.is_floating and tensor.shape.rank == 2:
        return "logits" if "logit" in name.lower() else "probabilities"
    return "tensor"


def _check_labels(metadata: ModelMetadata) -> None:
    if not metadata.labels:
        return
    for out in metadata.outputs:
        if out.role in ("probabilities", "logits") and out.shape[-1] not in (-1, len(
                metadata.labels)):
            raise SpecMismatch(f"output {out.name!r} has {out.shape[-1]} classes but "
                               f"{len(metadata.labels)} labels were given")


def _shape_tuple(shape) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in shape.as_list())


def _shape(shape) -> str:
    if getattr(shape, "rank", 0) is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in _shape_tuple(shape)) + "]"


@contextlib.contextmanager
def _atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place on success."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)
    old = None
    if out.exists():
        old = out.with_name(tmp.name + ".old")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
