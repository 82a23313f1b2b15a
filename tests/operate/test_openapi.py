"""The OpenAPI document: valid OpenAPI 3.1, and in step with the code it is built from."""

from __future__ import annotations

import json
import re
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
    native = {path for path in openapi.document(Settings())["paths"]
              if not path.startswith(("/v1/", "/v2"))}
    assert native == {"/", "/predict", "/livez", "/healthz", "/readyz"}
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


def test_cloud_file_ids_are_an_image_shape():
    schemas = openapi.document(Settings())["components"]["schemas"]
    image = schemas["PredictJson"]["properties"]["image"]
    assert {"$ref": "#/components/schemas/CloudFileImage"} in image["anyOf"]
    items = schemas["PredictJson"]["properties"]["images"]["items"]["anyOf"]
    assert {"$ref": "#/components/schemas/CloudFileImage"} in items
    pattern = re.compile(schemas["CloudFileImage"]["properties"]["file_id"]["pattern"])
    assert pattern.match("cloud://prod-1a2b.7072-prod-1a2b/photos/cat.jpg")
    assert not pattern.match("https://example.com/cat.jpg")


def test_a_cloud_file_id_without_cloud_env_is_the_documented_400():
    response, body = call(make_app(), body={"image": {
        "file_id": "cloud://prod-1a2b.7072-prod-1a2b/photos/cat.jpg"}})
    assert response.status == 400
    assert "CLOUD_ENV" in body["error"]["message"]


def test_simple_tf_serving_widens_the_predict_operations():
    doc = openapi.document(Settings())
    for path in ("/", "/predict"):
        operation = doc["paths"][path]["post"]
        json_body = operation["requestBody"]["content"]["application/json"]
        assert json_body["schema"]["anyOf"][0] == {"$ref": "#/components/schemas/PredictJson"}
        assert json_body["schema"]["anyOf"][1]["required"] == ["data"]
        error = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert error == {"anyOf": [{"$ref": "#/components/schemas/Error400"},
                                   {"$ref": "#/components/schemas/ProtocolError"}]}
        response, body = call(make_app(), path=path, body=json_body["examples"]["simple"][
            "value"])
        assert response.status == 200, body
        assert body["scores"][0][9] == pytest.approx(0.55)


@pytest.mark.parametrize("path, body", [
    ("/v1/models/fake:predict", "row"), ("/v1/models/fake:predict", "columnar"),
    ("/v2/models/fake/infer", "json")])
def test_the_protocol_examples_are_requests_the_function_answers(path, body):
    doc = openapi.document(Settings())
    template = path.replace("fake", "{name}")
    example = doc["paths"][template]["post"]["requestBody"]["content"]["application/json"][
        "examples"][body]["value"]
    response, answer = call(make_app(), path=path, body=example)
    assert response.status == 200, answer
