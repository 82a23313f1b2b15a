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
    InvalidJSON,
    InvalidMultipart,
    InvalidOption,
    MissingImage,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    clip,
)
from functions.httpio import HttpRequest
from functions.request.cloudfiles import CloudFile, cloud_file, fetch_cloud_files
from functions.request.images import ImageInput, inspect_image, magic_kind


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

Pending = tuple[str, bytes | str | CloudFile]
"""An image not yet checked: (where, file bytes, base64 text or a cloud file id)."""


def parse_predict_request(request: HttpRequest, settings: Settings) -> PredictRequest:
    """Read the images and options of a predict request; raise a `ServiceError` if it is bad."""
    body = bytes(request.body)
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"the request body is {len(body):,} bytes; "
                              f"the limit is {settings.max_body_bytes:,} bytes")
    body = decode_content_encoding(body, request.headers.get("content-encoding", ""),
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
    images = tuple(_checked_image(where, raw, settings.max_image_pixels,
                                  settings.max_jpeg_scans)
                   for where, raw in fetch_cloud_files(pending, settings))
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
    if any(space in s for space in _SPACES):  # 1 µs to look, 15 µs to copy 26 KB
        s = s.translate(_WHITESPACE)
    if not s:
        raise MissingImage(f"{where} is empty")
    if _PATH_OR_URL.match(s):
        raise InvalidBase64(f"{where} looks like a file path or URL ({clip(s)}), which the "
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
        what = "'=' before the end" if char == "=" else f"the character {clip(char)}"
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
    raise UnsupportedMediaType(f"Content-Type {clip(media_type)} is not supported; "
                               f"send {_ACCEPTED_TYPES}")


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    try:
        media_type, params = parse_options_header(header)
    except Exception as exc:  # werkzeug's parser is lenient; this is a guard
        raise UnsupportedMediaType(f"Content-Type {clip(header)} cannot be parsed; "
                                   f"send {_ACCEPTED_TYPES}") from exc
    return media_type.strip().lower(), params


def _sniff_media_type(body: bytes) -> str:
    """No Content-Type: a JSON object or an image is recognised, anything else is refused."""
    if body.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"{"):
        return "application/json"
    if magic_kind(body) is not None:
        return "application/octet-stream"
    raise UnsupportedMediaType("the request has no Content-Type and its body is neither a JSON "
                               f"object nor an image; send {_ACCEPTED_TYPES}")


def decode_content_encoding(body: bytes, header: str, limit: int) -> bytes:
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > 1:
        raise UnsupportedMediaType(f"Content-Encoding {clip(header)} applies "
                                   f"{len(codings)} codings; send at most one, gzip")
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, "gzip", limit)
        elif coding == "deflate":
            body = _inflate(body, zlib.MAX_WBITS, "deflate", limit)
        else:
            raise UnsupportedMediaType(f"Content-Encoding {clip(coding)} is not supported; "
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
    kind = magic_kind(body)
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


def _json_image(value: Any, where: str) -> str | CloudFile:
    if isinstance(value, dict) and "file_id" in value:  # wx.cloud.uploadFile's fileID
        return cloud_file(value, where)
    if isinstance(value, dict) and "b64" in value:  # TF Serving's form: {"b64": "..."}
        if set(value) != {"b64"}:
            others = ", ".join(clip(key, 20) for key in sorted(value) if key != "b64")
            raise BadRequest(f'{where} must be {{"b64": "<base64>"}} alone; '
                             f"remove {clip(others, 60)}")
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
            label = clip(name, 64)
            where = label if counts[name] == 1 else f"{label}[{seen[name]}]"
            seen[name] += 1
            if isinstance(value, str) and plus_fix:
                value = value.replace(" ", "+")  # form decoding turned '+' into ' '
            pending.append((where, value))
        elif name in options:
            raise InvalidOption(f"the field {clip(name)} is given more than once")
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
              or (name in _IMAGE_FIELDS and magic_kind(data) is not None))
    if binary:
        return name or "file", data
    if not name:
        raise InvalidMultipart(f"part {index + 1} has no name in its Content-Disposition")
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMultipart(f"the field {clip(name)} is not UTF-8 text") from exc


def _multipart_problem(state: State, boundary: str, parsed: int) -> str:
    shown = clip(boundary)
    if state == State.PREAMBLE:
        return f"the multipart body has no boundary line --{shown} (from Content-Type)"
    if state == State.PART:
        return (f"part {parsed + 1} of the multipart body has unreadable headers or "
                "no Content-Disposition")
    return f"the multipart body ends before its closing boundary --{shown}--"


# -- images --------------------------------------------------------------------------------


def _checked_image(where: str, raw: bytes | str, max_pixels: int, max_jpeg_scans: int
                   ) -> ImageInput:
    data = decode_base64(raw, where) if isinstance(raw, str) else raw
    if not data:
        raise MissingImage(f"{where} is empty (0 bytes)")
    return inspect_image(data, where, max_pixels, max_jpeg_scans)


# -- text helpers --------------------------------------------------------------------------

_JSON_TYPE = re.compile(r"(?:application|text)/json|application/[^/\s]+\+json")
_DATA_URL = re.compile(r"data:[^,]*;base64,", re.IGNORECASE)
_PATH_OR_URL = re.compile(r"(?:https?|wxfile|file|ftp)://|/(?:tmp|storage|var|data)/",
                          re.IGNORECASE)
_SPACES = " \t\r\n\f\v"
_WHITESPACE = str.maketrans("", "", _SPACES)
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/\-_]")
_STANDARD_ONLY = re.compile(r"[+/]")
_URLSAFE_ONLY = re.compile(r"[-_]")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
