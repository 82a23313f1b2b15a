"""Upstream faults through the real function server: mapped status, within the deadline,
and the next good request succeeds.

The model server here is a fake on loopback (tests/backends/fakes.py) because a real
one cannot be made slow, broken or down on cue; the function is the real
functions-framework server with the thin TF Serving backends.
"""

from __future__ import annotations

import time

import pytest

from tests.backends.fakes import CLASS, FakeGrpcServer, FakeRestServer
from tests.conftest import encode, start_server, stop_server

pytestmark = pytest.mark.slow

DEADLINE = 1.5
MARGIN = 1.0
"""Time past the deadline a reply may take: the function's own work and the test's."""
REPLY_CAP = 1_000_000


@pytest.fixture(scope="module")
def image(digits):
    return encode(digits.x_test[0])


@pytest.fixture(scope="module", params=["rest", "grpc"])
def setup(request, demo_model, tmp_path_factory):
    fake = FakeRestServer() if request.param == "rest" else FakeGrpcServer()
    url = fake.url if request.param == "rest" else fake.target
    server = start_server(tmp_path_factory.mktemp(f"faults-{request.param}"), {
        "MODEL_URI": str(demo_model.served), "BACKEND": f"tfserving-{request.param}",
        "TFSERVING_URL": url, "REQUEST_TIMEOUT": str(DEADLINE), "UPSTREAM_RETRIES": "2",
        "MAX_UPSTREAM_REPLY_BYTES": str(REPLY_CAP), "LOG_FORMAT": "text"})
    yield request.param, fake, server
    stop_server(server)
    fake.stop()


def predict(server, image):
    started = time.monotonic()
    response = server.post(files={"file": ("d.png", image, "image/png")}, timeout=30)
    return response, time.monotonic() - started


def assert_recovers(server, fake, image):
    fake.mode = "ok"
    response, _ = predict(server, image)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class_id"] == CLASS


@pytest.mark.parametrize(("mode", "status", "code", "message", "attempts"), [
    ("unavailable", 503, "upstream_unavailable",
     "the model server is unavailable; retry shortly", 3),
    ("error", 502, "bad_gateway",
     "the model server failed (INTERNAL); the server log has the details", 1),
    ("missing", 404, "model_not_found", "the model server has no model 'digits'", 1),
    ("malformed", 502, "bad_gateway", None, 1),
    ("garbage", 502, "bad_gateway", None, 1),
    ("slow", 504, "gateway_timeout", f"the model server did not answer within {DEADLINE:g} s",
     1),
])
def test_fault_is_mapped_within_the_deadline_then_recovers(setup, image, mode, status, code,
                                                           message, attempts):
    wire, fake, server = setup
    fake.mode = mode
    before = fake.predict_calls()
    response, took = predict(server, image)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message
    else:
        assert error["message"].startswith("the model server sent a reply that does not fit")
    assert took < DEADLINE + MARGIN
    assert fake.predict_calls() - before == attempts
    if mode == "unavailable":
        assert response.headers["Retry-After"] == "1"
    assert_recovers(server, fake, image)


def test_server_down_then_back(setup, image):
    wire, fake, server = setup
    fake.stop()
    response, took = predict(server, image)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {"code": "upstream_unavailable",
                                        "message": "the model server is unavailable; "
                                                   "retry shortly"}
    assert took < DEADLINE + MARGIN
    fake.start()
    deadline = time.monotonic() + 10  # gRPC reconnects with backoff of at most 1 s
    while True:
        fake.mode = "ok"
        response, _ = predict(server, image)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class_id"] == CLASS


# -- hostile upstream: dripping, redirecting, non-JSON numbers, deep nesting, huge ------


def test_rest_drip_is_answered_within_the_deadline(setup, image):
    """The model server sends its (valid) reply one byte every 0.2 s: far past the
    deadline in all, though no single read ever waits long."""
    wire, fake, server = setup
    if wire != "rest":
        pytest.skip("gRPC's deadline is the channel's own; a dripping HTTP reply is REST's")
    for stage in ("status", "headers", "body"):
        fake.mode, fake.drip = "ok", (0.2, stage)
        try:
            response, took = predict(server, image)
        finally:
            fake.drip = None
        assert response.status_code == 504, (stage, response.text)
        assert response.json()["error"] == {
            "code": "gateway_timeout",
            "message": f"the model server did not answer within {DEADLINE:g} s"}
        assert took < DEADLINE + MARGIN, (stage, took)
    assert_recovers(server, fake, image)


def test_rest_redirects_are_not_followed(setup, image):
    wire, fake, server = setup
    if wire != "rest":
        pytest.skip("REST only")
    elsewhere = FakeRestServer()
    try:
        for status in (301, 302, 303, 307, 308):
            fake.mode = "custom"
            fake.reply = (status, {"Location": elsewhere.url + "/v1/models/digits:predict"},
                          b"", False)
            response, _ = predict(server, image)
            assert response.status_code == 502, response.text
            assert response.json()["error"]["message"] == (
                f"the model server answered with a redirect (HTTP {status}), which is not "
                "followed; set TFSERVING_URL to the model server itself")
        assert elsewhere.calls == []  # the image went nowhere else
    finally:
        elsewhere.stop()
    assert_recovers(server, fake, image)


@pytest.mark.parametrize("reply", [
    b'{"outputs": [[NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}',
    b'{"outputs": [[Infinity, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}',
    b'{"outputs": [[0, 0, 0, 0, 0, 0, 0, 0, 0, -Infinity]]}',
    b'{"outputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"outputs": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",
    b'{"outputs": [[1e999, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}',
])
def test_rest_replies_that_are_not_json_numbers_or_too_deep_are_502(setup, image, reply):
    wire, fake, server = setup
    if wire != "rest":
        pytest.skip("REST only")
    fake.mode, fake.reply = "custom", (200, {}, reply, False)
    response, _ = predict(server, image)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["message"].startswith(
        "the model server sent a reply that does not fit the model: ")
    assert_recovers(server, fake, image)


def test_grpc_nan_scores_are_502(setup, image):
    wire, fake, server = setup
    if wire != "grpc":
        pytest.skip("gRPC only (REST's NaN is refused as JSON above)")
    fake.mode = "nan"
    response, _ = predict(server, image)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["message"] == (
        "the model server sent a reply that does not fit the model: output 'scores' holds "
        "NaN or infinite values")
    assert_recovers(server, fake, image)


def test_replies_over_the_cap_are_502(setup, image):
    wire, fake, server = setup
    if wire == "rest":
        big = b'{"outputs": [[' + b"0.5, " * 300_000 + b'0.5]]}'
        for chunked in (False, True):
            fake.mode, fake.reply = "custom", (200, {}, big, chunked)
            response, _ = predict(server, image)
            assert response.status_code == 502, response.text
            assert response.json()["error"]["message"] == (
                "the model server's reply is over 1,000,000 bytes (MAX_UPSTREAM_REPLY_BYTES)")
    else:
        fake.mode = "huge"
        response, _ = predict(server, image)
        assert response.status_code == 502, response.text
        assert response.json()["error"]["message"] == (
            "the model server's reply is over 1,000,000 bytes (MAX_UPSTREAM_REPLY_BYTES)")
    assert_recovers(server, fake, image)
