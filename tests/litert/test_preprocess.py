"""`functions.pixels` against the graph's own ops (`modelprep.input_ops`).

The LiteRT backend is only as right as its Python preprocessing: decoding must
give the graph's pixels bit for bit, resizing must stay within RESIZE_BOUND,
and whatever the graph refuses to decode must be refused too.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from functions import pixels as py
from functions.errors import InvalidImage
from modelmeta import ImageSpec, Normalization

RNG = np.random.default_rng(0)


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_args)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def raw_png(samples: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """A PNG written by hand, for the 16-bit layouts Pillow does not write."""
    height, width = samples.shape[:2]
    data = samples.astype(">u2" if bit_depth == 16 else np.uint8).tobytes()
    row = len(data) // height
    rows = b"".join(b"\x00" + data[i * row:(i + 1) * row] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """Insert an ancillary chunk right after IHDR (8 + 25 bytes in)."""
    return png[:33] + png_chunk(kind, data) + png[33:]


def photo() -> np.ndarray:
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[1][100:260, 50:290]  # flower.jpg, 160x240 RGB


def offset_gif() -> bytes:
    """A GIF whose only frame is 12x10 at (3, 2) on a 20x16 screen."""
    small = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    data = bytearray(encoded(Image.fromarray(small).convert("P", palette=Image.ADAPTIVE,
                                                             colors=16), "GIF"))
    table = 3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0
    pos = 13 + table
    while data[pos] == 0x21:  # skip extensions to the image descriptor
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C
    struct.pack_into("<HH", data, 6, 20, 16)
    struct.pack_into("<HH", data, pos + 1, 3, 2)
    return bytes(data)


def corpus() -> dict[str, bytes]:
    rgb = photo()
    gray = rgb[..., 1]
    rgba = np.dstack([rgb, RNG.integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64)
    png = encoded(Image.fromarray(rgb), "PNG")
    two_frames = io.BytesIO()
    Image.fromarray(rgb).save(two_frames, "GIF", save_all=True,
                              append_images=[Image.fromarray(rgb[::-1].copy())])
    return {
        "jpeg 4:2:0": encoded(Image.fromarray(rgb), "JPEG", quality=90),
        "jpeg 4:4:4": encoded(Image.fromarray(rgb), "JPEG", quality=90, subsampling=0),
        "jpeg 4:2:2": encoded(Image.fromarray(rgb), "JPEG", quality=90, subsampling=1),
        "jpeg progressive": encoded(Image.fromarray(rgb), "JPEG", quality=80,
                                    progressive=True),
        "jpeg gray": encoded(Image.fromarray(gray), "JPEG", quality=90),
        "png rgb": png,
        "png rgba": encoded(Image.fromarray(rgba), "PNG"),
        "png gray": encoded(Image.fromarray(gray), "PNG"),
        "png gray+alpha": encoded(Image.fromarray(np.dstack([gray, rgb[..., 0]]), "LA"), "PNG"),
        "png 1-bit": encoded(Image.fromarray(gray > 128), "PNG"),
        "png palette": encoded(palette, "PNG"),
        "png palette+trns": encoded(palette, "PNG", transparency=3),
        "png 8-bit written by hand": raw_png(rgb, 2, 8),
        "png gAMA 0.45455": with_chunk(png, b"gAMA", struct.pack(">I", 45455)),
        "png gAMA 0.22": with_chunk(png, b"gAMA", struct.pack(">I", 22000)),
        "png gAMA 0.96 (insignificant)": with_chunk(png, b"gAMA", struct.pack(">I", 96000)),
        "png gAMA 0.94": with_chunk(png, b"gAMA", struct.pack(">I", 94000)),
        "png sRGB": with_chunk(png, b"sRGB", b"\x00"),
        "png sRGB+gAMA 0.22": with_chunk(with_chunk(png, b"gAMA", struct.pack(">I", 22000)),
                                         b"sRGB", b"\x00"),
        "png 16-bit gray": raw_png(RNG.integers(0, 65536, (40, 50)), 0, 16),
        "png 16-bit gray+alpha": raw_png(RNG.integers(0, 65536, (40, 50, 2)), 4, 16),
        "gif": encoded(Image.fromarray(rgb), "GIF"),
        "gif transparent": encoded(palette, "GIF", transparency=3),
        "gif animated": two_frames.getvalue(),
        "gif frame smaller than screen": offset_gif(),
        "bmp rgb": encoded(Image.fromarray(rgb), "BMP"),
        "bmp rgba": encoded(Image.fromarray(rgba), "BMP"),
        "bmp gray": encoded(Image.fromarray(gray), "BMP"),
        "bmp palette": encoded(palette, "BMP"),
    }


def graph_decode(data: bytes, channels: int) -> np.ndarray:
    import tensorflow as tf

    from modelprep.input_ops import decode_image

    return decode_image(tf.constant(data), channels).numpy()


CORPUS = corpus()


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_decoding_is_bit_exact(name, channels):
    want = graph_decode(CORPUS[name], channels)
    got = py.decode_image(CORPUS[name], channels)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"{np.mean(got != want):.2%} of the pixels differ"


@pytest.mark.slow
@pytest.mark.parametrize("color_type,channels", [(2, 3), (6, 4)])
def test_16_bit_colour_png_to_gray_is_within_one_level(color_type, channels):
    """The one documented inexact case: Pillow keeps only the high byte of colour samples."""
    data = raw_png(RNG.integers(0, 65536, (64, 64, channels)), color_type, 16)
    diff = np.abs(py.decode_image(data, 1) - graph_decode(data, 1))
    assert diff.max() == 1
    assert np.array_equal(py.decode_image(data, 3), graph_decode(data, 3))


def refused() -> dict[str, tuple[bytes, int, str]]:
    rgb = photo()
    png = encoded(Image.fromarray(rgb), "PNG")
    jpeg = encoded(Image.fromarray(rgb), "JPEG", quality=90)
    bmp = encoded(Image.fromarray(rgb), "BMP")
    return {
        "truncated png": (png[: len(png) // 2], 3, "corrupt or truncated"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], 3, "corrupt or truncated"),
        "png with a bad crc": (png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], 3,
                               "corrupt or truncated"),
        "cmyk jpeg to gray": (encoded(Image.fromarray(rgb).convert("CMYK"), "JPEG"), 1,
                              "a CMYK JPEG cannot be decoded to gray"),
        "1-bit bmp": (encoded(Image.fromarray(rgb[..., 0] > 128), "BMP"), 3,
                      "a BMP of 1 bits per pixel cannot be decoded"),
        "bmp with trailing bytes": (bmp + b"\x00\x00", 3, "does not match its header"),
        "truncated bmp": (bmp[:-7], 1, "does not match its header"),
    }


REFUSED = refused()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_graph_refuses_is_refused_with_a_reason(name):
    data, channels, phrase = REFUSED[name]
    with pytest.raises(InvalidImage) as caught:
        py.decode_image(data, channels)
    assert phrase in caught.value.message


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_graph_refuses_them_too(name):
    import tensorflow as tf

    data, channels, _ = REFUSED[name]
    with pytest.raises(tf.errors.InvalidArgumentError):
        graph_decode(data, channels)


def test_not_an_image_is_refused():
    with pytest.raises(InvalidImage, match="not a JPEG, PNG, GIF or BMP"):
        py.decode_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ", 3)


def test_colour_png_to_gray_keeps_gray_pixels_and_uses_libpng_weights():
    pixels = np.array([[[10, 10, 10], [255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]]],
                      np.uint8)
    gray = py.decode_image(encoded(Image.fromarray(pixels), "PNG"), 1)[0, :, 0]
    # floor((9797 r + 19234 g + 3737 b) / 32768), gray pixels as they are
    assert gray.tolist() == [10, 76, 149, 29, 124]


@pytest.mark.parametrize("mode,invert,want", [
    ("unit", False, [0.0, 0.2, 1.0]),
    ("symmetric", False, [-1.0, -0.6, 1.0]),
    ("raw", False, [0.0, 51.0, 255.0]),
    ("unit", True, [1.0, 0.8, 0.0]),
])
def test_normalize_follows_modelmeta(mode, invert, want):
    pixels = np.array([0.0, 51.0, 255.0], np.float32)
    got = py.normalize(pixels, Normalization(mode, invert=invert))
    assert got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-6)


def test_normalize_meanstd_per_channel():
    pixels = np.array([[[123.675, 116.28, 103.53], [255, 255, 255]]], np.float32)
    norm = Normalization("meanstd", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    got = py.normalize(pixels, norm)
    assert np.allclose(got[0, 0], 0.0, atol=1e-6)
    assert np.allclose(got[0, 1], [(255 - 123.675) / 58.395, (255 - 116.28) / 57.12,
                                   (255 - 103.53) / 57.375], atol=1e-5)


def test_pad_places_the_image_as_the_graph_does():
    """A 10x5 image padded into 28x28: scaled by 2.8 to 28x14, centred with 7 columns each side."""
    pixels = np.full((10, 5, 1), 200.0, np.float32)
    out = py.resize(pixels, ImageSpec(28, 28, 1, resize="pad"))
    assert out.shape == (28, 28, 1)
    columns = np.flatnonzero(out[14, :, 0] > 0)
    assert (columns[0], columns[-1]) == (7, 20)
    white = py.resize(pixels, ImageSpec(28, 28, 1, resize="pad",
                                        normalization=Normalization("unit", invert=True)))
    assert white[0, 0, 0] == 255.0  # background is white when the model inverts


def test_exact_size_is_left_untouched():
    pixels = RNG.uniform(0, 255, (28, 28, 1)).astype(np.float32)
    for mode in ("stretch", "pad", "crop"):
        assert py.resize(pixels, ImageSpec(28, 28, 1, resize=mode)) is pixels


SIZES = [(1, 1), (8, 8), (17, 23), (28, 28), (28, 29), (3, 500), (500, 3), (160, 240),
         (600, 400), (1000, 750), (3000, 2000)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_resize_stays_within_the_documented_bound(mode):
    import tensorflow as tf

    from modelprep.input_ops import resize

    worst = 0.0
    for (height, width), (th, tw, channels) in zip(
            SIZES, [(28, 28, 1), (224, 224, 3), (28, 28, 1), (14, 14, 3), (28, 28, 1),
                    (28, 28, 3), (64, 32, 1), (224, 224, 3), (224, 224, 3), (28, 21, 1),
                    (224, 224, 3)], strict=True):
        spec = ImageSpec(th, tw, channels, resize=mode)
        pixels = RNG.uniform(0, 255, (height, width, channels)).astype(np.float32)
        want = resize(tf.constant(pixels), spec).numpy()
        got = py.resize(pixels, spec)
        assert got.shape == want.shape, (height, width, spec)
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"resize {mode}: max difference {worst:.5f} pixel units")
    assert worst <= py.RESIZE_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_photos_end_to_end_match_the_graph(mode):
    """Encoded photo to normalised batch, both ways, meanstd like an ImageNet model."""
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    from modelprep.input_ops import image_batch

    norm = Normalization("meanstd", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    spec = ImageSpec(224, 224, 3, normalization=norm, resize=mode)
    photos = [encoded(Image.fromarray(p), "JPEG", quality=90)
              for p in load_sample_images().images]
    want = image_batch(tf.constant(photos), spec).numpy()
    got = py.image_batch(photos, spec)
    assert got.shape == want.shape == (2, 224, 224, 3)
    assert np.abs(got - want).max() <= py.RESIZE_BOUND / min(norm.std)
