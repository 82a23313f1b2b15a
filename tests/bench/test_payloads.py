"""The bench's request bodies: exact byte counts, and bodies the function really accepts."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from bench import payloads
from bench.request_bytes import bodies, rows_for
from functions.config import Settings
from functions.httpio import Headers, HttpRequest
from functions.request.parse import parse_predict_request


@pytest.fixture(scope="module")
def photo():
    data, shapes = bodies()
    return data, shapes


def test_photo_is_the_sample_jpeg_at_299(photo):
    data, _ = photo
    assert data[:3] == b"\xff\xd8\xff"
    pixels = payloads.photo_pixels((299, 299))
    assert pixels.shape == (299, 299, 3) and pixels.dtype == np.uint8
    assert payloads.encode_jpeg(pixels) == data  # deterministic: same bytes every run


def test_float_json_holds_every_value_of_the_tensor(photo):
    _, (naive, *_rest) = photo
    doc = json.loads(naive.body)
    tensor = np.array(doc["instances"])
    assert tensor.shape == (1, 299, 299, 3)
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    expected = payloads.photo_pixels((299, 299)).astype(np.float64) / 127.5 - 1.0
    assert np.array_equal(tensor[0], expected)  # shortest round-trip form loses nothing
    assert b" " not in naive.body  # compact, as JSON.stringify writes it


def test_photo_is_scikit_learns_bundled_sample():
    from PIL import Image

    path = payloads.sample_photo_path()
    assert path.parts[-4:] == ("sklearn", "datasets", "images", "china.jpg")
    with Image.open(path) as photo:
        assert (photo.format, photo.size) == ("JPEG", (640, 427))
    with pytest.raises(FileNotFoundError, match="no sample image"):
        payloads.sample_photo_path("moon.jpg")


def test_float_json_of_a_gray_image_gets_a_channel_axis():
    body = payloads.float_json(np.array([[0, 255]], dtype=np.uint8), "unit").body
    assert body == b'{"instances":[[[[0.0],[1.0]]]]}'


def test_base64_json_is_the_file_in_standard_base64(photo):
    data, (_, b64, _, _) = photo
    doc = json.loads(b64.body)
    assert list(doc) == ["image"]
    assert base64.b64decode(doc["image"], validate=True) == data
    assert len(b64.body) == len('{"image":""}') + 4 * ((len(data) + 2) // 3)


def test_multipart_carries_the_file_once_with_a_small_envelope(photo):
    data, (_, _, form, _) = photo
    assert form.content_type.startswith("multipart/form-data; boundary=")
    assert form.body.count(data) == 1
    assert b'name="file"; filename="tmp.jpg"' in form.body
    assert b"Content-Type: image/jpeg" in form.body
    assert 100 < len(form.body) - len(data) < 250


def test_raw_is_the_file(photo):
    data, (_, _, _, raw) = photo
    assert raw.body == data and raw.headers == {"Content-Type": "image/jpeg"}


@pytest.mark.parametrize("index", [1, 2, 3])
def test_the_function_parses_each_body_back_to_the_same_file(photo, index):
    data, shapes = photo
    payload = shapes[index]
    request = HttpRequest(method="POST", path="/", headers=Headers(payload.headers),
                          body=payload.body)
    parsed = parse_predict_request(request, Settings())
    assert [image.data for image in parsed.images] == [data]
    assert (parsed.images[0].width, parsed.images[0].height) == (299, 299)


def test_normalized_refuses_unknown_modes():
    with pytest.raises(ValueError, match="meanstd"):
        payloads.normalized(np.zeros((1, 1), np.uint8), "meanstd")


def test_byte_rows_report_exact_counts_and_goals(photo):
    data, shapes = photo
    naive, b64, form, raw = shapes
    rows = rows_for(data, shapes, sweep={75: 1 / 231.0, 90: 1 / 137.0},
                    accepted={"base64 JSON": 934, "multipart": 934, "raw": 934})
    assert [r.value for r in rows] == [len(naive.body), len(b64.body), len(form.body),
                                       len(data)]
    assert rows[1].baseline == len(naive.body)
    assert rows[1].ratio == len(b64.body) / len(naive.body)
    assert rows[1].met is (len(b64.body) * 150 <= len(naive.body))
    assert rows[2].ratio == len(form.body) / len(data)
    assert rows[2].met is (len(form.body) <= 1.01 * len(data))
    assert rows[3].ratio == 1.0 and rows[3].goal is None
    assert "q75: 1/231, q90: 1/137" in rows[1].note
    assert rows[3].note == "function answered class 934"
    assert f"{len(form.body) - len(data)} bytes of boundaries" in rows[2].note


def test_float_json_is_the_size_of_its_numbers(photo):
    _, (naive, *_rest) = photo
    # ~268k numbers of ~19 characters: the naive body is megabytes.
    assert 4_500_000 < len(naive.body) < 6_000_000
