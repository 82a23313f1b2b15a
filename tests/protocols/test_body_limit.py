"""A body over MAX_BODY_BYTES is refused by both WSGI bindings (functions-framework's and
the project's own) before it is read, and answered in the shape of the protocol it was
sent to.

In process through functions-framework's own Flask app and through the plain WSGI app
(no model is loaded: the refusal comes first).
"""

from __future__ import annotations

import pytest

from tests.conftest import WSGI_BINDINGS, wsgi_client


@pytest.fixture(params=WSGI_BINDINGS)
def client(monkeypatch, request):
    monkeypatch.setenv("MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("PRELOAD", "false")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    with wsgi_client(request.param) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/v1/models/digits:predict", "/v2/models/digits/infer"])
def test_protocol_paths_get_their_own_error_shape(client, path):
    response = client.post(path, data=b"x" * 5000, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"error": "request body is 5000 bytes; the limit is 1000 "
                                            "bytes (MAX_BODY_BYTES)"}
    assert response.headers["Connection"] == "close"


def test_the_native_api_gets_its_error_object(client):
    response = client.post("/", data=b"x" * 5000, content_type="image/png")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
