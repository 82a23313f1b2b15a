"""What an image is, before any pixel is decoded: format, size, and which way is up.

Formats are sniffed from magic bytes (headers and file names lie), with a helpful
refusal for HEIC, AVIF, WebP and TIFF. Width x height come from the image header
alone, so a few-KB PNG that claims 30000x30000 pixels is refused before it costs
anything; what the decoder would do many times over (a progressive JPEG's scans, an
animated GIF's frames) is bounded before decoding too (`functions.request.decode_work`).

Phone photos stand upright only through their EXIF orientation tag: cameras store the
sensor's pixels as they came and record in EXIF how to turn them, and TensorFlow's JPEG
decoder ignores that tag, so a portrait photo would reach the model lying on its side.
JPEGs whose tag says to turn them are turned by `upright` and handed on as lossless PNG;
every other image passes through untouched.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, replace

from PIL import Image, ImageOps, UnidentifiedImageError

from functions.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from functions.request.decode_work import (
    MAX_JPEG_SCANS,
    check_jpeg_scans,
    first_frame_png,
    gif_is_single_frame,
)

ORIENTATION_TAG = 0x0112
EXIF_SEARCH_BYTES = 262_144
"""How far into a JPEG its EXIF (or XMP) segment is looked for: it follows the start
marker, at most after a JFIF and an ICC segment (64 KB each at most)."""
_ORIENTATION_MARKERS = (b"Exif\0\0", b"http://ns.adobe.com/xap/1.0/\0")
"""The segments Pillow reads an orientation from: EXIF, and XMP's tiff:Orientation."""
MAX_HEADER_STEPS = 100_000
"""JPEG segments or GIF blocks read to find the size; real files need a handful."""


@dataclass(frozen=True)
class ImageInput:
    data: bytes
    """The encoded image, byte for byte the client's file."""
    format: str
    """One of jpeg, png, gif, bmp: sniffed from the bytes, never taken from a header."""
    width: int
    height: int
    where: str
    """Where in the request it came from, for messages: "image", "images[2]", "file", "body"."""


def inspect_image(data: bytes, where: str, max_pixels: int,
                  max_jpeg_scans: int = MAX_JPEG_SCANS) -> ImageInput:
    """Identify the format from magic bytes and read the size from the header alone.

    Raises UnsupportedMediaType (HEIC, AVIF, WebP, TIFF), InvalidImage (not an image,
    header truncated or corrupt) or PayloadTooLarge (more than `max_pixels` pixels, or a
    JPEG of more than `max_jpeg_scans` scans). A GIF that is not plainly one frame comes
    back as its first frame alone, in PNG: the only frame the model would look at, and
    the only one ever decoded.
    """
    kind = magic_kind(data)
    if kind in _UNSUPPORTED:
        raise UnsupportedMediaType(_UNSUPPORTED[kind].format(where=where))
    if kind is None:
        if len(data) >= 2 and any(magic.startswith(data) for magic in MAGIC_PREFIXES):
            raise InvalidImage(f"{where} is truncated: {len(data)} bytes cannot hold "
                               "an image header")
        raise _not_an_image(data, where)
    width, height = _SIZE_READERS[kind](data, where)
    if width <= 0 or height <= 0:
        raise InvalidImage(f"{where} is a {kind.upper()} of {width}x{height} pixels; "
                           "an image needs a positive width and height")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{where} is {width}x{height} = {width * height:,} pixels; "
                              f"the limit is {max_pixels:,} pixels; resize it before sending")
    if kind == "jpeg":
        check_jpeg_scans(data, where, max_jpeg_scans)
    elif kind == "gif" and not gif_is_single_frame(data):
        png, width, height = first_frame_png(data, where)
        return ImageInput(data=png, format="png", width=width, height=height, where=where)
    return ImageInput(data=data, format=kind, width=width, height=height, where=where)


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                          b"hevs", b"mif1", b"mif2", b"msf1", b"heif"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
MAGIC_PREFIXES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
_SEND_JPEG = "send JPEG or PNG"
_CANVAS = ("in a mini-program, draw it on a canvas and export it with "
           "wx.canvasToTempFilePath({{fileType: 'jpg'}})")
_UNSUPPORTED = {
    "heic": ("{where} is a HEIC/HEIF image, which is not supported; " + _SEND_JPEG + ". "
             "In a mini-program, pick photos with wx.chooseMedia({{sizeType: ['compressed']}}) "
             "or " + _CANVAS.removeprefix("in a mini-program, ")),
    "avif": "{where} is an AVIF image, which is not supported; " + _SEND_JPEG + "; " + _CANVAS,
    "webp": "{where} is a WebP image, which is not supported; " + _SEND_JPEG + "; " + _CANVAS,
    "tiff": "{where} is a TIFF image, which is not supported; " + _SEND_JPEG,
}


