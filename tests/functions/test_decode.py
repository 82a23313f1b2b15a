"""functions.request.parse and .images: every request shape, limit and client mistake."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import random
import struct
import time
import zlib
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

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
from functions.httpio import Headers, HttpRequest
from functions.request.images import ImageInput, inspect_image
from functions.request.parse import PredictRequest, decode_base64, parse_predict_request

SETTINGS = Settings()


# -- building real inputs ------------------------------------------------------------------


def encode(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB", **params) -> bytes:
    """A real image file of `size`, noisy so its base64 uses every character."""
    rng = random.Random(f"{fmt} {size} {mode}")
    image = Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * len(mode)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


JPEG = encode("JPEG", (64, 48))
PNG = encode("PNG", (33, 21))
GIF = encode("GIF", (17, 9), mode="L")
BMP = encode("BMP", (12, 7))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose IHDR claims width x height (8-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def request(body: bytes = b"", content_type: str | None = None, *,
            query: dict[str, str] | None = None, **headers: str) -> HttpRequest:
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return HttpRequest("POST", "/predict", Headers(all_headers), body, query or {})


def json_request(payload, content_type: str = "application/json", **kwargs) -> HttpRequest:
    return request(json.dumps(payload).encode(), content_type, **kwargs)


def parse(req: HttpRequest, **limits) -> PredictRequest:
    return parse_predict_request(req, Settings(**limits) if limits else SETTINGS)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BOUNDARY = "----WebKitFormBoundaryr8nfGQiYbCHkpVxX"


def multipart(*parts: tuple[dict[str, str], bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body as wx.uploadFile writes it: CRLF lines, closing boundary."""
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def file_part(data: bytes, name: str = "file", filename: str = "tmp.jpg",
              content_type: str | None = "image/jpeg") -> tuple[dict[str, str], bytes]:
    headers = {"Content-Disposition": f'form-data; name="{name}"; filename="{filename}"'}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers, data


def text_part(name: str, value: str) -> tuple[dict[str, str], bytes]:
    return {"Content-Disposition": f'form-data; name="{name}"'}, value.encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def raises(error: type[ServiceError], status: int, phrase: str):
    """pytest.raises for a ServiceError subclass with its status and a phrase of its message."""
    class _Check:
        def __enter__(self):
            self._ctx = pytest.raises(error)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc_info):
            handled = self._ctx.__exit__(*exc_info)
            assert self.info.value.status == status
            assert phrase in self.info.value.message, self.info.value.message
            assert len(self.info.value.message) < 600
            return handled
    return _Check()


# -- JSON and base64 -----------------------------------------------------------------------


def _wrapped(text: str) -> str:
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


BASE64_VARIANTS = {
    "standard": lambda d: base64.b64encode(d).decode(),
    "standard unpadded": lambda d: base64.b64encode(d).decode().rstrip("="),
    "url-safe": lambda d: base64.urlsafe_b64encode(d).decode(),
    "url-safe unpadded": lambda d: base64.urlsafe_b64encode(d).decode().rstrip("="),
    "MIME line breaks": lambda d: _wrapped(base64.b64encode(d).decode()),
    "spaces and tabs": lambda d: " \t".join(base64.b64encode(d).decode()[i:i + 10]
                                             for i in range(0, 10_000, 10)),
    "surrounding whitespace": lambda d: "\n  " + base64.b64encode(d).decode() + " \n",
    "data url": lambda d: "data:image/jpeg;base64," + base64.b64encode(d).decode(),
    "data url, wrong type": lambda d: "data:image/png;base64," + base64.b64encode(d).decode(),
    "data url, no type": lambda d: "data:;base64," + base64.b64encode(d).decode(),
    "data url, octet-stream": lambda d: ("data:application/octet-stream;base64,"
                                         + base64.b64encode(d).decode()),
    "data url, upper case, url-safe": lambda d: ("DATA:IMAGE/JPEG;BASE64,"
                                                 + base64.urlsafe_b64encode(d).decode()),
}


EXPECTED = {"jpeg": ImageInput(JPEG, "jpeg", 64, 48, "image"),
            "png": ImageInput(PNG, "png", 33, 21, "image"),
            "gif": ImageInput(GIF, "gif", 17, 9, "image")}


def test_the_test_images_exercise_both_alphabets_and_all_paddings():
    assert all("+" in b64(i.data) and "/" in b64(i.data) for i in EXPECTED.values())
    assert sorted(len(i.data) % 3 for i in EXPECTED.values()) == [0, 1, 2]


