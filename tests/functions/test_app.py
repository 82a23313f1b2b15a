"""`App.handle` in process, over a fake backend: routing, methods, auth, CORS, options,
errors and limits, in milliseconds.

The backend is a stand-in (it answers fixed scores instead of running a model), because
these tests are about what the app does around the model; the real models, through the
real servers, are in test_server.py and the backend tests.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace

import numpy as np
import pytest

from functions.app import App
from functions.auth import AuthSettings, sign
from functions.config import Settings
from functions.errors import InvalidImage, ModelNotReady
from functions.httpio import Headers, HttpRequest, HttpResponse
from modelmeta import ImageSpec, InputSpec, ModelMetadata, OutputSpec
from tests.conftest import encode

LABELS = tuple(f"digit {i}" for i in range(10))
SCORES = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.55], np.float32)
PNG = encode(np.zeros((28, 28), np.uint8))
B64 = base64.b64encode(PNG).decode("ascii")


class FakeBackend:
    """A classifier of 10 classes that answers `SCORES` for every image it is fed."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.metadata = ModelMetadata(
            "fake", (InputSpec("image_bytes", "image_bytes", "string", (-1,),
                               image=ImageSpec(28, 28, 1)),),
            (OutputSpec("scores", "probabilities", "float32", (-1, 10)),), labels=LABELS)
        self.calls: list[int] = []
        self.fail_on = fail_on

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = inputs["image_bytes"]
        self.calls.append(len(images))
        if self.fail_on is not None and any(item == self.fail_on for item in images):
            raise InvalidImage("the image data is corrupt or truncated and could not be decoded")
        return {"scores": np.tile(SCORES, (len(images), 1))}


def make_app(backend: FakeBackend | None = None, **changes) -> App:
    settings = replace(Settings(model_uri="/models/fake/3", log_format="text",
                                log_level="ERROR"), **changes)
    fake = backend or FakeBackend()
    return App(settings, backend_factory=lambda: fake)


def call(app: App, method: str = "POST", path: str = "/", body: bytes | dict | None = None,
         headers: dict[str, str] | None = None, query: dict[str, str] | None = None
         ) -> tuple[HttpResponse, dict]:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    response = app.handle(HttpRequest(method, path, Headers(headers or {}), body or b"",
                                      query or {}))
    payload = json.loads(response.body) if response.body.startswith((b"{", b"[")) else {}
    return response, payload


# -- routing and methods -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/predict", "/predict/"])
def test_predict_paths_answer_the_top_class_and_the_model(path):
    response, body = call(make_app(), path=path, body={"image": B64})
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    first = body["predictions"][0]
    assert (first["class_id"], first["label"], first["score"]) == (9, "digit 9", 0.55)
    assert [c["class_id"] for c in first["top_k"]] == [9, 8, 7, 6, 5]
    assert body["model"] == {"name": "fake", "version": "3"}


