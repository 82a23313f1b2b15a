"""Turn any predict request, from any platform and any client, into checked image bytes.

Mini-programs and HTTP clients send the same photo in many shapes: JSON with base64 in
every dialect (standard, URL-safe, unpadded, wrapped, `data:` URLs with wrong media
types), `wx.uploadFile` multipart with odd file names and wrong part types, form posts
that turned `+` into spaces, raw bytes, gzip bodies. Every platform binding hands its
`HttpRequest` to `parse_predict_request`, so those dialects are handled once, here.

Everything a client can get wrong ends as a `ServiceError` with a message written for
that client, and every limit is checked before it costs anything: body size before
parsing, decompressed size while inflating, image count before decoding base64, and
width x height from the image header before a single pixel is decoded (a few-KB PNG can
claim 30000x30000). The format is sniffed from the bytes; headers and file names lie.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, State

from functions.config import Settings
from functions.errors import (
    BadRequest,
    InvalidBase64,
    InvalidImage,
    InvalidJSON,
    InvalidMultipart,
    InvalidOption,
    MissingImage,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from functions.http import HttpRequest


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


@dataclass(frozen=True)
class PredictRequest:
    images: tuple[ImageInput, ...]
    options: dict[str, Any]
    """Every other field, raw: JSON values, or strings from forms and the query string."""


_IMAGE_FIELDS = ("image", "images")
_ACCEPTED_TYPES = ("application/json, multipart/form-data, application/x-www-form-urlencoded, "
                   "image/* or application/octet-stream")
_MAX_FORM_PARTS = 256
_MAX_FORM_FIELDS = 256
_MAX_HEADER_STEPS = 100_000
"""JPEG segments or GIF blocks read to find the size; real files need a handful."""

Pending = tuple[str, bytes | str]
"""An image not yet checked: (where, file bytes or base64 text)."""


def parse_predict_request(request: HttpRequest, settings: Settings) -> PredictRequest:
    """Read the images and options of a predict request; raise a `ServiceError` if it is bad."""
    body = bytes(request.body)
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the request body is {len(body):,} bytes; "
                              f"the limit is {settings.max_body_bytes:,} bytes")
    body = _decode_content_encoding(body, request.headers.get("content-encoding", ""),
                                    settings.max_body_bytes)
    if not body:
        raise MissingImage("the request body is empty; send an image as JSON "
                           '{"image": "<base64>"}, as a multipart file or as raw bytes')
    media_type, params = _content_type(request.headers.get("content-type", ""))
    pending, options = _parse_body(body, media_type, params)
    query = _query_options(request.query)
    if not pending:
        raise MissingImage('the request has no image; send JSON {"image": "<base64>"} or '
                           '{"images": [...]}, a multipart file part, or the image bytes')
    if len(pending) > settings.max_images:
        raise PayloadTooLarge(f"the request has {len(pending)} images; "
                              f"the limit is {settings.max_images}")
    images = tuple(_checked_image(where, raw, settings.max_image_pixels)
                   for where, raw in pending)
    return PredictRequest(images=images, options={**query, **options})


def decode_base64(text: str, where: str) -> bytes:
    """Decode base64 in any dialect clients send; refuse anything that is not exactly base64.

    Accepts the standard or URL-safe alphabet (not both), with or without padding,
    whitespace anywhere and an optional `data:<any media type>;base64,` prefix.
    """
    s = text.strip()
    if s[:5].lower() == "data:":
        match = _DATA_URL.match(s)
        if match is None:
            raise InvalidBase64(f"{where} is a data: URL without ';base64,'; "
                                "send the image base64-encoded")
        s = s[match.end():]
    s = s.translate(_WHITESPACE)
    if not s:
        raise MissingImage(f"{where} is empty")
    if _PATH_OR_URL.match(s):
        raise InvalidBase64(f"{where} looks like a file path or URL ({_clip(s)}), which the "
                            "server cannot read; send the file's content as base64 (in a "
                            "mini-program: wx.getFileSystemManager().readFile with "
                            "encoding 'base64') or upload it with wx.uploadFile")
    if len(s) % 4 == 0:
        # The common case, padded standard base64, in one C call; every other dialect, and
        # every mistake, goes through the checks below, which say what is wrong.
        try:
            return base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            pass
    payload = s.rstrip("=")
    bad = _NOT_BASE64.search(payload)
    if bad is not None:
        char = bad.group()
        what = "'=' before the end" if char == "=" else f"the character {_clip(char)}"
        raise InvalidBase64(f"{where} is not valid base64: it contains {what}")
    if _STANDARD_ONLY.search(payload) and _URLSAFE_ONLY.search(payload):
        raise InvalidBase64(f"{where} mixes the standard (+/) and URL-safe (-_) base64 "
                            "alphabets; use one of them")
    if len(payload) % 4 == 1:
        raise InvalidBase64(f"{where} is not valid base64: {len(payload):,} characters "
                            "(without padding) cannot be a whole number of bytes; "
                            "it was probably cut short")
    payload = payload.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"{where} is not valid base64") from exc


def sniff_image(data: bytes, where: str, max_pixels: int) -> ImageInput:
    """Identify the format from magic bytes and read the size from the header alone.

    Raises UnsupportedMediaType (HEIC, AVIF, WebP, TIFF), InvalidImage (not an image,
    header truncated or corrupt) or PayloadTooLarge (more than `max_pixels` pixels).
    """
    kind = _magic_kind(data)
    if kind in _UNSUPPORTED:
        raise UnsupportedMediaType(_UNSUPPORTED[kind].format(where=where))
    if kind is None:
        if len(data) >= 2 and any(magic.startswith(data) for magic in _MAGIC_PREFIXES):
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
    return ImageInput(data=data, format=kind, width=width, height=height, where=where)


# -- the request body ----------------------------------------------------------------------


def _parse_body(body: bytes, media_type: str, params: dict[str, str]
                ) -> tuple[list[Pending], dict[str, Any]]:
    if not media_type:
        media_type = _sniff_media_type(body)
    if _JSON_TYPE.fullmatch(media_type):
        return _from_json(body)
    if media_type == "multipart/form-data":
        return _from_fields(_multipart_parts(body, params.get("boundary", "")), plus_fix=False)
    if media_type == "application/x-www-form-urlencoded":
        return _from_fields(_urlencoded_fields(body), plus_fix=True)
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return [("body", body)], {}
    raise UnsupportedMediaType(f"Content-Type {_clip(media_type)} is not supported; "
                               f"send {_ACCEPTED_TYPES}")


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    try:
        media_type, params = parse_options_header(header)
    except Exception as exc:  # werkzeug's parser is lenient; this is a guard
        raise UnsupportedMediaType(f"Content-Type {_clip(header)} cannot be parsed; "
                                   f"send {_ACCEPTED_TYPES}") from exc
    return media_type.strip().lower(), params


def _sniff_media_type(body: bytes) -> str:
    """No Content-Type: a JSON object or an image is recognised, anything else is refused."""
    if body.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"{"):
        return "application/json"
    if _magic_kind(body) is not None:
        return "application/octet-stream"
    raise UnsupportedMediaType("the request has no Content-Type and its body is neither a JSON "
                               f"object nor an image; send {_ACCEPTED_TYPES}")


def _decode_content_encoding(body: bytes, header: str, limit: int) -> bytes:
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > 1:
        raise UnsupportedMediaType(f"Content-Encoding {_clip(header)} applies "
                                   f"{len(codings)} codings; send at most one, gzip")
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, "gzip", limit)
        elif coding == "deflate":
            body = _inflate(body, zlib.MAX_WBITS, "deflate", limit)
        else:
            raise UnsupportedMediaType(f"Content-Encoding {_clip(coding)} is not supported; "
                                       "send the body uncompressed or gzip-compressed")
    return body


def _inflate(body: bytes, wbits: int, name: str, limit: int) -> bytes:
    """Decompress, never producing more than `limit` bytes (a gzip bomb stops here)."""
    out = bytearray()
    rest = body
    try:
        while rest:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise PayloadTooLarge(f"the {name} body decompresses to more than "
                                      f"{limit:,} bytes; the limit is {limit:,} bytes")
            if not inflater.eof:
                raise BadRequest(f"the {name} body is truncated")
            # gzip allows several members and zero padding after the last one.
            rest = inflater.unused_data.lstrip(b"\0") if name == "gzip" else b""
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {name} data, but Content-Encoding "
                         f"says {name}") from exc
    return bytes(out)


def _query_options(query: Any) -> dict[str, Any]:
    options = dict(query or {})
    for name in _IMAGE_FIELDS:
        if name in options:
            raise BadRequest(f"{name} is in the query string; send images in the request body")
    return options


# -- JSON ----------------------------------------------------------------------------------


def _from_json(body: bytes) -> tuple[list[Pending], dict[str, Any]]:
    kind = _magic_kind(body)
    if kind is not None:
        raise InvalidJSON(f"the body is a {kind.upper()} image, not JSON; send it with "
                          f'Content-Type: image/{kind}, or as {{"image": "<base64>"}}')
    doc = _load_json(body)
    if not isinstance(doc, dict):
        raise InvalidJSON('the JSON body must be an object such as {"image": "<base64>"}, '
                          f"not {_json_type(doc)}")
    options = {key: value for key, value in doc.items() if key not in _IMAGE_FIELDS}
    if "image" in doc and "images" in doc:
        raise BadRequest('send either "image" or "images", not both')
    if "image" in doc:
        return [("image", _json_image(doc["image"], "image"))], options
    if "images" not in doc:
        return [], options
    items = doc["images"]
    if not isinstance(items, list):
        raise BadRequest('"images" must be a list of base64 strings, '
                         f"not {_json_type(items)}")
    if not items:
        raise MissingImage('"images" is an empty list')
    return [(f"images[{i}]", _json_image(item, f"images[{i}]"))
            for i, item in enumerate(items)], options


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidJSON("the JSON body is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise InvalidJSON("the JSON body is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from exc
    except ValueError as exc:  # int() refuses more than sys.get_int_max_str_digits()
        raise InvalidJSON("the body is not valid JSON: a number has too many digits") from exc


def _reject_constant(name: str) -> Any:
    raise InvalidJSON(f"the body is not valid JSON: {name} is not a JSON value")


def _json_image(value: Any, where: str) -> str:
    if isinstance(value, dict) and "b64" in value:  # TF Serving's form: {"b64": "..."}
        if set(value) != {"b64"}:
            others = ", ".join(_clip(key, 20) for key in sorted(value) if key != "b64")
            raise BadRequest(f'{where} must be {{"b64": "<base64>"}} alone; '
                             f"remove {_clip(others, 60)}")
        where, value = f"{where}.b64", value["b64"]
    if isinstance(value, str):
        return value
    if value is None:
        raise MissingImage(f"{where} is null")
    raise BadRequest(f'{where} must be a base64 string or {{"b64": "<base64>"}}, '
                     f"not {_json_type(value)}")


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "null"


# -- forms ---------------------------------------------------------------------------------


def _from_fields(parts: list[tuple[str, bytes | str]], *, plus_fix: bool
                 ) -> tuple[list[Pending], dict[str, Any]]:
    """Images are the file parts (bytes) and the text fields named image/images, in order."""
    text_image_names = {name for name, value in parts
                        if isinstance(value, str) and name in _IMAGE_FIELDS}
    if len(text_image_names) > 1:
        raise BadRequest('send either "image" or "images" fields, not both')
    counts = Counter(name for name, value in parts if _is_image_part(name, value))
    seen: Counter[str] = Counter()
    pending: list[Pending] = []
    options: dict[str, Any] = {}
    for name, value in parts:
        if _is_image_part(name, value):
            label = _clip(name, 64)
            where = label if counts[name] == 1 else f"{label}[{seen[name]}]"
            seen[name] += 1
            if isinstance(value, str) and plus_fix:
                value = value.replace(" ", "+")  # form decoding turned '+' into ' '
            pending.append((where, value))
        elif name in options:
            raise InvalidOption(f"the field {_clip(name)} is given more than once")
        else:
            options[name] = value
    return pending, options


def _is_image_part(name: str, value: bytes | str) -> bool:
    return isinstance(value, bytes) or name in _IMAGE_FIELDS


def _urlencoded_fields(body: bytes) -> list[tuple[str, bytes | str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the form body is not UTF-8 text") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict",
                          max_num_fields=_MAX_FORM_FIELDS)
    except UnicodeDecodeError as exc:
        raise BadRequest("a form field is not UTF-8 text once percent-decoded") from exc
    except ValueError as exc:
        raise PayloadTooLarge(f"the form has {text.count('&') + 1:,} fields; "
                              f"the limit is {_MAX_FORM_FIELDS}") from exc
    return list(pairs)


def _multipart_parts(body: bytes, boundary: str) -> list[tuple[str, bytes | str]]:
    """The parts in order: files (and binary image parts) as bytes, text fields as str."""
    if not boundary:
        raise InvalidMultipart("multipart/form-data needs a boundary parameter in Content-Type")
    if len(boundary) > 200 or not boundary.isascii():
        raise InvalidMultipart("the multipart boundary must be at most 200 ASCII characters")
    decoder = MultipartDecoder(boundary.encode("ascii"), max_parts=_MAX_FORM_PARTS)
    decoder.receive_data(body)
    decoder.receive_data(None)
    parts: list[tuple[str, bytes | str]] = []
    current: Field | File | None = None
    chunks: list[bytes] = []
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, (Field, File)):
                current, chunks = event, []
            elif isinstance(event, Data) and current is not None:
                chunks.append(event.data)
                if not event.more_data:
                    part = _multipart_part(current, b"".join(chunks), len(parts))
                    if part is not None:
                        parts.append(part)
            elif isinstance(event, Epilogue):
                return parts
    except ServiceError:
        raise
    except RequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the multipart body has more than {_MAX_FORM_PARTS} parts; "
                              f"the limit is {_MAX_FORM_PARTS}") from exc
    except Exception as exc:  # werkzeug raises ValueError, and worse on hostile input
        raise InvalidMultipart(_multipart_problem(decoder.state, boundary, len(parts))) from exc


def _multipart_part(event: Field | File, data: bytes, index: int
                    ) -> tuple[str, bytes | str] | None:
    name = event.name or ""
    if isinstance(event, File) and not event.filename and not data:
        return None  # an empty file input, as browsers send it
    part_type = parse_options_header(event.headers.get("content-type", ""))[0].lower()
    binary = (isinstance(event, File) or part_type.startswith("image/")
              or part_type == "application/octet-stream"
              or (name in _IMAGE_FIELDS and _magic_kind(data) is not None))
    if binary:
        return name or "file", data
    if not name:
        raise InvalidMultipart(f"part {index + 1} has no name in its Content-Disposition")
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMultipart(f"the field {_clip(name)} is not UTF-8 text") from exc


def _multipart_problem(state: State, boundary: str, parsed: int) -> str:
    shown = _clip(boundary)
    if state == State.PREAMBLE:
        return f"the multipart body has no boundary line --{shown} (from Content-Type)"
    if state == State.PART:
        return (f"part {parsed + 1} of the multipart body has unreadable headers or "
                "no Content-Disposition")
    return f"the multipart body ends before its closing boundary --{shown}--"


# -- images --------------------------------------------------------------------------------


def _checked_image(where: str, raw: bytes | str, max_pixels: int) -> ImageInput:
    data = decode_base64(raw, where) if isinstance(raw, str) else raw
    if not data:
        raise MissingImage(f"{where} is empty (0 bytes)")
    return sniff_image(data, where, max_pixels)


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                          b"hevs", b"mif1", b"mif2", b"msf1", b"heif"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_MAGIC_PREFIXES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
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


def _magic_kind(data: bytes) -> str | None:
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
    for _ in range(_MAX_HEADER_STEPS):
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
                           f"{_MAX_HEADER_STEPS:,} blocks")
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
    for _ in range(_MAX_HEADER_STEPS):
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
                           f"{_MAX_HEADER_STEPS:,} segments")
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


# -- text helpers --------------------------------------------------------------------------

_JSON_TYPE = re.compile(r"(?:application|text)/json|application/[^/\s]+\+json")
_DATA_URL = re.compile(r"data:[^,]*;base64,", re.IGNORECASE)
_PATH_OR_URL = re.compile(r"(?:https?|wxfile|file|ftp)://|/(?:tmp|storage|var|data)/",
                          re.IGNORECASE)
_WHITESPACE = str.maketrans("", "", " \t\r\n\f\v")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/\-_]")
_STANDARD_ONLY = re.compile(r"[+/]")
_URLSAFE_ONLY = re.compile(r"[-_]")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_BASE64_BYTES = re.compile(rb"[A-Za-z0-9+/=_\-\s]+")


def _clip(value: str, limit: int = 40) -> str:
    """A client value safe to echo: printable and short."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)[1:-1] if not shown.isprintable() else shown
