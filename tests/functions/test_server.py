"""The function through a real functions-framework server on loopback, with real images.

Every request shape a client sends must give the same answer as the raw
image bytes, and every mistake a clear JSON error with the right status.
"""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import pytest
import requests

from tests.conftest import encode

pytestmark = pytest.mark.slow

WX_REFERER = "https://servicewechat.com/wx1234567890abcdef/3/page-frame.html"


@pytest.fixture(scope="module")
def samples(digits):
    """A few held-out digits, one per class, as PNG and JPEG bytes."""
    picks = [int(np.flatnonzero(digits.y_test == d)[0]) for d in range(10)]
    return [(int(digits.y_test[i]), digits.x_test[i]) for i in picks]


def predicted(response: requests.Response) -> list[int]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return [p["class_id"] for p in response.json()["predictions"]]


def b64_variants(data: bytes) -> dict[str, str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return {
        "standard": std,
        "urlsafe": url,
        "unpadded": url.rstrip("="),
        "std-unpadded": std.rstrip("="),
        "wrapped-lines": "\n".join(std[i:i + 76] for i in range(0, len(std), 76)),
        "spaces": " ".join(std[i:i + 10] for i in range(0, len(std), 10)),
        "data-url": "data:image/png;base64," + std,
        "data-url-wrong-type": "data:image/jpeg;base64," + url,
        "data-url-no-type": "data:;base64," + std,
    }


def test_multipart_upload_like_curl_returns_the_digit(server, samples):
    for label, pixels in samples:
        response = server.post(files={"file": ("digit.png", encode(pixels), "image/png")})
        assert predicted(response) == [label]


def test_response_shape(server, samples):
    label, pixels = samples[7]
    body = server.post(files={"file": ("d.png", encode(pixels), "image/png")},
                       data={"top_k": "3"}).json()
    (pred,) = body["predictions"]
    assert set(pred) == {"class_id", "label", "score", "top_k"}
    assert pred["class_id"] == label and pred["label"] == str(label)
    assert 0.5 < pred["score"] <= 1.0
    assert [t["class_id"] for t in pred["top_k"]][0] == label
    assert len(pred["top_k"]) == 3
    scores = [t["score"] for t in pred["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert body["model"] == {"name": "digits", "version": None}


def test_wx_upload_file_shape(server, samples):
    """wx.uploadFile: file under `name`, a temp file name, formData as text fields."""
    label, pixels = samples[3]
    response = server.post(
        "/predict",
        files={"file": ("wxfile://tmp_8a7c2e.jpg", encode(pixels, "JPEG", quality=95),
                        "image/jpeg")},
        data={"top_k": "2", "openid": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"},
        headers={"Referer": WX_REFERER, "User-Agent": "MicroMessenger/8.0.40"})
    assert predicted(response) == [label]
    assert len(response.json()["predictions"][0]["top_k"]) == 2


def test_multipart_field_named_image_and_only_file_part(server, samples):
    label, pixels = samples[5]
    png = encode(pixels)
    assert predicted(server.post(files={"image": ("a.png", png, "image/png")})) == [label]
    assert predicted(server.post(files={"photo": ("a.png", png,
                                                  "application/octet-stream")})) == [label]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_every_base64_variant_gives_the_raw_bytes_answer(server, samples, fmt):
    label, pixels = samples[2]
    data = encode(pixels, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    raw = server.post(data=data, headers={"Content-Type": f"image/{fmt.lower()}"}).json()
    assert raw["predictions"][0]["class_id"] == label
    for name, text in b64_variants(data).items():
        response = server.post(json={"image": text})
        assert response.status_code == 200, (name, response.text)
        assert response.json()["predictions"] == raw["predictions"], name


def test_json_batch_keeps_order_and_mixes_formats(server, samples):
    images = [encode(p) if i % 2 else encode(p, "JPEG", quality=95)
              for i, (_, p) in enumerate(samples[:6])]
    response = server.post(json={"images": [base64.b64encode(d).decode() for d in images],
                                 "top_k": 1})
    assert predicted(response) == [label for label, _ in samples[:6]]
    assert all(len(p["top_k"]) == 1 for p in response.json()["predictions"])


def test_raw_bodies_and_gif_bmp(server, samples):
    label, pixels = samples[8]
    for fmt, ctype in [("PNG", "image/png"), ("GIF", "image/gif"), ("BMP", "image/bmp"),
                       ("PNG", "application/octet-stream")]:
        response = server.post(data=encode(pixels, fmt), headers={"Content-Type": ctype})
        assert predicted(response) == [label], (fmt, ctype)


def test_gzip_json_body(server, samples):
    label, pixels = samples[1]
    body = gzip.compress(json.dumps({"image": base64.b64encode(encode(pixels)).decode()})
                         .encode())
    response = server.post(data=body, headers={"Content-Type": "application/json",
                                               "Content-Encoding": "gzip"})
    assert predicted(response) == [label]


def test_large_colour_photo_is_resized_in_the_graph(server, samples):
    """A phone sends a big colour photo of a digit: gray, resize and pad happen in the graph."""
    label, pixels = samples[4]
    big = np.kron(pixels, np.ones((20, 20), np.uint8))  # 560x560, nearest upscale
    rgb = np.stack([big] * 3, axis=-1)
    response = server.post(files={"file": ("big.jpg", encode(rgb, "JPEG", quality=90),
                                           "image/jpeg")})
    assert predicted(response) == [label]


def assert_error(response: requests.Response, status: int, code: str, phrase: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert phrase in error["message"], error["message"]
    assert "Traceback" not in response.text
    return error


def test_client_mistakes_get_clear_json_errors(server, samples):
    png = encode(samples[0][1])
    assert_error(server.post(data=b"{not json", headers={"Content-Type": "application/json"}),
                 400, "invalid_json", "")
    assert_error(server.post(json={"image": "@@@not base64@@@"}), 400, "invalid_base64",
                 "image")
    assert_error(server.post(json={"images": ["aGVsbG8gd29ybGQ="]}), 400, "invalid_image",
                 "images[0]")
    assert_error(server.post(json={"top_k": 3}), 400, "missing_image", "")
    assert_error(server.post(data=b"hello", headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type", "")
    assert_error(server.post(json={"image": base64.b64encode(png).decode(), "top_k": "lots"}),
                 400, "invalid_option", "top_k")
    too_many = [base64.b64encode(png).decode()] * 9
    assert_error(server.post(json={"images": too_many}), 413, "payload_too_large", "8")


def test_corrupt_image_in_a_batch_is_named(server, samples):
    good = encode(samples[0][1])
    truncated = good[: len(good) // 2]
    response = server.post(json={"images": [base64.b64encode(good).decode(),
                                            base64.b64encode(truncated).decode()]})
    assert_error(response, 400, "invalid_image", "images[1]")


def test_heic_is_refused_with_a_hint(server):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    response = server.post(files={"file": ("IMG_0001.HEIC", heic, "image/heic")})
    error = assert_error(response, 415, "unsupported_media_type", "HEIC")
    assert "JPEG" in error["message"]


def test_body_over_the_limit_is_413_before_reading(server):
    response = server.post(data=b"\x00" * 6_000_001,
                           headers={"Content-Type": "application/octet-stream"})
    assert_error(response, 413, "payload_too_large", "6000000")


def test_methods_and_paths(server):
    error = assert_error(server.get("/"), 405, "method_not_allowed", "POST")
    assert error
    assert server.get("/").headers["Allow"] == "POST"
    assert_error(server.post("/nope", json={}), 404, "not_found", "/nope")
    response = requests.put(server.url + "/predict", data=b"x", timeout=10)
    assert_error(response, 405, "method_not_allowed", "PUT")


def test_healthz_reports_ready_with_the_model(server):
    response = server.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "model": {"name": "digits", "version": None}}


def test_concurrent_requests_all_answer_right(server, samples):
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(label, encode(p)) for label, p in samples] * 3

    def one(job):
        label, data = job
        return label, server.post(data=data, headers={"Content-Type": "image/png"})

    with ThreadPoolExecutor(8) as pool:
        for label, response in pool.map(one, jobs):
            assert predicted(response) == [label]


def test_readme_curl_command(server, samples, tmp_path):
    """The README's `curl -F file=@some-digit.png http://127.0.0.1:8080/`."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    label, pixels = samples[9]
    path = tmp_path / "some-digit.png"
    path.write_bytes(encode(pixels))
    out = subprocess.run([curl, "-s", "-F", f"file=@{path}", server.url + "/"],
                         capture_output=True, check=True, timeout=60).stdout
    assert json.loads(out)["predictions"][0]["class_id"] == label


def test_missing_model_is_not_ready_with_a_clear_message(tmp_path):
    from tests.conftest import start_server, stop_server

    srv = start_server(tmp_path, {"MODEL_URI": str(tmp_path / "nowhere")}, ready_status=503)
    try:
        import time

        for _ in range(100):
            health = srv.get("/healthz").json()
            if health["status"] != "loading":
                break
            time.sleep(0.1)
        assert health["status"] == "failed"
        assert "no SavedModel at" in health["error"]["message"]
        assert "modelprep demo" in health["error"]["message"]
        png = encode(np.zeros((28, 28), np.uint8))
        response = srv.post(data=png, headers={"Content-Type": "image/png"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"
    finally:
        stop_server(srv)
