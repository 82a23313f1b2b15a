"""Sample inputs for checking a prepared model, fed the way clients feed it.

`verify` and `export` (its warmup records) both need inputs that a prepared
model accepts: what a client sends, as the model's `modelmeta` metadata says
(encoded image bytes, base64 text, quantized pixels, or plain tensors).
`verify` also needs, for the very same image, the pixels the *original* model
should see, so every sample keeps both sides of that pairing.

Images come from a folder (sent as the files' own bytes) or are generated
deterministically: the held-out digits of the demo for MNIST-shaped inputs,
structured synthetic images otherwise. Generated images are made at the
model's input size and sent as PNG, so their pixels are known exactly and the
reference path needs no TensorFlow; other images go through the same TF ops
the prepared graph runs (`modelprep.input_ops`), eagerly.

Quantized pixel inputs follow the `modelmeta` convention: the client
normalises the pixels and quantizes the result,
``q = clip(round(normalize(p) / scale) + zero_point)``, and the graph's
``scale * (q - zero_point)`` is the model's input value itself, so that value
is what the original gets. ``pixels`` inputs (LiteRT flavours) get the
normalised values in the model's own shape, quantized the same way when the
metadata says so.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from functions.pixels import normalize

# The numpy side of the conventions is the function's own: verify checks exactly it.
from functions.quantization import dequantize, quantize
from modelmeta import QUANT_DTYPES, ImageSpec, InputSpec, ModelMetadata
from modelprep.errors import ModelprepError, SpecMismatch, first_line

SAMPLE_KINDS = ("auto", "digits", "synthetic")
"""Generated samples: ``digits`` (the demo's held-out split), ``synthetic``
(gradients, shapes, noise, stripes) or ``auto`` (digits for a 28x28 gray input)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
"""What the in-graph decoder reads (`modelprep.input_ops.decode_image`)."""

_DECODABLE = {"PNG", "JPEG", "GIF", "BMP"}
_DIGITS_SIZE = 28


@dataclass(frozen=True)
class SampleImage:
    """One image as a client would send it, and its pixels when known exactly."""

    name: str
    """For messages: a file name, or ``digits[3]`` / ``synthetic[3]``."""
    data: bytes
    """The encoded image (the file's bytes, or PNG for generated images)."""
    pixels: np.ndarray | None = None
    """uint8 ``[h, w, c]`` that `data` decodes to, when generated."""
    label: int | None = None


@dataclass(frozen=True)
class Samples:
    """A batch of sample images plus a sentence saying where they came from."""

    images: tuple[SampleImage, ...]
    description: str


def collect_images(spec: ImageSpec | None, *, images: str | Path | None = None,
                   samples: str = "auto", count: int = 64, seed: int = 0) -> Samples:
    """Images from the folder `images`, or `count` generated ones of the kind `samples`."""
    if count < 1:
        raise ModelprepError(f"sample count must be at least 1, got {count}")
    if images is not None:
        if samples != "auto":
            raise ModelprepError(f"give a folder of sample images or generated samples "
                                 f"({samples!r}), not both")
        return _folder_images(Path(images), count)
    if samples not in SAMPLE_KINDS:
        raise ModelprepError(f"samples must be one of {', '.join(SAMPLE_KINDS)}, got {samples!r}")
    if spec is None:
        return Samples((), f"{count} generated tensor samples (seed {seed})")
    mnist_shaped = (spec.height, spec.width, spec.channels) == (_DIGITS_SIZE, _DIGITS_SIZE, 1)
    if samples == "digits" or (samples == "auto" and mnist_shaped):
        return _digit_images(spec, count)
    return _synthetic_images(spec, count, seed)


def _folder_images(folder: Path, count: int) -> Samples:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise ModelprepError(f"sample image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ModelprepError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    chosen = []
    for path in files[:count]:
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format
        except (UnidentifiedImageError, OSError) as exc:
            raise ModelprepError(f"sample image {path} cannot be read: {exc}") from exc
        if fmt not in _DECODABLE:
            raise ModelprepError(f"sample image {path} is {fmt}; the model's input layer "
                                 "decodes only PNG, JPEG, GIF and BMP")
        chosen.append(SampleImage(name=path.name, data=data))
    return Samples(tuple(chosen), f"{len(chosen)} images from {folder}")


def _digit_images(spec: ImageSpec, count: int) -> Samples:
    from modelprep.digits import digit_images

    data = digit_images()
    n = min(count, len(data.x_test))
    chosen = []
    for i in range(n):
        pixels = data.x_test[i][:, :, None]
        if spec.channels == 3:
            pixels = np.repeat(pixels, 3, axis=2)
        chosen.append(SampleImage(name=f"digits[{i}]", data=encode_png(pixels),
                                  pixels=pixels, label=int(data.y_test[i])))
    return Samples(tuple(chosen), f"{n} held-out digits")


def _synthetic_images(spec: ImageSpec, count: int, seed: int) -> Samples:
    rng = np.random.default_rng(seed)
    chosen = []
    for i in range(count):
        pixels = synthetic_image(rng, i % 4, spec.height, spec.width, spec.channels)
        chosen.append(SampleImage(name=f"synthetic[{i}]", data=encode_png(pixels),
                                  pixels=pixels))
    size = f"{spec.height}x{spec.width}x{spec.channels}"
    return Samples(tuple(chosen), f"{count} synthetic {size} images (seed {seed})")


def synthetic_image(rng: np.random.Generator, pattern: int, height: int, width: int,
                    channels: int) -> np.ndarray:
    """One uint8 ``[h, w, c]`` image: a gradient, shapes, noise or stripes (``pattern`` 0..3).

    Several kinds, because a model fed only noise tends to give one answer to
    everything, and agreement on one answer proves little.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    if pattern == 0:
        start, end = rng.uniform(0, 255, (2, channels))
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * x + np.sin(angle) * y)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
        image = start + (end - start) * t[:, :, None]
    elif pattern == 1:
        image = np.broadcast_to(rng.uniform(0, 255, channels), (height, width, channels)).copy()
        for _ in range(int(rng.integers(2, 6))):
            cy, cx = rng.uniform(0, 1, 2)
            ry, rx = rng.uniform(0.05, 0.4, 2)
            colour = rng.uniform(0, 255, channels)
            if rng.uniform() < 0.5:
                inside = (np.abs(y - cy) < ry) & (np.abs(x - cx) < rx)
            else:
                inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
            image[inside] = colour
    elif pattern == 2:
        image = rng.uniform(0, 255, (height, width, channels))
    else:
        period = rng.uniform(0.05, 0.3)
        angle = rng.uniform(0, np.pi)
        wave = np.sin((np.cos(angle) * x + np.sin(angle) * y) / period * 2 * np.pi)
        image = 127.5 + 100 * wave[:, :, None] + rng.normal(0, 10, (height, width, channels))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue()


# --- what the prepared model gets --------------------------------------------------


def base64_variant(data: bytes, index: int) -> bytes:
    """Base64 text as real clients send it, a different variant for each index.

    Standard and URL-safe alphabets, padded and not, MIME line breaks and
    ``data:`` prefixes (one with the wrong media type): the graph must take them all.
    """
    standard = base64.b64encode(data)
    variant = index % 5
    if variant == 0:
        return standard
    if variant == 1:
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    if variant == 2:
        return b"data:image/png;base64," + standard
    if variant == 3:
        return b"\r\n".join(standard[i:i + 76] for i in range(0, len(standard), 76)) + b"\n"
    return b"data:image/jpeg;base64," + base64.urlsafe_b64encode(data)


def image_pixels(sample: SampleImage, spec: ImageSpec) -> np.ndarray:
    """float32 ``[h, w, c]`` in 0..255 at the model's size, as the input layer computes them.

    Exact in numpy when the sample was generated at the model's size (resizing
    leaves such images untouched); otherwise the in-graph ops run eagerly.
    """
    target = (spec.height, spec.width, spec.channels)
    if sample.pixels is not None and sample.pixels.shape == target:
        return sample.pixels.astype(np.float32)
    import tensorflow as tf

    from modelprep.input_ops import decode_image, resize

    try:
        pixels = resize(decode_image(tf.constant(sample.data), spec.channels), spec)
    except tf.errors.InvalidArgumentError as exc:
        raise ModelprepError(f"sample image {sample.name} does not decode: "
                             f"{first_line(exc)}") from exc
    return pixels.numpy()



@dataclass(frozen=True)
class Feed:
    """One batch for both models: what the prepared model gets, and what the original
    gets for the same items."""

    prepared: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    """Input name of the prepared model to the value its original counterpart gets:
    the model values (normalised, dequantized) of the image input, the (dequantized)
    tensor for the others. Still to be reshaped and cast to the original's input."""
    pixels: np.ndarray | None = None
    """The image input's 0..255 pixels ``[n, h, w, c]`` (decoded and resized as the graph
    does), for a reference preprocessing; None without an image input or `with_reference`."""


def build_feed(metadata: ModelMetadata, images: tuple[SampleImage, ...], count: int,
               rng: np.random.Generator, *, first_index: int = 0,
               with_reference: bool = True) -> Feed:
    """Inputs for `count` items; `images` has `count` entries when the model takes images.
    Without `with_reference`, encoded images are not decoded here (``reference`` then
    lacks them): warmup requests need only what the prepared model gets."""
    prepared: dict[str, np.ndarray] = {}
    reference: dict[str, np.ndarray] = {}
    pixels = None
    for spec in metadata.inputs:
        if spec.kind == "tensor":
            prepared[spec.name], reference[spec.name] = tensor_sample(spec, count, rng)
            continue
        image = spec.image
        assert image is not None  # the metadata guarantees it for image kinds
        encoded = spec.kind in ("image_bytes", "image_base64")
        if not encoded or with_reference:
            pixels = np.stack([image_pixels(s, image) for s in images])
            values = normalize(pixels, image.normalization)
        if spec.kind == "image_bytes":
            prepared[spec.name] = np.array([s.data for s in images], dtype=object)
        elif spec.kind == "image_base64":
            prepared[spec.name] = np.array(
                [base64_variant(s.data, first_index + i) for i, s in enumerate(images)],
                dtype=object)
        else:  # quantized_pixels, pixels: [n, h, w, c] or the model's own shape
            values = values.reshape(_batch_shape(spec, count))
            q = spec.quantization
            if q is not None:
                ints = quantize(values, q)
                prepared[spec.name], values = ints, dequantize(ints, q)
            else:
                values = to_dtype(values, spec.dtype)
                prepared[spec.name] = values
        if not encoded or with_reference:
            reference[spec.name] = values
    return Feed(prepared, reference, pixels if with_reference else None)


def to_dtype(values: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
    """Model values to an input's dtype: integers rounded and clipped, as the graph does
    (`modelprep.input_ops.to_dtype`); a bare cast would truncate and wrap."""
    target = np.dtype(dtype)
    if not np.issubdtype(target, np.integer):
        return np.asarray(values).astype(target)
    info = np.iinfo(target)
    return np.clip(np.rint(values), info.min, info.max).astype(target)


def tensor_sample(spec: InputSpec, count: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic values for a pass-through input: (what the prepared model gets, what
    the original gets). They differ only when the input is quantized."""
    shape = _batch_shape(spec, count)
    dtype = spec.dtype
    if spec.quantization is not None:
        lo, hi = QUANT_DTYPES[spec.quantization.dtype]
        ints = rng.integers(lo, hi, size=shape, endpoint=True).astype(spec.quantization.dtype)
        return ints, dequantize(ints, spec.quantization)
    if dtype in ("float16", "float32", "float64"):
        value = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    elif dtype == "bool":
        value = rng.uniform(size=shape) < 0.5
    elif dtype in ("int8", "uint8", "int16", "uint16", "int32", "int64", "uint32", "uint64"):
        value = rng.integers(0, 10, size=shape).astype(dtype)
    else:
        raise SpecMismatch(f"input {spec.name!r} is {dtype}: sample values cannot be "
                           "generated for it")
    return value, value


def _batch_shape(spec: InputSpec, count: int) -> tuple[int, ...]:
    if not spec.shape:
        raise SpecMismatch(f"input {spec.name!r} is a scalar; a batch cannot be fed to it")
    rest = spec.shape[1:]
    if any(d < 0 for d in rest):
        dims = ", ".join(str(d) for d in spec.shape)
        raise SpecMismatch(f"input {spec.name!r} has shape [{dims}]: sample values need "
                           "every dimension but the batch to be fixed")
    if spec.kind in ("quantized_pixels", "pixels") and spec.image is not None:
        image = spec.image
        pixels = image.height * image.width * image.channels
        if int(np.prod(rest)) != pixels:
            raise SpecMismatch(f"input {spec.name!r} has shape [{', '.join(map(str, spec.shape))}]"
                               f" but its image is {image.height}x{image.width}x"
                               f"{image.channels} = {pixels} values")
    return (count, *rest)