@pytest.mark.parametrize("fmt", EXPECTED)
@pytest.mark.parametrize("variant", BASE64_VARIANTS)
def test_every_base64_variant_gives_the_original_bytes(variant, fmt):
    expected = EXPECTED[fmt]
    text = BASE64_VARIANTS[variant](expected.data)
    assert decode_base64(text, "image") == expected.data
    parsed = parse(json_request({"image": text}))
    assert parsed.images == (expected,)
    assert parsed.options == {}


@pytest.mark.parametrize("variant", ["standard", "url-safe unpadded", "data url, no type"])
def test_tf_serving_b64_objects_are_images(variant):
    text = BASE64_VARIANTS[variant](PNG)
    parsed = parse(json_request({"images": [{"b64": text}, text]}))
    assert [image.data for image in parsed.images] == [PNG, PNG]
    assert [image.where for image in parsed.images] == ["images[0]", "images[1]"]


def test_several_images_keep_their_order_format_and_size():
    files = [JPEG, PNG, GIF, BMP]
    parsed = parse(json_request({"images": [b64(f) for f in files], "top_k": 3}))
    assert [(i.format, i.width, i.height, i.where) for i in parsed.images] == [
        ("jpeg", 64, 48, "images[0]"), ("png", 33, 21, "images[1]"),
        ("gif", 17, 9, "images[2]"), ("bmp", 12, 7, "images[3]")]
    assert [i.data for i in parsed.images] == files
    assert parsed.options == {"top_k": 3}


def test_other_json_keys_are_options_raw():
    payload = {"image": b64(PNG), "top_k": 3, "labels": ["a", "b"], "threshold": 0.5,
               "model": {"name": "dogs", "version": 2}, "flag": None}
    parsed = parse(json_request(payload))
    assert parsed.options == {k: v for k, v in payload.items() if k != "image"}


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "Application/JSON", "text/json",
    "application/vnd.api+json", "application/json;charset=UTF-8"])
def test_json_media_types(content_type):
    assert parse(json_request({"image": b64(PNG)}, content_type)).images[0].data == PNG


def test_json_with_utf8_bom_and_whitespace():
    body = b"\xef\xbb\xbf \n" + json.dumps({"image": b64(PNG)}).encode()
    assert parse(request(body, "application/json")).images[0].data == PNG


@pytest.mark.parametrize("payload, error, status, phrase", [
    ({"image": "x", "images": ["y"]}, BadRequest, 400, 'either "image" or "images"'),
    ({"images": "abc"}, BadRequest, 400, '"images" must be a list'),
    ({"images": {"b64": "abc"}}, BadRequest, 400, '"images" must be a list'),
    ({"images": []}, MissingImage, 400, '"images" is an empty list'),
    ({"image": 12}, BadRequest, 400, "image must be a base64 string"),
    ({"image": ["abc"]}, BadRequest, 400, "not an array"),
    ({"images": [b64(PNG), True]}, BadRequest, 400, "images[1] must be a base64 string"),
    ({"images": [{"b64": 5}]}, BadRequest, 400, "images[0].b64 must be a base64 string"),
    ({"images": [{"b64": b64(PNG), "x": 1}]}, BadRequest, 400, 'images[0] must be {"b64"'),
    ({"image": None}, MissingImage, 400, "image is null"),
    ({"image": ""}, MissingImage, 400, "image is empty"),
    ({"image": " \n "}, MissingImage, 400, "image is empty"),
    ({}, MissingImage, 400, "no image"),
    ({"instances": [{"b64": b64(PNG)}]}, MissingImage, 400, '{"image": "<base64>"}'),
    ([b64(PNG)], InvalidJSON, 400, "must be an object"),
    ("abc", InvalidJSON, 400, "not a string"),
])
def test_json_shape_errors(payload, error, status, phrase):
    with raises(error, status, phrase):
        parse(json_request(payload))


@pytest.mark.parametrize("body, phrase", [
    (b'{"image": ', "not valid JSON"),
    (b"{'image': 'abc'}", "not valid JSON"),
    (b'{"image": "abc", "x": NaN}', "NaN is not a JSON value"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": 1' + b"1" * 5000 + b"}", "a number has too many digits"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"image": "\xff\xfe"}', "not UTF-8"),
    (JPEG, "the body is a JPEG image, not JSON; send it with Content-Type: image/jpeg"),
])
def test_invalid_json(body, phrase):
    with raises(InvalidJSON, 400, phrase):
        parse(request(body, "application/json"))