def magic_kind(data: bytes) -> str | None:
    """The format the first bytes announce, supported or not; None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"  # a weak magic: the BMP reader checks the header further
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if data[4:8] == b"ftyp":
        box_end = min(len(data), max(16, int.from_bytes(data[:4], "big")), 256)
        brands = {data[8:12]} | {data[i:i + 4] for i in range(16, box_end - 3, 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heic"
    return None


def _png_size(data: bytes, where: str) -> tuple[int, int]:
    if len(data) < 24:
        raise _truncated(where, "PNG", len(data))
    if data[12:16] != b"IHDR":
        raise InvalidImage(f"{where} is not a valid PNG: its first chunk is not IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _gif_size(data: bytes, where: str) -> tuple[int, int]:
    """The logical screen, grown to the first frame if that frame lies outside it (as Pillow
    does)."""
    if len(data) < 13:
        raise _truncated(where, "GIF", len(data))
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    in_extension = False
    for _ in range(MAX_HEADER_STEPS):
        if pos >= len(data):
            break
        byte = data[pos]
        if in_extension:  # sub-blocks, each led by its length, up to a zero length
            pos += 1 + byte
            in_extension = byte != 0
        elif byte == 0x2C:  # image descriptor: left, top, width, height
            if pos + 9 > len(data):
                break
            left, top, frame_w, frame_h = struct.unpack("<HHHH", data[pos + 1:pos + 9])
            return max(width, left + frame_w), max(height, top + frame_h)
        elif byte == 0x21:  # extension introducer and label
            pos += 2
            in_extension = True
        elif byte == 0x00:  # stray block terminator, which some encoders write
            pos += 1
        elif byte == 0x3B:
            raise InvalidImage(f"{where} is a GIF without any frame")
        else:
            raise InvalidImage(f"{where} is a corrupt GIF: unexpected byte 0x{byte:02x} "
                               f"at offset {pos}")
    else:
        raise InvalidImage(f"{where} is a corrupt GIF: no frame in its first "
                           f"{MAX_HEADER_STEPS:,} blocks")
    raise _truncated(where, "GIF", len(data))


_BMP_INFO_HEADERS = (40, 52, 56, 64, 108, 124)


def _bmp_size(data: bytes, where: str) -> tuple[int, int]:
    if len(data) < 18:
        raise _truncated(where, "BMP", len(data))
    header_size = int.from_bytes(data[14:18], "little")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        if len(data) < 22:
            raise _truncated(where, "BMP", len(data))
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    if header_size not in _BMP_INFO_HEADERS:
        raise _not_an_image(data, where)
    if len(data) < 26:
        raise _truncated(where, "BMP", len(data))
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # a negative height means rows stored top-down


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x00, 0x01, 0xD8, *range(0xD0, 0xD8)})
_FF_RUN = re.compile(rb"\xff+")


def _jpeg_size(data: bytes, where: str) -> tuple[int, int]:
    """Walk the marker segments to the first SOFn; its header holds height and width."""
    pos = 2
    for _ in range(MAX_HEADER_STEPS):
        if pos < len(data) and data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)  # skip junk between segments, as libjpeg does
            if pos < 0:
                break
        run = _FF_RUN.match(data, pos)
        if run is None or run.end() >= len(data):
            break
        marker = data[run.end()]
        pos = run.end() + 1
        if marker in _JPEG_SOF:
            if pos + 7 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            return width, height
        if marker in (0xD9, 0xDA):
            raise InvalidImage(f"{where} is a corrupt JPEG: no frame header (SOF) "
                               "before its image data")
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > len(data):
            break
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            raise InvalidImage(f"{where} is a corrupt JPEG: bad segment length at offset {pos}")
        pos += length
    else:
        raise InvalidImage(f"{where} is a corrupt JPEG: no frame header (SOF) in its first "
                           f"{MAX_HEADER_STEPS:,} segments")
    raise _truncated(where, "JPEG", len(data))


_SIZE_READERS = {"jpeg": _jpeg_size, "png": _png_size, "gif": _gif_size, "bmp": _bmp_size}


def _truncated(where: str, kind: str, size: int) -> InvalidImage:
    return InvalidImage(f"{where} is a truncated {kind}: its {size:,} bytes end before "
                        "the header that gives its size")


def _not_an_image(data: bytes, where: str) -> InvalidImage:
    head = data[:64].lstrip()
    if head[:1] in (b"{", b"["):
        hint = "it looks like JSON: send JSON with Content-Type: application/json"
    elif head[:5].lower() == b"data:" or (len(head) >= 16 and _BASE64_BYTES.fullmatch(head)):
        hint = ("it looks like base64 text: send the decoded bytes, or JSON "
                '{"image": "<base64>"} with Content-Type: application/json')
    elif head[:1] == b"<":
        hint = "it looks like HTML or XML"
    else:
        hint = f"it starts with the bytes {data[:8].hex(' ')}"
    return InvalidImage(f"{where} is not an image (expected JPEG, PNG, GIF or BMP); {hint}")


def upright(image: ImageInput) -> ImageInput:
    """The image as a person sees it: EXIF orientation applied to JPEGs that carry one."""
    if image.format != "jpeg" or not any(image.data.find(marker, 0, EXIF_SEARCH_BYTES) >= 0
                                         for marker in _ORIENTATION_MARKERS):
        return image  # no EXIF or XMP segment, so no orientation: Pillow need not open it
    try:
        with Image.open(io.BytesIO(image.data), formats=["JPEG"]) as img:
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


_BASE64_BYTES = re.compile(rb"[A-Za-z0-9+/=_\-\s]+")
