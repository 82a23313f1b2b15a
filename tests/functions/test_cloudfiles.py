"""Images sent as WeChat cloud file ids, resolved through ``tcb/batchdownloadfile``.

WeChat's open API cannot be reached from here: the function talks to a stand-in of it on
loopback (tests/clients/wechat_openapi.py), built from the documented request and response
shapes of ``cgi-bin/stable_token`` and ``tcb/batchdownloadfile``, which serves real image
bytes (a digit PNG, scikit-learn's china.jpg photo). The model is the fake backend of
test_app.py, which records the bytes it is fed: these tests are about getting the right
bytes, or the right error, from a file id.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from functions.request.cloudfiles import CloudFile, cloud_file
from tests.clients.wechat_openapi import WechatOpenApi
from tests.conftest import encode
from tests.functions.test_app import FakeBackend, call, make_app

DIGIT = encode(np.eye(28, dtype=np.uint8) * 255)


@pytest.fixture
def openapi():
    api = WechatOpenApi(require_token=False).start()
    yield api
    api.stop()


class Recording(FakeBackend):
    """The fake classifier, keeping the encoded images it was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.fed: list[bytes] = []

    def predict(self, inputs):
        self.fed.extend(bytes(item) for item in inputs["image_bytes"])
        return super().predict(inputs)


def cloud_app(api: WechatOpenApi, backend: FakeBackend | None = None, **changes):
    settings = {"cloud_env": api.env, "wechat_api_url": api.url, **changes}
    return make_app(backend, **settings)


def batch_calls(api: WechatOpenApi):
    return [c for c in api.calls if c.path == "/tcb/batchdownloadfile"]


def photo() -> bytes:
    from sklearn.datasets import load_sample_image

    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_a_file_id_is_fetched_and_fed_to_the_model_as_is(openapi):
    backend = Recording()
    file_id = openapi.put("uploads/digit.png", DIGIT)
    response, body = call(cloud_app(openapi, backend), body={"image": {"file_id": file_id},
                                                             "top_k": 2})
    assert response.status == 200, body
    assert body["predictions"][0]["class_id"] == 9
    assert backend.fed[-1:] == [DIGIT]  # after the warm-up image
    (resolve,) = batch_calls(openapi)
    assert resolve.body == {"env": openapi.env, "file_list": [{"fileid": file_id,
                                                               "max_age": 600}]}
    assert resolve.query == {}  # inside Cloud Run: no access token


def test_images_mix_inline_and_file_ids_in_order_with_one_resolution(openapi):
    backend = Recording()
    jpeg = photo()
    first, second = openapi.put("a/photo.jpg", jpeg), openapi.put("b/digit.png", DIGIT)
    inline = base64.b64encode(DIGIT).decode()
    response, body = call(cloud_app(openapi, backend), body={"images": [
        {"file_id": first}, inline, {"file_id": second}, {"file_id": first}]})
    assert response.status == 200, body
    assert len(body["predictions"]) == 4
    fed = backend.fed[-4:]  # after the warm-up image
    assert fed[1:3] == [DIGIT, DIGIT]
    assert fed[0] == fed[3]
    assert Image.open(io.BytesIO(fed[0])).size == (640, 427)
    (resolve,) = batch_calls(openapi)
    assert [f["fileid"] for f in resolve.body["file_list"]] == [first, second]
    downloads = [c for c in openapi.calls if c.method == "GET"]
    assert len(downloads) == 2  # the repeated id is downloaded once


def test_outside_cloud_run_an_access_token_is_fetched_once_and_reused():
    api = WechatOpenApi(require_token=True).start()
    try:
        app = cloud_app(api, wechat_appid=api.appid, wechat_appsecret=api.secret)
        file_id = api.put("x.png", DIGIT)
        for _ in range(2):
            response, body = call(app, body={"image": {"file_id": file_id}})
            assert response.status == 200, body
        tokens = [c for c in api.calls if c.path == "/cgi-bin/stable_token"]
        assert len(tokens) == 1
        assert tokens[0].body == {"grant_type": "client_credential", "appid": api.appid,
                                  "secret": api.secret, "force_refresh": False}
        assert {c.query["access_token"] for c in batch_calls(api)} <= api.tokens
    finally:
        api.stop()


