"""How much work decoding an image will be, read from its structure before any pixel exists.

The pixel limit (`functions.request.images`) bounds one picture decoded once. Two formats
make a decoder do that work many times over, within a small file:

* **GIF**: TensorFlow's decoder (giflib's ``DGifSlurp``) decodes *every* frame and keeps
  them all, although the model only ever looks at the first. A 100 KB GIF of hundreds of
  full frames, or one whose later frame is huge, costs seconds and gigabytes. So a GIF is
  handed to the model untouched only when its structure shows exactly one frame; any
  other GIF (animated, or with anything after its first frame that is not the trailer)
  becomes its first frame alone, decoded by `functions.pixels` exactly as TensorFlow
  decodes a first frame and re-encoded as PNG. Later frames are never decoded, whatever
  their number or size, so no frame-count limit is needed.
* **JPEG**: a progressive JPEG is decoded scan by scan, each scan a pass over every block
  of the image; thousands of repeated scans of a few bytes each cost half a minute of CPU
  in a 200 KB file. The scans (SOS markers) are counted by walking the segments and the
  entropy-coded data between them; more than ``MAX_JPEG_SCANS`` is a 413. Real
  progressive JPEGs have about 10 scans (libjpeg's default script), baseline ones 1 to 3.

Walking is linear in the file: segments are stepped over by their lengths and the end of
each scan is found with one regular-expression search in C.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from functions.errors import InvalidImage, PayloadTooLarge

MAX_JPEG_SCANS = 100
"""The default of ``MAX_JPEG_SCANS``: ten times what real progressive JPEGs use, and at
25 megapixels still under half a second of extra decoding."""
MAX_JPEG_SEGMENTS = 10_000
"""Marker segments a JPEG may have; real files, ICC profiles split in 255 parts and all,
have a few hundred at most."""
MAX_GIF_STEPS = 100_000
"""GIF blocks and sub-blocks walked looking for a second frame before the GIF is taken to
be animated (and re-encoded from its first frame) without looking further."""

_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""The end of a scan's entropy-coded data: 0xFF that is neither stuffing (FF 00), a restart
marker (FF D0-D7) nor fill (FF FF)."""
_FF_RUN = re.compile(rb"\xff+")


def check_jpeg_scans(data: bytes, where: str, max_scans: int) -> int:
    """The number of scans in a JPEG; `PayloadTooLarge` past ``max_scans`` or too many
    segments. A truncated or corrupt file ends the count: the decoder refuses it later."""
    scans = 0
    pos = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        run = _FF_RUN.match(data, pos)
        if run is None:
            found = data.find(b"\xff", pos)  # junk between segments, skipped as libjpeg does
            if found < 0:
                return scans
            run = _FF_RUN.match(data, found)
            assert run is not None
        if run.end() >= len(data):
            return scans
        marker = data[run.end()]
        pos = run.end() + 1
        if marker == 0xD9:  # end of image: the decoder stops here
            return scans
        if marker in _JPEG_STANDALONE or marker == 0x00:
            continue
        if pos + 2 > len(data):
            return scans
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            return scans
        pos += length
        if marker == 0xDA:
            scans += 1
            if scans > max_scans:
                raise PayloadTooLarge(
                    f"{where} is a JPEG of more than {max_scans} scans, each one a decoding "
                    f"pass over the whole image; the limit is {max_scans} scans "
                    "(MAX_JPEG_SCANS); save it as a baseline JPEG or a PNG before sending")
            end = _JPEG_NEXT_MARKER.search(data, pos)
            if end is None:
                return scans
            pos = end.start()
    raise PayloadTooLarge(f"{where} is a JPEG of more than {MAX_JPEG_SEGMENTS:,} marker "
                          f"segments; the limit is {MAX_JPEG_SEGMENTS:,}; save it again "
                          "with an ordinary encoder before sending")


def gif_is_single_frame(data: bytes) -> bool:
    """True only when the GIF's blocks show one frame followed by the trailer (or the end
    of the data); anything else, including structure this walk does not follow, is False."""
    if len(data) < 13:
        return True  # too short for any frame: the size check has refused it already
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    steps = 0
    while pos < len(data):
        byte = data[pos]
        if byte == 0x3B:  # trailer
            return frames <= 1
        if byte == 0x21:  # extension: introducer, label, sub-blocks
            pos, steps = _skip_sub_blocks(data, pos + 2, steps)
        elif byte == 0x2C:  # image descriptor, local colour table, LZW size, sub-blocks
            frames += 1
            if frames > 1 or pos + 10 > len(data):
                return False
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            pos, steps = _skip_sub_blocks(data, pos, steps)
        else:
            return False
        if steps > MAX_GIF_STEPS:
            return False
    return frames <= 1


def _skip_sub_blocks(data: bytes, pos: int, steps: int) -> tuple[int, int]:
    """Past a run of sub-blocks (each led by its length) and its zero terminator."""
    while pos < len(data) and steps <= MAX_GIF_STEPS:
        size = data[pos]
        pos += 1 + size
        steps += 1
        if size == 0:
            break
    return pos, steps


def first_frame_png(data: bytes, where: str) -> tuple[bytes, int, int]:
    """The GIF's first frame as PNG, pixel for pixel what TensorFlow takes from the GIF
    (`functions.pixels`: transparent pixels black, a frame smaller than the screen placed
    as TensorFlow places it); returns (png, width, height)."""
    from functions import pixels

    try:
        rgb = pixels.decode_image(data, 3)
    except InvalidImage as exc:
        raise InvalidImage(f"{where}: {exc.message}") from exc
    picture = Image.fromarray(rgb.astype(np.uint8), "RGB")
    buf = io.BytesIO()
    picture.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), picture.width, picture.height
