"""Hostile and broken input, authentication, logs and health, through the real server."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from functions.auth import sign
from tests.conftest import ROOT, encode, start_server, stop_server

pytestmark = pytest.mark.slow

API_KEYS = "old-key-0123456789,new-key-9876543210"
HMAC_SECRET = "hmac-secret-for-tests"
APPID = "wx1234567890abcdef"
REFERER = f"https://servicewechat.com/{APPID}/7/page-frame.html"


@pytest.fixture(scope="module")
def locked(demo_model, tmp_path_factory):
    """The function with every authentication feature on."""
    srv = start_server(tmp_path_factory.mktemp("locked"), {
        "MODEL_URI": str(demo_model.served), "API_KEYS": API_KEYS,
        "HMAC_KEYS": f"app1:{HMAC_SECRET}", "HMAC_WINDOW_SECONDS": "60",
        "ALLOWED_APPIDS": APPID, "TRUST_WECHAT_CLOUDRUN": "true",
        "CORS_ORIGINS": "https://example.com"})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def digit(digits):
    return int(digits.y_test[0]), encode(digits.x_test[0])


def png_post(srv, png, headers=None, path="/"):
    return srv.post(path, data=png, headers={"Content-Type": "image/png", **(headers or {})})


def test_api_keys_rotation_and_refusal(locked, digit):
    label, png = digit
    for key in API_KEYS.split(","):
        response = png_post(locked, png, {"X-API-Key": key, "Referer": REFERER})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["class_id"] == label
    bearer = png_post(locked, png, {"Authorization": "Bearer new-key-9876543210",
                                    "Referer": REFERER})
    assert bearer.status_code == 200
    wrong = png_post(locked, png, {"X-API-Key": "new-key-9876543211", "Referer": REFERER})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == {"code": "unauthorized",
                                     "message": "the API key is not valid"}
    missing = png_post(locked, png, {"Referer": REFERER})
    assert missing.status_code == 401
    assert "X-API-Key" in missing.json()["error"]["message"]
    assert missing.headers["WWW-Authenticate"] == "ApiKey"


def signed(body: bytes, *, path="/predict", ts=None, nonce=None, secret=HMAC_SECRET):
    ts = str(int(time.time() if ts is None else ts))
    nonce = nonce or base64.urlsafe_b64encode(np.random.bytes(18)).decode()
    return {"X-Key-Id": "app1", "X-Timestamp": ts, "X-Nonce": nonce,
            "X-Signature": sign(secret, "POST", path, ts, nonce, body), "Referer": REFERER,
            "Content-Type": "image/png"}


def test_hmac_signed_requests_and_replay(locked, digit):
    label, png = digit
    headers = signed(png)
    first = locked.post("/predict", data=png, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["predictions"][0]["class_id"] == label
    replay = locked.post("/predict", data=png, headers=headers)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["error"]["message"]

    stale = locked.post("/predict", data=png, headers=signed(png, ts=time.time() - 600))
    assert stale.status_code == 401
    assert "the window is 60 s" in stale.json()["error"]["message"]

    other_body = locked.post("/predict", data=png + b"\x00", headers=signed(png))
    assert other_body.status_code == 401
    assert other_body.json()["error"]["message"] == "the signature does not match the request"

    wrong_secret = locked.post("/predict", data=png, headers=signed(png, secret="nope"))
    assert wrong_secret.status_code == 401


def test_the_javascript_signing_helper_signs_what_the_server_checks(locked, digit, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    label, png = digit
    (tmp_path / "d.png").write_bytes(png)
    script = (
        "const { signRequest } = require(process.argv[1]);\n"
        "const body = require('fs').readFileSync(process.argv[2]);\n"
        "console.log(JSON.stringify(signRequest({keyId: 'app1', secret: process.argv[3],"
        " method: 'POST', path: '/predict', body})));\n")
    out = subprocess.run([node, "-e", script,
                          str(ROOT / "examples/miniprogram/utils/sign.js"),
                          str(tmp_path / "d.png"), HMAC_SECRET],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    headers = {**json.loads(out), "Referer": REFERER, "Content-Type": "image/png"}
    response = locked.post("/predict", data=png, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class_id"] == label


def test_appid_filter_and_cloudrun_identity(locked, digit):
    _, png = digit
    other = png_post(locked, png, {"X-API-Key": "old-key-0123456789",
                                   "Referer": "https://servicewechat.com/wxffffffffffffffff/1/"
                                              "page-frame.html"})
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "forbidden"
    none = png_post(locked, png, {"X-API-Key": "old-key-0123456789"})
    assert none.status_code == 403
    cloudrun = png_post(locked, png, {"X-WX-SOURCE": "wx_client", "X-WX-OPENID": "oABC",
                                      "X-WX-APPID": APPID})
    assert cloudrun.status_code == 200


def test_health_needs_no_credentials(locked):
    assert locked.get("/livez").json() == {"status": "alive"}
    assert locked.get("/healthz").status_code == 200


def test_cors(locked, digit):
    _, png = digit
    preflight = requests.options(locked.url + "/predict", timeout=10, headers={
        "Origin": "https://example.com", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://example.com"
    assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
    response = png_post(locked, png, {"Origin": "https://example.com",
                                      "X-API-Key": "old-key-0123456789", "Referer": REFERER})
    assert response.headers["Access-Control-Allow-Origin"] == "https://example.com"
    foreign = png_post(locked, png, {"Origin": "https://evil.example",
                                     "X-API-Key": "old-key-0123456789", "Referer": REFERER})
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_logs_are_json_lines_without_secrets_or_images(locked, digit):
    _, png = digit
    response = png_post(locked, png, {"X-API-Key": "old-key-0123456789", "Referer": REFERER,
                                      "X-Request-Id": "trace-abc-123456"})
    assert response.headers["X-Request-Id"] == "trace-abc-123456"
    time.sleep(0.3)
    text = locked.log.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("request_id") == "trace-abc-123456"]
    access = [e for e in mine if e.get("status") == 200]
    assert access and access[-1]["bytes_in"] == len(png) and access[-1]["ms"] > 0
    assert "old-key-0123456789" not in text and HMAC_SECRET not in text
    assert base64.b64encode(png[:30]).decode()[:20] not in text


def test_exif_orientation_is_applied(server, digits):
    """A portrait phone photo: pixels stored sideways, EXIF says turn 90 degrees."""
    index = int(np.flatnonzero(digits.y_test == 7)[0])
    upright = np.kron(digits.x_test[index], np.ones((4, 4), np.uint8))
    stored = np.rot90(upright, k=1)  # orientation 6 means: rotate the stored image 90 CW
    exif = Image.Exif()
    exif[0x0112] = 6
    img = Image.fromarray(np.ascontiguousarray(stored))
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    response = server.post(data=buf.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class_id"] == 7


def test_corrupt_model_is_not_ready_with_a_clear_message(demo_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(demo_model.served, broken)
    (broken / "saved_model.pb").write_bytes(b"\x08garbage" * 10)
    srv = start_server(tmp_path, {"MODEL_URI": str(broken)}, ready_status=503)
    try:
        for _ in range(200):
            health = srv.get("/healthz").json()
            if health["status"] != "loading":
                break
            time.sleep(0.1)
        assert health["status"] == "failed"
        assert "cannot load the SavedModel" in health["error"]["message"]
        assert srv.get("/livez").status_code == 200
    finally:
        stop_server(srv)


CONTENT_TYPES = st.sampled_from([
    "application/json", "multipart/form-data; boundary=xyz", "multipart/form-data",
    "image/png", "image/jpeg", "application/octet-stream", "text/plain",
    "application/x-www-form-urlencoded", "", "application/json; charset=utf-16"])


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda v: json.dumps({"image": v}).encode(), st.text(max_size=200)),
    st.builds(lambda v: json.dumps({"images": v}).encode(),
              st.lists(st.one_of(st.text(max_size=50), st.integers(), st.none()), max_size=5)),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM",
                               b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; "
                               b"filename=\"a.png\"\r\n\r\n"]),
              st.binary(max_size=500))),
    content_type=CONTENT_TYPES,
    encoding=st.sampled_from(["", "gzip", "br"]))
def test_fuzzed_requests_get_only_4xx_json(server, body, content_type, encoding):
    headers = {"Content-Type": content_type} if content_type else {}
    if encoding:
        headers["Content-Encoding"] = encoding
    response = server.post(data=body, headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    payload = response.json()
    assert ("error" in payload) != (response.status_code == 200)


def test_pixel_bomb_is_refused_fast_through_the_server(server):
    """A 30000x30000 PNG header on a few bytes of data: 413 before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0,
                                                             0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    started = time.perf_counter()
    response = server.post(data=png, headers={"Content-Type": "image/png"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 413
    assert "30000x30000 = 900,000,000 pixels" in response.json()["error"]["message"]
    assert elapsed < 2.0  # a guard against decoding, not a benchmark


def test_animated_gif_uses_its_first_frame(server, digits):
    index = int(np.flatnonzero(digits.y_test == 3)[0])
    frames = [Image.fromarray(digits.x_test[index])]
    frames += [Image.fromarray(np.full((28, 28), 255, np.uint8)) for _ in range(3)]
    import io

    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    response = server.post(data=buf.getvalue(), headers={"Content-Type": "image/gif"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class_id"] == 3