@pytest.mark.parametrize("text, phrase", [
    (b64(JPEG)[:40] + "-_" + b64(JPEG)[40:], "mixes the standard (+/) and URL-safe (-_)"),
    (b64(JPEG)[:401], "cut short"),
    ("abcd=efg", "'=' before the end"),
    ("abc*def", "the character *"),
    ("data:image/png," + b64(PNG), "data: URL without ';base64,'"),
    ("wxfile://tmp_5a1c.jpg", "file path or URL"),
    ("http://tmp/touristappid.o6zAJs.jpg", "file path or URL"),
    ("https://example.com/cat.jpg", "file path or URL"),
    ("iVBORw0KGgo\u00e9", "the character \u00e9"),
])
def test_bad_base64_names_the_field(text, phrase):
    with raises(InvalidBase64, 400, phrase) as info:
        parse(json_request({"images": [b64(PNG), text]}))
    assert info.value.message.startswith("images[1] ")


def test_b64decode_pitfall_is_avoided():
    # Without validate=True, b64decode drops '-' and '_' and returns other bytes.
    text = base64.urlsafe_b64encode(JPEG).decode()
    assert "-" in text and "_" in text
    with contextlib.suppress(ValueError):  # or it fails, depending on what it dropped
        assert base64.b64decode(text) != JPEG
    assert decode_base64(text, "image") == JPEG


def test_valid_base64_of_something_else_is_not_an_image():
    with raises(InvalidImage, 400, "image is not an image"):
        parse(json_request({"image": b64(b"hello, this is plain text")}))


# -- multipart (wx.uploadFile) -------------------------------------------------------------


def test_wx_upload_file_as_written_by_wechat():
    body = multipart(file_part(JPEG, "file", "tmp.jpg"), text_part("top_k", "3"))
    parsed = parse(request(body, MULTIPART,
                           referer="https://servicewechat.com/wx123/1/page-frame.html"))
    assert parsed.images == (ImageInput(JPEG, "jpeg", 64, 48, "file"),)
    assert parsed.options == {"top_k": "3"}


@pytest.mark.parametrize("filename, part_type", [
    ("wxfile://tmp_a1b2c3.jpg", "image/jpeg"),
    ("http://tmp/wx123.o6zAJs.jpg", None),
    ("tmp.png", "text/plain"),            # the declared type is wrong: the bytes decide
    ("photo.heic", "application/octet-stream"),
])
def test_multipart_file_name_and_part_type_do_not_matter(filename, part_type):
    body = multipart(file_part(JPEG, "image", filename, part_type))
    parsed = parse(request(body, MULTIPART))
    assert (parsed.images[0].data, parsed.images[0].format) == (JPEG, "jpeg")
    assert parsed.images[0].where == "image"


def test_multipart_several_files_in_order_with_fields_between():
    body = multipart(file_part(PNG), text_part("top_k", "2"), file_part(GIF, filename="b.gif"),
                     file_part(BMP, name="other", filename="c.bmp"),
                     text_part("lang", "\u4e2d\u6587"))
    parsed = parse(request(body, MULTIPART))
    assert [(i.data, i.where) for i in parsed.images] == [
        (PNG, "file[0]"), (GIF, "file[1]"), (BMP, "other")]
    assert parsed.options == {"top_k": "2", "lang": "\u4e2d\u6587"}


def test_multipart_text_fields_with_base64_are_images():
    body = multipart(text_part("images", b64(PNG)),
                     text_part("images", base64.urlsafe_b64encode(JPEG).decode()))
    parsed = parse(request(body, MULTIPART))
    assert [(i.data, i.where) for i in parsed.images] == [(PNG, "images[0]"),
                                                          (JPEG, "images[1]")]


def test_multipart_binary_image_part_without_filename():
    headers = {"Content-Disposition": 'form-data; name="photo"', "Content-Type": "image/png"}
    assert parse(request(multipart((headers, PNG)), MULTIPART)).images[0].data == PNG
    untyped = {"Content-Disposition": 'form-data; name="image"'}
    parsed = parse(request(multipart((untyped, JPEG)), MULTIPART))
    assert (parsed.images[0].data, parsed.images[0].where) == (JPEG, "image")


