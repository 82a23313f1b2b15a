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
        "LOG_FORMAT": "text"})
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
