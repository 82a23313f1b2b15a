"""The OpenAPI document: valid OpenAPI 3.1, and in step with the code it is built from."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from openapi_spec_validator import validate

from functions import errors, openapi
from functions.answers.masks import MASK_FORMATS
from functions.auth import AuthSettings
from functions.config import Settings
from tests.functions.test_app import B64, call, make_app

CONFIGS = {
    "default": Settings(),
    "everything on": replace(Settings(), metrics="prometheus", openapi=True, demo_page=True,
                             auth=AuthSettings(api_keys=("k",), hmac_keys=(("a", "s"),))),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_valid_openapi_3_1(name):
    doc = openapi.document(CONFIGS[name])
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def all_error_classes() -> list[type[errors.ServiceError]]:
    found, pending = [], [errors.ServiceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_code_is_documented_under_its_status():
    schemas = openapi.document(Settings())["components"]["schemas"]
    for cls in all_error_classes():
        enum = schemas[f"Error{cls.status}"]["properties"]["error"]["properties"]["code"]["enum"]
        assert cls.code in enum, (cls.__name__, cls.status)
        assert cls.code in schemas["ErrorDetail"]["properties"]["code"]["enum"]


def test_predict_lists_every_error_status_but_405():
    doc = openapi.document(Settings())
    documented = {int(s) for s in doc["paths"]["/predict"]["post"]["responses"]} - {200}
    assert documented == {cls.status for cls in all_error_classes()} - {405}


def test_options_and_limits_come_from_the_code():
    settings = replace(Settings(), max_images=3, max_body_bytes=1234, default_top_k=2)
    doc = openapi.document(settings)
    schemas = doc["components"]["schemas"]
    assert schemas["MaskFormat"]["enum"] == list(MASK_FORMATS)
    assert schemas["TopK"]["default"] == 2
    assert doc["x-limits"] == {"max_body_bytes": 1234, "max_response_bytes": 6_291_456,
                               "max_image_pixels": 25_000_000, "max_images": 3}
    assert "At most 3 images (MAX_IMAGES), 1234 body bytes" in \
        doc["paths"]["/"]["post"]["description"]


def test_routes_follow_the_settings():
    assert set(openapi.document(Settings())["paths"]) == {
        "/", "/predict", "/livez", "/healthz", "/readyz"}
    everything = openapi.document(CONFIGS["everything on"])
    assert {"/metrics", "/openapi.json"} <= set(everything["paths"])
    assert "get" in everything["paths"]["/"]
    assert everything["paths"]["/"]["post"]["security"] == [{"apiKey": []}, {"bearer": []},
                                                            {"hmac": []}]


def test_the_examples_are_requests_the_function_answers():
    doc = openapi.document(Settings())
    examples = doc["paths"]["/"]["post"]["requestBody"]["content"]["application/json"][
        "examples"]
    app = make_app()
    for example in examples.values():
        response, body = call(app, body=example["value"])
        assert response.status == 200, body


def test_served_only_when_asked():
    response, body = call(make_app(), method="GET", path="/openapi.json")
    assert (response.status, body["error"]["code"]) == (404, "not_found")
    app = make_app(openapi=True)
    response, body = call(app, method="GET", path="/openapi.json")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert body == json.loads(openapi.document_bytes(app.settings))
    assert call(app, body={"image": B64})[0].status == 200
