"""Fixtures for the client tests: one real function server with the demo page on, and real
digit images on disk, shared by the Node and the browser tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import Server, start_server, stop_server


@dataclass(frozen=True)
class DigitFiles:
    directory: Path
    """Holds digit-<label>.png and manifest.json: [{"file": ..., "label": ...}, ...]."""
    files: dict[str, Path]
    """label -> file."""


@pytest.fixture(scope="package")
def demo_server(demo_model, tmp_path_factory) -> Server:
    """The function serving the demo digits model with DEMO_PAGE on, as `make serve` runs it."""
    srv = start_server(tmp_path_factory.mktemp("client-server"),
                       {"MODEL_URI": str(demo_model.served), "DEMO_PAGE": "true",
                        "LOG_FORMAT": "text"})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="package")
def digit_files(digits, tmp_path_factory) -> DigitFiles:
    """The first held-out image of each class as a 28x28 gray PNG, white ink on black."""
    directory = tmp_path_factory.mktemp("digits")
    files: dict[str, Path] = {}
    manifest = []
    for label in range(10):
        index = int(np.flatnonzero(digits.y_test == label)[0])
        path = directory / f"digit-{label}.png"
        Image.fromarray(digits.x_test[index]).save(path)
        files[str(label)] = path
        manifest.append({"file": path.name, "label": str(label)})
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return DigitFiles(directory, files)


@dataclass(frozen=True)
class SceneFiles:
    scene: object
    """`modelprep.segmentation.Scene`: the image and the shapes drawn on it."""
    png: Path
    jpeg: Path


@pytest.fixture(scope="package")
def segmentation_server(tmp_path_factory) -> Server:
    """The function serving the segmentation demo model (built once, cached), page on."""
    from modelprep.segmentation import build_segmentation_demo

    model = build_segmentation_demo()
    srv = start_server(tmp_path_factory.mktemp("segmentation-server"),
                       {"MODEL_URI": str(model.served), "DEMO_PAGE": "true",
                        "LOG_FORMAT": "text"})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="package")
def scene_files(tmp_path_factory) -> SceneFiles:
    """A generated 640x480 scene of seven shapes, as PNG and as a phone's JPEG."""
    from modelprep.segmentation import random_scene

    scene = random_scene(3)
    directory = tmp_path_factory.mktemp("scene")
    png, jpeg = directory / "scene.png", directory / "scene.jpg"
    Image.fromarray(scene.image).save(png)
    Image.fromarray(scene.image).save(jpeg, quality=90)
    return SceneFiles(scene, png, jpeg)