def test_multipart_quoted_boundary_and_lf_only_lines():
    body = (b'--abc\nContent-Disposition: form-data; name="file"; filename="a.png"\n\n'
            + PNG + b"\n--abc--\n")
    parsed = parse(request(body, 'multipart/form-data; boundary="abc"'))
    assert parsed.images[0].data == PNG


def test_multipart_empty_file_input_is_skipped():
    body = multipart(file_part(b"", name="extra", filename="", content_type=None),
                     file_part(PNG))
    assert [i.where for i in parse(request(body, MULTIPART)).images] == ["file"]


@pytest.mark.parametrize("body, content_type, error, status, phrase", [
    (multipart(file_part(PNG)), "multipart/form-data", InvalidMultipart, 400,
     "needs a boundary"),
    (multipart(file_part(PNG))[:-40], MULTIPART, InvalidMultipart, 400,
     "ends before its closing boundary"),
    (multipart(file_part(PNG), boundary="other"), MULTIPART, InvalidMultipart, 400,
     "has no boundary line"),
    (b"just some text", MULTIPART, InvalidMultipart, 400, "has no boundary line"),
    (f"--{BOUNDARY}\r\nX-Nothing: 1\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(), MULTIPART,
     InvalidMultipart, 400, "no Content-Disposition"),
    (multipart(text_part("top_k", "3")), MULTIPART, MissingImage, 400, "no image"),
    (multipart(file_part(b"", filename="tmp.jpg")), MULTIPART, MissingImage, 400,
     "file is empty"),
    (multipart(text_part("top_k", "1"), text_part("top_k", "2"), file_part(PNG)), MULTIPART,
     InvalidOption, 400, "top_k is given more than once"),
    (multipart(text_part("image", b64(PNG)), text_part("images", b64(PNG))), MULTIPART,
     BadRequest, 400, 'either "image" or "images"'),
    (multipart(*[text_part(f"f{i}", "x") for i in range(300)], file_part(PNG)), MULTIPART,
     PayloadTooLarge, 413, "more than 256 parts"),
    (multipart(({"Content-Disposition": 'form-data; name="x"'}, b"\xff\xfe")), MULTIPART,
     InvalidMultipart, 400, "x is not UTF-8"),
])
def test_multipart_errors(body, content_type, error, status, phrase):
    with raises(error, status, phrase):
        parse(request(body, content_type))


# -- urlencoded forms (wx.request with that header) ----------------------------------------


def test_form_plus_signs_turned_into_spaces_are_restored():
    text = b64(JPEG)
    assert "+" in text
    body = f"image={text}&top_k=3".encode()  # '+' left unescaped, as careless clients do
    parsed = parse(request(body, "application/x-www-form-urlencoded"))
    assert parsed.images[0].data == JPEG
    assert parsed.options == {"top_k": "3"}


def test_form_properly_encoded_and_several_images():
    body = urlencode([("images", b64(PNG)), ("images", b64(GIF)), ("lang", "\u4e2d")])
    parsed = parse(request(body.encode(), "application/x-www-form-urlencoded; charset=UTF-8"))
    assert [(i.data, i.where) for i in parsed.images] == [(PNG, "images[0]"),
                                                          (GIF, "images[1]")]
    assert parsed.options == {"lang": "\u4e2d"}


def test_form_data_url_percent_encoded():
    body = "image=" + quote("data:image/png;base64," + b64(PNG), safe="")
    assert parse(request(body.encode(), "application/x-www-form-urlencoded")).images[0].data \
        == PNG


@pytest.mark.parametrize("body, error, status, phrase", [
    (b"top_k=3", MissingImage, 400, "no image"),
    (b"image=abc&images=def", BadRequest, 400, 'either "image" or "images"'),
    (b"image=iVBORw0KGgo%FF", BadRequest, 400, "not UTF-8"),
    (b"image=\xff", BadRequest, 400, "not UTF-8"),
    (b"a=1&a=2&image=x", InvalidOption, 400, "a is given more than once"),
    ("&".join(f"f{i}=1" for i in range(300)).encode(), PayloadTooLarge, 413, "limit is 256"),
])
def test_form_errors(body, error, status, phrase):
    with raises(error, status, phrase):
        parse(request(body, "application/x-www-form-urlencoded"))