def test_unknown_path_is_404_naming_the_path():
    response, body = call(make_app(), path="/nope")
    assert response.status == 404
    assert body["error"]["code"] == "not_found"
    assert "'/nope'" in body["error"]["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_predict_refuses_other_methods_with_allow(method):
    response, body = call(make_app(), method=method)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert body["error"]["code"] == "method_not_allowed"


def test_demo_page_when_on_adds_get_to_root_only():
    app = make_app(demo_page=True)
    page, _ = call(app, method="GET", path="/")
    assert page.status == 200 and page.body.lstrip().lower().startswith(b"<!doctype html")
    response, _ = call(app, method="GET", path="/predict")
    assert response.status == 405 and response.headers["Allow"] == "POST"
    response, _ = call(app, method="PUT", path="/")
    assert response.headers["Allow"] == "GET, HEAD, POST"


def test_livez_answers_without_the_model():
    def never() -> FakeBackend:
        raise AssertionError("livez must not load the model")

    app = App(Settings(log_format="text", log_level="ERROR"), backend_factory=never)
    response, body = call(app, method="GET", path="/livez")
    assert (response.status, body) == (200, {"status": "alive"})


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_is_ready_once_loaded(path):
    app = make_app()
    app.model.get()
    response, body = call(app, method="GET", path=path)
    assert (response.status, body) == (200, {"status": "ready",
                                             "model": {"name": "fake", "version": "3"}})
    response, _ = call(app, method="POST", path=path)
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"


def test_health_says_why_a_model_failed_to_load():
    def broken() -> FakeBackend:
        raise ModelNotReady("the model directory /nope does not exist")

    app = App(Settings(log_format="text", log_level="ERROR"), backend_factory=broken)
    deadline = time.monotonic() + 5
    response, body = call(app, method="GET", path="/healthz")
    while body.get("status") == "loading" and time.monotonic() < deadline:
        time.sleep(0.01)
        response, body = call(app, method="GET", path="/healthz")
    assert response.status == 503
    assert body["status"] == "failed"
    assert body["error"] == {"code": "model_not_ready",
                             "message": "the model directory /nope does not exist"}
    response, body = call(app, body={"image": B64})
    assert response.status == 503 and body["error"]["code"] == "model_not_ready"


def test_an_unexpected_error_is_a_generic_500_without_internals():
    class Exploding(FakeBackend):
        def predict(self, inputs):
            if self.calls:  # the warm-up at load passes; the request's call explodes
                raise RuntimeError("secret path /srv/model/variables")
            return super().predict(inputs)

    response, body = call(make_app(Exploding()), body={"image": B64})
    assert response.status == 500
    assert body == {"error": {"code": "internal",
                              "message": "internal error; the server log has the details"}}


def test_request_id_is_echoed_when_sane_and_made_when_not():
    app = make_app()
    response, _ = call(app, body={"image": B64}, headers={"X-Request-Id": "abc-123-XYZ"})
    assert response.headers["X-Request-Id"] == "abc-123-XYZ"
    response, _ = call(app, body={"image": B64}, headers={"X-Request-Id": "bad id\n"})
    assert len(response.headers["X-Request-Id"]) == 32


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (3, 3), ("2", 2), (" 4 ", 4),
                                                 (10, 10), (50, 10)])
def test_top_k_from_json_is_clamped_to_the_classes(value, expected):
    _, body = call(make_app(), body={"image": B64, "top_k": value})
    assert len(body["predictions"][0]["top_k"]) == expected


def test_top_k_from_the_query_string_and_the_default_setting():
    _, body = call(make_app(), body={"image": B64}, query={"top_k": "2"})
    assert len(body["predictions"][0]["top_k"]) == 2
    _, body = call(make_app(default_top_k=3), body={"image": B64})
    assert len(body["predictions"][0]["top_k"]) == 3


@pytest.mark.parametrize("value", [0, -1, 1.5, "two", True, None, [], {}])
def test_bad_top_k_is_a_400_naming_the_option(value):
    response, body = call(make_app(), body={"image": B64, "top_k": value})
    assert response.status == 400
    assert body["error"]["code"] == "invalid_option"
    assert body["error"]["message"].startswith("top_k must be a positive whole number")


def test_mask_format_on_a_classifier_is_refused():
    response, body = call(make_app(), body={"image": B64, "mask_format": "png"})
    assert response.status == 400
    assert body["error"] == {"code": "invalid_option", "message": "mask_format applies to "
                             "models that return masks; this one does not"}


# -- images and limits -------------------------------------------------------------------


def test_a_batch_is_one_model_call_in_request_order():
    backend = FakeBackend()
    _, body = call(make_app(backend), body={"images": [B64, B64, B64]})
    assert len(body["predictions"]) == 3
    assert backend.calls == [1, 3]  # the warm-up at load, then the request


def test_a_bad_image_in_a_batch_is_named():
    bad = encode(np.full((28, 28), 255, np.uint8))
    backend = FakeBackend(fail_on=bad)
    response, body = call(make_app(backend), body={"images": [B64, base64.b64encode(bad)
                                                              .decode()]})
    assert response.status == 400
    assert body["error"]["code"] == "invalid_image"
    assert body["error"]["message"].startswith("images[1]: ")


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"", 400, "missing_image"),
    ({"image": "!!!"}, 400, "invalid_base64"),
    ({"image": base64.b64encode(b"not an image").decode()}, 400, "invalid_image"),
    ({"images": []}, 400, "missing_image"),
    (b"{not json", 400, "invalid_json"),
])
def test_client_mistakes_are_4xx_json(body, status, code):
    headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else None
    response, payload = call(make_app(), body=body, headers=headers)
    assert response.status == status
    assert payload["error"]["code"] == code


def test_limits_on_images_body_pixels_and_response():
    response, body = call(make_app(max_images=2), body={"images": [B64] * 3})
    assert (response.status, body["error"]["code"]) == (413, "payload_too_large")
    assert "3 images; the limit is 2" in body["error"]["message"]
    response, body = call(make_app(max_body_bytes=100), body={"image": B64})
    assert response.status == 413
    response, body = call(make_app(max_image_pixels=27 * 28), body={"image": B64})
    assert response.status == 413 and "28x28 = 784 pixels" in body["error"]["message"]
    response, body = call(make_app(max_response_bytes=200), body={"image": B64})
    assert response.status == 413
    assert body["error"]["limit_bytes"] == 200


