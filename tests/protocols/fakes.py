"""Stand-in backends and a request helper for the protocol adapters, tested in process.

The backends answer fixed numbers instead of running a model, because these tests are
about what each adapter does around the model (parsing, limits, errors, shapes); the
real models through real servers and real client libraries are in test_clients.py.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import replace
from typing import Any

import numpy as np

from functions.app import App
from functions.config import Settings
from functions.errors import InvalidImage
from functions.httpio import Headers, HttpRequest, HttpResponse
from modelmeta import ImageSpec, InputSpec, ModelMetadata, OutputSpec
from tests.conftest import encode

SCORES = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.55], np.float32)
PNG = encode(np.zeros((28, 28), np.uint8))
B64 = base64.b64encode(PNG).decode("ascii")
CORRUPT = PNG[:60]


class FakeClassifier:
    """10 classes; `SCORES` for every image; a corrupt image is refused as the graph would."""

    def __init__(self) -> None:
        self.metadata = ModelMetadata(
            "fake", (InputSpec("image_bytes", "image_bytes", "string", (-1,),
                               image=ImageSpec(28, 28, 1), original="images"),),
            (OutputSpec("scores", "probabilities", "float32", (-1, 10)),),
            labels=tuple(str(i) for i in range(10)))
        self.calls: list[int] = []

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = inputs["image_bytes"]
        self.calls.append(len(images))
        if any(item == CORRUPT for item in images):
            raise InvalidImage("the image data is corrupt or truncated and could not be decoded")
        return {"scores": np.tile(SCORES, (len(images), 1))}


class FakeTensorModel:
    """No image input: ``x`` float32 [-1, 2] in, ``y = 2x + 1`` and ``label_bytes`` out."""

    def __init__(self) -> None:
        self.metadata = ModelMetadata(
            "affine", (InputSpec("x", "tensor", "float32", (-1, 2)),),
            (OutputSpec("y", "tensor", "float32", (-1, 2)),
             OutputSpec("label_bytes", "tensor", "string", (-1,))))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        labels = np.array([f"row{i}".encode() for i in range(len(x))], dtype=object)
        return {"y": (2 * x + 1).astype(np.float32), "label_bytes": labels}


def make_app(backend: Any = None, **changes: Any) -> App:
    settings = replace(Settings(model_uri="/models/fake/3", log_format="text",
                                log_level="ERROR"), **changes)
    fake = backend or FakeClassifier()
    return App(settings, backend_factory=lambda: fake)


def call(app: App, method: str, path: str, body: bytes | dict | None = None,
         headers: dict[str, str] | None = None, gzipped: bool = False) -> HttpResponse:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    if gzipped and body:
        body = gzip.compress(body)
        headers = {"Content-Encoding": "gzip", **(headers or {})}
    return app.handle(HttpRequest(method, path, Headers(headers or {}), body or b""))


def error_of(response: HttpResponse) -> str:
    """The message of a ``{"error": "..."}`` answer, after checking it is one and a 4xx."""
    assert 400 <= response.status < 500, (response.status, response.body[:300])
    body = json.loads(response.body)
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return body["error"]
