"""Fixtures of the instance-segmentation tests: the demo model and a server serving it."""

from __future__ import annotations

import pytest

from tests.conftest import start_server, stop_server


@pytest.fixture(scope="session")
def seg_demo():
    """The segmentation demo, built by `modelprep demo --segmentation` once and cached."""
    from modelprep.segmentation import build_segmentation_demo

    return build_segmentation_demo()


@pytest.fixture(scope="session")
def seg_server(seg_demo, tmp_path_factory):
    """The function serving the segmentation demo, as `make serve` would with MODEL_URI."""
    srv = start_server(tmp_path_factory.mktemp("seg-server"),
                       {"MODEL_URI": str(seg_demo.served), "MAX_IMAGES": "4"})
    yield srv
    stop_server(srv)