# -- raw bodies and sniffing ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "image/jpeg", "image/png", "image/*", "application/octet-stream", "IMAGE/JPEG; q=1"])
def test_raw_body_is_one_image_whatever_image_type_is_declared(content_type):
    parsed = parse(request(JPEG, content_type, query={"top_k": "2"}))
    assert parsed.images == (ImageInput(JPEG, "jpeg", 64, 48, "body"),)
    assert parsed.options == {"top_k": "2"}


@pytest.mark.parametrize("body, format", [(JPEG, "jpeg"), (PNG, "png"), (GIF, "gif"),
                                          (BMP, "bmp")])
def test_no_content_type_sniffs_images(body, format):
    assert parse(request(body)).images[0].format == format


def test_no_content_type_sniffs_json():
    body = b'  {"image": "' + b64(PNG).encode() + b'", "top_k": 1}'
    parsed = parse(request(body))
    assert parsed.images[0].data == PNG and parsed.options == {"top_k": 1}


def test_no_content_type_and_neither_json_nor_image():
    with raises(UnsupportedMediaType, 415, "no Content-Type"):
        parse(request(b"image=abc"))


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml",
                                          "text/html; charset=utf-8", "video/mp4", "x" * 500])
def test_other_content_types_are_refused_with_the_accepted_list(content_type):
    with raises(UnsupportedMediaType, 415, "is not supported; send application/json, "
                "multipart/form-data, application/x-www-form-urlencoded") as info:
        parse(json_request({"image": b64(PNG)}, content_type))
    assert len(info.value.message) < 300


@pytest.mark.parametrize("body", [b"", None])
def test_empty_body_is_missing_image(body):
    with raises(MissingImage, 400, "body is empty"):
        parse(request(body or b"", "image/jpeg" if body is None else None))


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    return exif


JPEG_VARIANTS = {
    "progressive": encode("JPEG", (50, 20), progressive=True),
    "grayscale": encode("JPEG", (30, 25), mode="L"),
    "with exif": encode("JPEG", (31, 29), exif=_exif()),
    "cmyk": encode("JPEG", (11, 13), mode="CMYK"),
}


@pytest.mark.parametrize("name", JPEG_VARIANTS)
def test_jpeg_variants_read_size_from_the_frame_header(name):
    data = JPEG_VARIANTS[name]
    with Image.open(io.BytesIO(data)) as image:
        expected = image.size
    image_input = inspect_image(data, "body", 10**9)
    assert (image_input.width, image_input.height) == expected


def test_jpeg_with_exif_thumbnail_reports_the_main_frame():
    # An APP1 segment holding a whole smaller JPEG (a thumbnail) must be skipped by length.
    app1 = b"Exif\0\0" + encode("JPEG", (8, 8))
    data = JPEG[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + JPEG[2:]
    assert (inspect_image(data, "body", 10**9).width, inspect_image(data, "body", 10**9).height) \
        == (64, 48)


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"),
                                       ("GIF", "P"), ("BMP", "1"), ("BMP", "RGB")])
def test_png_gif_bmp_sizes(fmt, mode):
    data = encode(fmt, (23, 19), mode=mode)
    image_input = inspect_image(data, "body", 10**9)
    assert (image_input.format, image_input.width, image_input.height) == \
        (fmt.lower(), 23, 19)


def test_animated_gif():
    frames = [Image.new("P", (15, 10), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], comment=b"hi")
    image_input = inspect_image(buffer.getvalue(), "body", 10**9)
    assert (image_input.width, image_input.height) == (15, 10)


def test_top_down_bmp():
    data = bytearray(BMP)
    data[22:26] = struct.pack("<i", -7)
    assert inspect_image(bytes(data), "body", 10**9).height == 7


def heic(brand: bytes = b"heic", compatible: bytes = b"mif1heic") -> bytes:
    box = b"ftyp" + brand + b"\0\0\0\0" + compatible
    return struct.pack(">I", len(box) + 4) + box + b"\0\0\0\x08meta" + b"\0" * 64


@pytest.mark.parametrize("data, phrase", [
    (heic(), "HEIC/HEIF image"),
    (heic(b"mif1", b"mif1heix"), "HEIC/HEIF image"),
    (heic(b"msf1", b"msf1hevc"), "HEIC/HEIF image"),
    (heic(b"avif", b"avifmif1miaf"), "AVIF image"),
    (heic(b"mif1", b"mif1avif"), "AVIF image"),
    (encode("AVIF", (16, 16)), "AVIF image"),
    (encode("WEBP", (16, 16)), "WebP image"),
    (encode("TIFF", (16, 16)), "TIFF image"),
    (encode("TIFF", (16, 16)).replace(b"II*\0", b"MM\0*", 1), "TIFF image"),
])
def test_unsupported_formats_are_415_with_a_hint(data, phrase):
    with raises(UnsupportedMediaType, 415, phrase) as info:
        parse(request(data, "image/jpeg"))
    assert "send JPEG or PNG" in info.value.message