def test_without_a_token_where_one_is_needed_502_says_what_to_turn_on():
    api = WechatOpenApi(require_token=True).start()
    try:
        response, body = call(cloud_app(api), body={"image": {"file_id": api.put("x.png",
                                                                                    DIGIT)}})
    finally:
        api.stop()
    assert response.status == 502
    assert body["error"] == {"code": "bad_gateway", "message": (
        "WeChat's tcb/batchdownloadfile refused the call: errcode 41001, access_token "
        "missing; turn on the open-API service of WeChat Cloud Run and allow "
        "tcb/batchdownloadfile, or set WECHAT_APPID and WECHAT_APPSECRET")}


def test_a_missing_file_is_404_with_the_id(openapi):
    file_id = openapi.file_id("gone.jpg")
    response, body = call(cloud_app(openapi), body={"image": {"file_id": file_id}})
    assert response.status == 404
    assert body["error"] == {"code": "not_found", "message": (
        f"the cloud file {file_id} does not exist (STORAGE_FILE_NONEXIST); upload it again "
        "with wx.cloud.uploadFile")}


def test_another_environments_file_is_403_and_never_fetched(openapi):
    foreign = "cloud://other-env-9z.6f74-other-env-9z-1250000000/photo.jpg"
    response, body = call(cloud_app(openapi), body={"images": [{"file_id": foreign}]})
    assert response.status == 403
    assert body["error"] == {"code": "forbidden", "message": (
        f"images[0]: {foreign} belongs to the cloud environment other-env-9z; this function "
        f"accepts files of {openapi.env} only")}
    assert openapi.calls == []


def test_file_ids_without_a_configured_environment_are_400(openapi):
    response, body = call(make_app(), body={"image": {"file_id": openapi.file_id("a.png")}})
    assert response.status == 400
    assert body["error"]["message"] == ("image is a cloud file id, but this function has no "
                                        "cloud environment configured (CLOUD_ENV); send the "
                                        "image inline")


@pytest.mark.parametrize("value, message", [
    ({"file_id": "https://example.com/a.jpg"},
     "image.file_id https://example.com/a.jpg is not a cloud file id; expected "
     "cloud://ENV.BUCKET/path, as wx.cloud.uploadFile returns it"),
    ({"file_id": 7}, "image.file_id must be a cloud file id string (cloud://ENV.BUCKET/path, "
                     "as wx.cloud.uploadFile returns it)"),
    ({"file_id": "cloud://e.b/x.png", "b64": "AAAA"},
     'image must be {"file_id": "cloud://..."} alone; remove b64'),
])
def test_malformed_file_ids_are_400(openapi, value, message):
    response, body = call(cloud_app(openapi), body={"image": value})
    assert response.status == 400
    assert body["error"] == {"code": "bad_request", "message": message}


def test_a_file_over_the_body_limit_is_413(openapi):
    big = encode(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8))
    file_id = openapi.put("big.png", big)
    response, body = call(cloud_app(openapi, max_body_bytes=100_000),
                          body={"image": {"file_id": file_id}})
    assert response.status == 413
    assert body["error"]["message"] == (f"image: the cloud file {file_id} is {len(big):,} "
                                        "bytes; the limit is 100,000 bytes (MAX_BODY_BYTES)")


def test_a_pixel_bomb_by_file_id_is_413_like_an_inline_one(openapi):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    response, body = call(cloud_app(openapi), body={"image": {"file_id": openapi.put(
        "bomb.png", bomb)}})
    assert response.status == 413
    assert "30000x30000" in body["error"]["message"]


def test_a_cloud_file_that_is_not_an_image_is_400_naming_it(openapi):
    response, body = call(cloud_app(openapi), body={"images": [
        {"file_id": openapi.put("notes.txt", b"hello, not a photo\n")}]})
    assert response.status == 400
    assert body["error"]["code"] == "invalid_image"
    assert body["error"]["message"].startswith("images[0] is not an image")


def test_a_download_slower_than_the_deadline_is_504(openapi):
    openapi.delay_seconds = 1.5
    response, body = call(cloud_app(openapi, cloud_file_timeout=0.5),
                          body={"image": {"file_id": openapi.put("slow.png", DIGIT)}})
    assert response.status == 504
    assert body["error"]["message"].endswith("did not finish within CLOUD_FILE_TIMEOUT (0.5 s)")


def test_cloud_file_parses_the_environment_from_the_id():
    assert cloud_file({"file_id": " cloud://prod-7g3xk2.7072-prod-1300/a/b c.jpg "}, "x") == (
        CloudFile("cloud://prod-7g3xk2.7072-prod-1300/a/b c.jpg", "prod-7g3xk2"))
