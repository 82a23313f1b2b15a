"""Phone photos stand upright only through their EXIF orientation tag.

Cameras store the sensor's pixels as they came and record in EXIF how to turn them;
TensorFlow's JPEG decoder ignores that tag, so a portrait photo would reach the model
lying on its side. JPEGs whose tag says to turn them are turned here, and handed on as
lossless PNG; every other image passes through untouched, at the cost of reading its
EXIF header.
"""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import Image, ImageOps, UnidentifiedImageError

from functions.decode import ImageInput
from functions.errors import InvalidImage

ORIENTATION_TAG = 0x0112


def upright(image: ImageInput) -> ImageInput:
    """The image as a person sees it: EXIF orientation applied to JPEGs that carry one."""
    if image.format != "jpeg":
        return image
    try:
        with Image.open(io.BytesIO(image.data)) as img:
            orientation = img.getexif().get(ORIENTATION_TAG, 1)
            if orientation not in range(2, 9):
                return image
            turned = ImageOps.exif_transpose(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{image.where}: the JPEG data is corrupt or truncated "
                           "and could not be decoded") from exc
    buf = io.BytesIO()
    turned.save(buf, format="PNG", compress_level=1)
    return replace(image, data=buf.getvalue(), format="png", width=turned.width,
                   height=turned.height)
