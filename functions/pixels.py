"""Image preprocessing in Python, pixel for pixel what the wrapped graph does.

A backend that runs the bare model (LiteRT, say) receives the client's encoded
images and must build the exact tensor `modelprep.input_ops` builds inside a
wrapped SavedModel, with Pillow and numpy instead of TensorFlow, so that a
zip-sized function answers as the full one does. Each step copies the graph:

* Decoding (`decode_image`) gives the graph's pixels bit for bit, quirks
  included, for JPEG, PNG, GIF and BMP:

  - JPEG: libjpeg with the accurate integer DCT in both; gray is libjpeg's own
    luma channel (Pillow's ``draft("L")``); a CMYK JPEG cannot become gray.
  - PNG: a colour PNG becomes gray with libpng's fixed-point formula, through
    its gamma tables when the file has an sRGB chunk or a significant gAMA
    (libpng does that inside the graph's PNG decoder). 16-bit samples keep
    their high byte; only 16-bit *colour* to gray differs, by at most one
    level, because Pillow never exposes the low byte of a colour sample.
  - GIF: the first frame; transparent pixels are black, and a first frame
    smaller than the screen gives TensorFlow's frame-sized, screen-positioned
    picture.
  - BMP: TensorFlow's own reader, repeated in numpy: 8-bit pixels are gray
    levels (the palette is ignored), 24 and 32 bits are BGR(A), and anything
    else, or a file whose size is not exactly header plus rows, is refused.

  Gray from GIF and BMP uses Pillow's ``"L"`` integer formula, as the graph does.
* Resizing (`resize`) is the antialiased bilinear (triangle) filter on float
  pixels, as ``tf.image.resize(antialias=True)`` computes it; the two round
  differently in float32, by less than `RESIZE_BOUND`.
* ``pad`` and ``crop`` compute the scaled size in float32 with round-half-even,
  as the graph does, so the picture lands on the same pixels.
* Normalisation uses the `modelmeta` formulas in float32.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from functions.errors import InvalidImage
from modelmeta import ImageSpec, Normalization

RESIZE_BOUND = 0.01
"""Largest difference, in pixel units (0..255), between `resize` and the graph's
``tf.image.resize(method="bilinear", antialias=True)`` on the same float pixels.
tests/litert/test_preprocess.py measures it on noise from 1x1 to 3000x2000 pixels in
every resize mode: at most 0.0036, i.e. 1.4e-5 after ``unit`` normalisation."""

_PNG_GRAY = (9797, 19234, 3737)
"""libpng's fixed-point weights for RGB to gray with (0.299, 0.587), out of 32768."""

_SRGB_GAMMA = 45455
"""The file gamma libpng assumes for a PNG with an sRGB chunk, in 1/100000."""

_CORRUPT = "the image data is corrupt or truncated and could not be decoded"
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error,
                  UnidentifiedImageError, Image.DecompressionBombError)