def test_unsupported_content_type_is_415():
    response, body = call(make_app(), body=b"hello", headers={"Content-Type": "text/plain"})
    assert (response.status, body["error"]["code"]) == (415, "unsupported_media_type")


# -- auth --------------------------------------------------------------------------------


def keyed(**auth) -> App:
    return make_app(auth=AuthSettings(**auth))


def test_api_keys_header_or_bearer():
    app = keyed(api_keys=("k1", "k2"))
    assert call(app, body={"image": B64}, headers={"X-API-Key": "k2"})[0].status == 200
    ok, _ = call(app, body={"image": B64}, headers={"Authorization": "Bearer k1"})
    assert ok.status == 200
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"}):
        response, body = call(app, body={"image": B64}, headers=headers)
        assert (response.status, body["error"]["code"]) == (401, "unauthorized")


def test_auth_guards_predict_but_not_health():
    app = keyed(api_keys=("k1",))
    assert call(app, method="GET", path="/livez")[0].status == 200


def signed_headers(secret: str, body: bytes, *, key_id: str = "app1", nonce: str | None = None,
                   timestamp: int | None = None, path: str = "/") -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or base64.urlsafe_b64encode(np.random.bytes(18)).decode()
    return {"Content-Type": "application/json", "X-Key-Id": key_id, "X-Timestamp": ts,
            "X-Nonce": nonce, "X-Signature": sign(secret, "POST", path, ts, nonce, body)}


def test_hmac_signed_requests_once_within_the_window():
    app = keyed(hmac_keys=(("app1", "s3cret"),), hmac_window_seconds=60)
    body = json.dumps({"image": B64}).encode()
    headers = signed_headers("s3cret", body)
    assert call(app, body=body, headers=headers)[0].status == 200
    replay, payload = call(app, body=body, headers=headers)
    assert (replay.status, payload["error"]["code"]) == (401, "unauthorized")
    stale = signed_headers("s3cret", body, timestamp=int(time.time()) - 3600)
    assert call(app, body=body, headers=stale)[0].status == 401
    wrong_secret = signed_headers("other", body)
    assert call(app, body=body, headers=wrong_secret)[0].status == 401
    other_body = signed_headers("s3cret", b"{}")
    assert call(app, body=body, headers=other_body)[0].status == 401


def test_app_id_filter_reads_the_wechat_referer():
    app = keyed(allowed_appids=("wx1234567890abcdef",))
    good = {"Referer": "https://servicewechat.com/wx1234567890abcdef/3/page-frame.html"}
    assert call(app, body={"image": B64}, headers=good)[0].status == 200
    other = {"Referer": "https://servicewechat.com/wxffffffffffffffff/3/page-frame.html"}
    response, body = call(app, body={"image": B64}, headers=other)
    assert (response.status, body["error"]["code"]) == (403, "forbidden")


def test_wechat_cloud_run_identity_counts_only_when_trusted():
    identity = {"X-WX-SOURCE": "wx_devtools", "X-WX-OPENID": "o6zAJs-openid"}
    trusting = keyed(trust_wechat_cloudrun=True)
    assert call(trusting, body={"image": B64}, headers=identity)[0].status == 200
    assert call(trusting, body={"image": B64})[0].status == 401
    keys_only = keyed(api_keys=("k1",))
    assert call(keys_only, body={"image": B64}, headers=identity)[0].status == 401


# -- CORS --------------------------------------------------------------------------------


def test_cors_for_allowed_origins_only():
    app = make_app(cors_origins=("https://a.example",))
    response, _ = call(app, method="OPTIONS", headers={"Origin": "https://a.example"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "X-Signature" in response.headers["Access-Control-Allow-Headers"]
    response, _ = call(app, body={"image": B64}, headers={"Origin": "https://a.example"})
    assert response.headers["Vary"] == "Origin"
    response, _ = call(app, body={"image": B64}, headers={"Origin": "https://b.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    response, _ = call(app, method="OPTIONS", headers={"Origin": "https://b.example"})
    assert response.status == 405


def test_cors_wildcard():
    app = make_app(cors_origins=("*",))
    response, _ = call(app, body={"image": B64}, headers={"Origin": "https://x.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