def test_heic_hint_tells_a_mini_program_what_to_do():
    with raises(UnsupportedMediaType, 415, "wx.chooseMedia({sizeType: ['compressed']})") as info:
        parse(json_request({"images": [b64(PNG), b64(heic())]}))
    assert info.value.message.startswith("images[1] is a HEIC/HEIF image")
    assert "canvas" in info.value.message and "fileType: 'jpg'" in info.value.message


@pytest.mark.parametrize("data, phrase", [
    (b"hello world, this is text", "is not an image"),
    (b"\0" * 100, "starts with the bytes 00 00 00"),
    (random.Random(1).randbytes(1000).replace(b"\xff", b"\0"), "is not an image"),
    (b"<html><body>502</body></html>", "HTML or XML"),
    (b'{"image": "abc"}', "looks like JSON"),
    (b64(PNG).encode(), "looks like base64 text"),
    (b"data:image/png;base64," + b64(PNG).encode(), "looks like base64 text"),
    (b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom", "is not an image"),
    (b"BMthis is not a bitmap header at all", "is not an image"),
])
def test_not_an_image(data, phrase):
    with raises(InvalidImage, 400, phrase) as info:
        parse(request(data, "application/octet-stream"))
    assert info.value.message.startswith("body is not an image")


@pytest.mark.parametrize("data", [
    PNG[:20], PNG[:8], PNG[:3], JPEG[:3], JPEG[:30], GIF[:10], GIF[:12], BMP[:20], BMP[:5],
    b"GIF89a" + GIF[6:13],
])
def test_truncated_headers(data):
    with raises(InvalidImage, 400, "truncated"):
        parse(request(data, "image/png"))


@pytest.mark.parametrize("data, phrase", [
    (b"\x89PNG\r\n\x1a\n" + png_chunk(b"CgBI", b"\0" * 4) + PNG[8:], "first chunk is not IHDR"),
    (b"\xff\xd8\xff\xda\0\x02", "no frame header (SOF)"),
    (b"\xff\xd8\xff\xe0\0\x01abc", "bad segment length"),
    (b"GIF89a\x05\0\x05\0\0\0\0;", "GIF without any frame"),
    (b"GIF89a\x05\0\x05\0\0\0\0\x99", "unexpected byte 0x99"),
    (png_claiming(0, 10), "positive width and height"),
])
def test_corrupt_headers(data, phrase):
    with raises(InvalidImage, 400, phrase):
        inspect_image(data, "body", 10**9)


# -- limits --------------------------------------------------------------------------------


def test_a_30000x30000_png_of_a_few_bytes_is_refused_in_milliseconds():
    bomb = png_claiming(30000, 30000)
    assert len(bomb) < 200
    start = time.perf_counter()
    with raises(PayloadTooLarge, 413, "30000x30000 = 900,000,000 pixels; "
                "the limit is 25,000,000 pixels"):
        parse(request(bomb, "image/png"))
    assert time.perf_counter() - start < 0.1
    with raises(PayloadTooLarge, 413, "images[0] is 30000x30000"):
        parse(json_request({"images": [b64(bomb)]}))


def jpeg_claiming(width: int, height: int) -> bytes:
    sof = struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x11\0"
    return b"\xff\xd8\xff\xe0\0\x10JFIF\0\1\1\0\0\1\0\1\0\0\xff\xc0" + sof + b"\xff\xd9"


@pytest.mark.parametrize("data, phrase", [
    (jpeg_claiming(65535, 65535), "65535x65535"),
    (b"GIF89a" + struct.pack("<HH", 60000, 60000) + b"\0\0\0,\0\0\0\0\1\0\1\0\0", "60000x60000"),
    (b"GIF89a\x01\0\x01\0\0\0\0,\0\0\0\0" + struct.pack("<HH", 9000, 9000) + b"\0",
     "9000x9000"),  # a tiny screen with a huge first frame
    (BMP[:18] + struct.pack("<ii", 10_000, -10_000) + BMP[26:], "10000x10000"),
])
def test_other_pixel_bombs_are_refused_from_the_header(data, phrase):
    with raises(PayloadTooLarge, 413, phrase):
        inspect_image(data, "body", SETTINGS.max_image_pixels)


def test_pixel_limit_is_inclusive():
    assert inspect_image(PNG, "body", 33 * 21).width == 33
    with raises(PayloadTooLarge, 413, "33x21 = 693 pixels; the limit is 692 pixels"):
        parse(request(PNG, "image/png"), max_image_pixels=33 * 21 - 1)


def test_body_size_limit_says_both_numbers():
    with raises(PayloadTooLarge, 413, f"the request body is {len(JPEG):,} bytes; "
                f"the limit is {len(JPEG) - 1:,} bytes"):
        parse(request(JPEG, "image/jpeg"), max_body_bytes=len(JPEG) - 1)
    assert parse(request(JPEG, "image/jpeg"), max_body_bytes=len(JPEG)).images


def test_image_count_limit():
    payload = {"images": [b64(GIF)] * 17}
    with raises(PayloadTooLarge, 413, "the request has 17 images; the limit is 16"):
        parse(json_request(payload))
    payload["images"] = payload["images"][:16]
    assert len(parse(json_request(payload)).images) == 16
    body = multipart(*[file_part(GIF)] * 3)
    with raises(PayloadTooLarge, 413, "3 images; the limit is 2"):
        parse(request(body, MULTIPART), max_images=2)


# -- content encoding ----------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "GZIP", "identity, gzip"])
def test_gzip_bodies_are_decompressed(coding):
    body = gzip.compress(json.dumps({"image": b64(PNG), "top_k": 2}).encode())
    parsed = parse(request(body, "application/json", content_encoding=coding))
    assert parsed.images[0].data == PNG and parsed.options == {"top_k": 2}


def test_deflate_and_multi_member_gzip():
    assert parse(request(zlib.compress(PNG), "image/png",
                         content_encoding="deflate")).images[0].data == PNG
    two_members = gzip.compress(PNG[:30]) + gzip.compress(PNG[30:]) + b"\0\0"
    assert parse(request(two_members, "image/png",
                         content_encoding="gzip")).images[0].data == PNG


def test_gzip_bomb_is_413_without_inflating_it():
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)
    assert len(bomb) < 300_000
    start = time.perf_counter()
    with raises(PayloadTooLarge, 413, "decompresses to more than 6,000,000 bytes"):
        parse(request(bomb, "image/png", content_encoding="gzip"))
    assert time.perf_counter() - start < 1.0