def image_batch(encoded: Sequence[bytes], spec: ImageSpec) -> np.ndarray:
    """Encoded images to normalised float32 pixels ``[n, height, width, channels]``."""
    out = np.empty((len(encoded), spec.height, spec.width, spec.channels), np.float32)
    for i, data in enumerate(encoded):
        out[i] = resize(decode_image(data, spec.channels), spec)
    return normalize(out, spec.normalization)


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """Encoded JPEG, PNG, GIF (first frame) or BMP to float32 pixels ``[h, w, channels]``.

    Raises `InvalidImage` for anything the graph would refuse to decode.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        if data[:3] == b"\xff\xd8\xff":
            pixels = _jpeg(data, channels)
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            pixels = _png(data, channels)
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            pixels = _gif(data, channels)
        elif data[:2] == b"BM":
            pixels = _bmp(data, channels)
        else:
            raise InvalidImage("the data is not a JPEG, PNG, GIF or BMP image")
    except _DECODE_ERRORS as exc:
        raise InvalidImage(_CORRUPT) from exc
    return pixels.astype(np.float32).reshape(pixels.shape[0], pixels.shape[1], channels)


def _open(data: bytes, fmt: str) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=[fmt])
    return image


def _jpeg(data: bytes, channels: int) -> np.ndarray:
    with _open(data, "JPEG") as image:
        if channels == 3:
            return np.asarray(image.convert("RGB"))
        image.draft("L", image.size)  # libjpeg's gray output, as decode_jpeg(channels=1)
        if image.mode != "L":
            raise InvalidImage(f"a {image.mode} JPEG cannot be decoded to gray; "
                               "send an RGB or gray JPEG, or a PNG")
        return np.asarray(image)


def _png(data: bytes, channels: int) -> np.ndarray:
    with _open(data, "PNG") as image:
        image.load()
        if image.mode in ("I", "I;16", "I;16B", "I;16L"):
            gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
            return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
        if channels == 3:
            return np.asarray(image.convert("RGB"))
        if image.mode in ("1", "L", "LA"):
            return np.asarray(image.convert("L"))
        return _libpng_gray(np.asarray(image.convert("RGB")), _png_gamma(image))


def _png_gamma(image: Image.Image) -> int | None:
    """The file gamma libpng corrects with during RGB to gray, or None when it does not."""
    if "srgb" in image.info:
        gamma = _SRGB_GAMMA
    elif image.info.get("gamma"):
        gamma = int(round(float(image.info["gamma"]) * 100000))
    else:
        return None
    significant = gamma < 95000 or gamma > 105000  # libpng's PNG_GAMMA_THRESHOLD
    return gamma if significant else None


def _libpng_gray(rgb: np.ndarray, gamma: int | None) -> np.ndarray:
    """libpng's ``png_do_rgb_to_gray`` for 8-bit samples; gray pixels stay as they are."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    rc, gc, bc = _PNG_GRAY
    if gamma is None:
        luma = (rc * r + gc * g + bc * b) >> 15
    else:
        to_linear = _gamma_table(int(np.floor(1e10 / gamma + 0.5)))
        from_linear = _gamma_table(gamma)
        r_lin, g_lin, b_lin = to_linear[r], to_linear[g], to_linear[b]
        luma = from_linear[(rc * r_lin + gc * g_lin + bc * b_lin + 16384) >> 15]
    is_gray = (r == g) & (g == b)
    return np.where(is_gray, r, luma).astype(np.uint8)


def _gamma_table(exponent: int) -> np.ndarray:
    """libpng's ``png_build_8bit_table``: ``round(255 * (i/255) ** (exponent / 1e5))``."""
    i = np.arange(256, dtype=np.float64)
    table = np.floor(255.0 * np.power(i / 255.0, exponent * 1e-5) + 0.5)
    table[0], table[255] = 0, 255
    return table.astype(np.int64)


def _gif(data: bytes, channels: int) -> np.ndarray:
    with _open(data, "GIF") as image:
        tile = getattr(image, "tile", None)  # the first frame's placement, once opened
        left, top, right, bottom = tile[0].extents if tile else (0, 0, *image.size)
        image.load()
        index = np.asarray(image) if image.mode in ("P", "L") else None
        rgb = np.array(image.convert("RGB"))
        transparency = image.info.get("transparency")
    if index is not None and isinstance(transparency, int):
        rgb[index == transparency] = 0
    height, width = bottom - top, right - left
    if (left, top, width, height) != (0, 0, rgb.shape[1], rgb.shape[0]):
        # TensorFlow's reader makes a frame-sized picture and fills it from screen
        # coordinates: black above and left of the frame, the frame cut at right and bottom.
        framed = np.zeros((height, width, 3), np.uint8)
        framed[top:height, left:width] = rgb[top:height, left:width]
        rgb = framed
    return rgb if channels == 3 else _pillow_gray(rgb)


