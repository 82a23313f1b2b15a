"""Every route the function answers is in the OpenAPI document, and nothing more.

The routes are found by asking the app, not by reading its code: every path of a grammar
wider than the routes (each protocol's prefixes, addresses, verbs and actions, plus
near misses) is sent with GET and POST to an App (the fake backend of
tests/functions/test_app.py: no TensorFlow needed). An answer that is not "no such path",
TF Serving's "Malformed request" or a 405 means the app routed it, and then some
documented operation must match that method and path; each documented operation, in
turn, must be routed. A route added to app.py or functions/protocols/ without its
`openapi_paths` entry fails here.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace

import pytest

from functions import app as app_module
from functions import openapi
from functions.config import Settings
from functions.httpio import Headers, HttpRequest
from tests.functions.test_app import make_app

EVERYTHING = {"metrics": "prometheus", "openapi": True, "demo_page": True}
NAMES = ("fake", "other")
VALUES = {"name": "fake", "version": "3", "label": "stable"}


def candidate_paths() -> list[str]:
    native = [*app_module.NATIVE_ROUTES, "/elsewhere", "/predict/more"]
    v1 = [f"/v1/models/{name}{address}{end}"
          for name, address, end in itertools.product(
              NAMES, ("", "/versions/3", "/versions/x", "/labels/stable", "/labels/other"),
              ("", "/metadata", ":predict", ":classify", ":regress", ":explain", "/more",
               "/metadata/more"))]
    v1 += ["/v1", "/v1/models", "/v1/elsewhere"]
    v2 = ["/v2", "/v2/health", "/v2/health/live", "/v2/health/ready", "/v2/health/other",
          "/v2/models", "/v2/repository/index", "/v2/elsewhere"]
    v2 += [f"/v2/models/{name}{address}{end}"
           for name, address, end in itertools.product(
               NAMES, ("", "/versions/3", "/versions/9"),
               ("", "/ready", "/infer", "/metadata", "/generate", "/more/infer"))]
    return native + v1 + v2


def routed(app, method: str, path: str) -> bool:
    response = app.handle(HttpRequest(method, path, Headers({}), b"", {}))
    if response.status == 405:
        return False
    try:
        error = json.loads(response.body).get("error")
    except ValueError:
        return True  # a page or the metrics text: routed
    message = error.get("message") if isinstance(error, dict) else error
    return not (isinstance(message, str)
                and (message.startswith("no such path") or message.startswith("Malformed")))


def documented_patterns(doc: dict) -> list[tuple[str, re.Pattern[str]]]:
    patterns = []
    for path, item in doc["paths"].items():
        regex = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path))
        patterns += [(method.upper(), re.compile(regex)) for method in item]
    return patterns


@pytest.fixture(scope="module")
def app():
    return make_app(**EVERYTHING)


def test_every_route_the_app_answers_is_documented(app):
    patterns = documented_patterns(openapi.document(app.settings))
    answered = [(method, path) for method in ("GET", "POST") for path in candidate_paths()
                if routed(app, method, path)]
    assert len(answered) > 40
    missing = [(method, path) for method, path in answered
               if not any(m == method and p.fullmatch(path) for m, p in patterns)]
    assert missing == []


def test_every_documented_operation_is_a_route(app):
    doc = openapi.document(app.settings)
    for path, item in doc["paths"].items():
        concrete = re.sub(r"\{([a-z_]+)\}", lambda m: VALUES[m.group(1)], path)
        for method in item:
            assert routed(app, method.upper(), concrete), (method, path)


def test_protocols_are_documented_whatever_the_settings():
    paths = set(openapi.document(replace(Settings(), openapi=False))["paths"])
    assert {"/v1/models/{name}:predict", "/v1/models/{name}/versions/{version}/metadata",
            "/v1/models/{name}/labels/{label}:classify", "/v2/health/ready",
            "/v2/models/{name}/versions/{version}/infer"} <= paths