def test_decompressed_size_limit_is_inclusive():
    raw = json.dumps({"image": b64(PNG), "note": " " * 20_000}).encode()
    body = gzip.compress(raw)
    assert parse(request(body, "application/json", content_encoding="gzip"),
                 max_body_bytes=len(raw)).images[0].data == PNG
    with raises(PayloadTooLarge, 413, f"decompresses to more than {len(raw) - 1:,} bytes"):
        parse(request(body, "application/json", content_encoding="gzip"),
              max_body_bytes=len(raw) - 1)


@pytest.mark.parametrize("coding, body, error, status, phrase", [
    ("br", PNG, UnsupportedMediaType, 415, "Content-Encoding br is not supported"),
    ("compress", PNG, UnsupportedMediaType, 415, "is not supported"),
    ("gzip, gzip", gzip.compress(gzip.compress(PNG)), UnsupportedMediaType, 415,
     "send at most one"),
    ("gzip", PNG, BadRequest, 400, "not valid gzip data"),
    ("gzip", gzip.compress(PNG)[:-30], BadRequest, 400, "gzip body is truncated"),
    ("gzip", gzip.compress(PNG) + b"garbage", BadRequest, 400, "not valid gzip"),
    ("gzip", gzip.compress(b""), MissingImage, 400, "body is empty"),
])
def test_content_encoding_errors(coding, body, error, status, phrase):
    with raises(error, status, phrase):
        parse(request(body, "image/png", content_encoding=coding))


# -- query string --------------------------------------------------------------------------


def test_query_parameters_are_options_below_body_fields():
    req = json_request({"image": b64(PNG), "top_k": 5},
                       query={"top_k": "1", "lang": "en"})
    assert parse(req).options == {"top_k": 5, "lang": "en"}
    form = multipart(file_part(PNG), text_part("lang", "zh"))
    assert parse(request(form, MULTIPART, query={"lang": "en", "x": "1"})).options == \
        {"lang": "zh", "x": "1"}