def _pillow_gray(rgb: np.ndarray) -> np.ndarray:
    """Pillow's ``convert("L")``: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).astype(np.uint8)


def _bmp(data: bytes, channels: int) -> np.ndarray:
    """TensorFlow's BMP reader: uncompressed 8, 24 or 32 bits, rows padded to 4 bytes."""
    if len(data) < 32:
        raise InvalidImage(f"the BMP is truncated: {len(data)} bytes cannot hold its header")
    offset, = struct.unpack_from("<i", data, 10)
    width, height = struct.unpack_from("<ii", data, 18)
    bits, = struct.unpack_from("<h", data, 28)
    depth = bits // 8
    if depth not in (1, 3, 4):
        raise InvalidImage(f"a BMP of {bits} bits per pixel cannot be decoded; send an 8-, "
                           "24- or 32-bit BMP, or a PNG")
    if width <= 0 or height == 0 or offset < 0:
        raise InvalidImage(f"the BMP header is corrupt (width {width}, height {height})")
    rows = abs(height)
    row_size = (depth * width + 3) // 4 * 4
    if width * rows >= 2**31 // 8 or len(data) - offset - row_size * rows != 0:
        raise InvalidImage(f"the BMP's size ({len(data)} bytes) does not match its header "
                           f"({offset} + {rows} rows of {row_size} bytes); it may be "
                           "compressed or truncated")
    raw = np.frombuffer(data, np.uint8, count=row_size * rows, offset=offset)
    pixels = raw.reshape(rows, row_size)[:, :width * depth].reshape(rows, width, depth)
    if height > 0:
        pixels = pixels[::-1]  # stored bottom-up
    rgb = np.repeat(pixels, 3, axis=2) if depth == 1 else pixels[..., 2::-1]
    return rgb if channels == 3 else _pillow_gray(rgb)


def resize(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Resize float pixels ``[h, w, c]`` to the spec's size, leaving exact sizes untouched.

    ``stretch`` ignores the aspect ratio; ``pad`` fits the whole image and fills
    the rest with background (white when the normalisation inverts, else black);
    ``crop`` fills the frame and cuts the overflow, centred.
    """
    height, width = pixels.shape[:2]
    if (height, width) == (spec.height, spec.width):
        return pixels
    if spec.resize == "stretch":
        return _bilinear(pixels, spec.height, spec.width)
    ratio = np.array([spec.height, spec.width], np.float32) / np.array([height, width],
                                                                         np.float32)
    if spec.resize == "pad":
        new_h, new_w = _scaled_size(height, width, ratio.min())
        fitted = _bilinear(pixels, new_h, new_w)
        top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
        background = 255.0 if spec.normalization.invert else 0.0
        out = np.full((spec.height, spec.width, pixels.shape[2]), background, np.float32)
        out[top:top + new_h, left:left + new_w] = fitted
        return out
    new_h, new_w = _scaled_size(height, width, ratio.max())
    filled = _bilinear(pixels, new_h, new_w)
    top, left = (new_h - spec.height) // 2, (new_w - spec.width) // 2
    return filled[top:top + spec.height, left:left + spec.width]


def _scaled_size(height: int, width: int, scale: np.float32) -> tuple[int, int]:
    """``max(round(size * scale), 1)`` in float32 with half-to-even, as ``tf.round``."""
    size = np.array([height, width], np.float32) * np.float32(scale)
    new = np.maximum(np.rint(size).astype(np.int64), 1)
    return int(new[0]), int(new[1])


def _bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of float pixels, one channel at a time in Pillow's "F"."""
    if pixels.shape[:2] == (height, width):
        return pixels
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c], np.float32), "F")
                   .resize((width, height), Image.Resampling.BILINEAR))
        for c in range(pixels.shape[2])
    ]
    return np.stack(channels, axis=-1)


def normalize(pixels: np.ndarray, norm: Normalization) -> np.ndarray:
    """0..255 float pixels to model values, per the `modelmeta` formulas, in float32."""
    pixels = pixels.astype(np.float32, copy=False)
    if norm.invert:
        pixels = np.float32(255.0) - pixels
    if norm.mode == "unit":
        return pixels / np.float32(255.0)
    if norm.mode == "symmetric":
        return pixels / np.float32(127.5) - np.float32(1.0)
    if norm.mode == "meanstd":
        mean = np.asarray(norm.mean, np.float32)
        std = np.asarray(norm.std, np.float32)
        return (pixels - mean) / std
    return pixels
