"""functions.request.images.upright: which JPEGs are turned, and that the rest are not opened."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from functions.request import images
from functions.request.images import inspect_image, upright

PIXELS = np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3)  # 10 wide, 20 high
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


def jpeg(**save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG", **save)
    return buf.getvalue()


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[images.ORIENTATION_TAG] = orientation
    return tags.tobytes()


@pytest.mark.parametrize(("save", "size"), [
    ({"exif": exif(6)}, (20, 10)),   # turned a quarter: width and height swap
    ({"exif": exif(3)}, (10, 20)),   # turned half way round
    ({"xmp": XMP}, (20, 10)),        # XMP's tiff:Orientation, which Pillow also honours
])
def test_jpegs_with_an_orientation_are_turned_and_sent_on_as_png(save, size):
    out = upright(inspect_image(jpeg(**save), "image", 10**9))
    assert (out.format, (out.width, out.height)) == ("png", size)
    with Image.open(io.BytesIO(out.data)) as turned:
        assert turned.size == size


@pytest.mark.parametrize("save", [{}, {"exif": exif(1)}])
def test_upright_jpegs_pass_through_untouched(save):
    image = inspect_image(jpeg(**save), "image", 10**9)
    assert upright(image) is image


def test_a_jpeg_without_exif_or_xmp_is_never_opened(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Pillow opened a JPEG that has no orientation to read")

    monkeypatch.setattr(images.Image, "open", refuse)
    image = inspect_image(jpeg(), "image", 10**9)
    assert upright(image) is image