def test_images_in_the_query_string_are_refused():
    with raises(BadRequest, 400, "send images in the request body"):
        parse(request(PNG, "image/png", query={"image": b64(PNG)}))


# -- robustness ----------------------------------------------------------------------------

CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from([
        "application/json", "text/json", "application/x+json", "image/jpeg",
        "application/octet-stream", "application/x-www-form-urlencoded", "text/plain",
        "multipart/form-data", MULTIPART, "multipart/form-data; boundary=",
        'multipart/form-data; boundary="a b"', "multipart/form-data; boundary=\u00e9",
        "multipart/form-data; boundary=" + "x" * 300, ";;;", "image/", "*/*"]),
    st.text(max_size=80),
)
ENCODINGS = st.one_of(st.none(), st.sampled_from(["gzip", "deflate", "br", "identity", ",",
                                                  "gzip, gzip"]), st.text(max_size=20))
QUERIES = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
SMALL = Settings(max_body_bytes=20_000, max_image_pixels=10_000, max_images=3)


def _assert_only_client_errors(req: HttpRequest) -> None:
    try:
        result = parse_predict_request(req, SMALL)
    except ServiceError as exc:
        assert type(exc) is not ServiceError
        assert 400 <= exc.status < 500, exc
        assert exc.message and len(exc.message) < 1000
    else:
        assert 1 <= len(result.images) <= SMALL.max_images
        assert all(i.format in ("jpeg", "png", "gif", "bmp") for i in result.images)


def _headers(content_type: str | None, encoding: str | None) -> Headers:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return Headers(headers)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=4096), content_type=CONTENT_TYPES, encoding=ENCODINGS,
       query=QUERIES)
def test_any_bytes_and_headers_give_only_client_errors(body, content_type, encoding, query):
    _assert_only_client_errors(HttpRequest("POST", "/", _headers(content_type, encoding),
                                           body, query))


VALID_BODIES = [
    (multipart(file_part(GIF), text_part("top_k", "3"), text_part("image", b64(PNG))),
     MULTIPART),
    (json.dumps({"images": [b64(GIF), {"b64": b64(PNG)}], "top_k": 1}).encode(),
     "application/json"),
    (f"image={b64(GIF)}&top_k=1".encode(), "application/x-www-form-urlencoded"),
    (JPEG_VARIANTS["with exif"], "image/jpeg"),
    (GIF, None),
    (BMP, "image/bmp"),
    (png_claiming(90, 90), "image/png"),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), index=st.integers(0, len(VALID_BODIES) - 1),
       gzipped=st.booleans())
def test_mutated_valid_requests_give_only_client_errors(data, index, gzipped):
    body, content_type = VALID_BODIES[index]
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(0, 4))):
        if not mutated:
            break
        position = data.draw(st.integers(0, len(mutated) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            mutated[position] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del mutated[position:]
        elif action == "insert":
            mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del mutated[position:position + data.draw(st.integers(1, 64))]
    payload = gzip.compress(bytes(mutated)) if gzipped else bytes(mutated)
    _assert_only_client_errors(HttpRequest(
        "POST", "/", _headers(content_type, "gzip" if gzipped else None), payload, {}))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), variant=st.sampled_from(sorted(BASE64_VARIANTS)))
def test_base64_variants_round_trip_any_bytes(data, variant):
    text = BASE64_VARIANTS[variant](data)
    if not text.strip() or text.endswith(","):
        return  # nothing but a prefix: that is a missing image, tested above
    assert decode_base64(text, "image") == data


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from(["JPEG", "PNG", "GIF", "BMP"]), width=st.integers(1, 400),
       height=st.integers(1, 400))
def test_header_sizes_agree_with_pillow(fmt, width, height):
    data = encode(fmt, (width, height), mode="L")
    with Image.open(io.BytesIO(data)) as image:
        expected = (fmt.lower(), *image.size)
    image_input = inspect_image(data, "body", 10**9)
    assert (image_input.format, image_input.width, image_input.height) == expected


def test_os2_bitmap_core_header():
    header = b"BM" + struct.pack("<IHHI", 0, 0, 0, 26) + struct.pack("<IHHHH", 12, 300, 200, 1, 1)
    image_input = inspect_image(header + b"\0" * 64, "body", 10**9)
    assert (image_input.format, image_input.width, image_input.height) == ("bmp", 300, 200)
