"""The demo model's LiteRT flavours, exported once per test session into a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def litert_export(demo_model, tmp_path_factory):
    """`modelprep litert` on the demo's prepared model: float and int8, calibrated on the
    digits training split (the held-out split stays for the checks)."""
    from modelprep.litert import LiteRTOptions, export_litert

    out = tmp_path_factory.mktemp("litert") / "litert"
    return export_litert(demo_model.served, LiteRTOptions(out=out))


@pytest.fixture(scope="session")
def tensor_fed(tmp_path_factory):
    """A tiny model with Mask R-CNN's input contract (`tests.litert.tensor_model`),
    prepared, and its LiteRT flavours exported: float and int8, both verified."""
    from modelprep.litert import LiteRTOptions, export_litert
    from tests.litert import tensor_model

    base = tmp_path_factory.mktemp("tensor-fed")
    tensor_model.build(base / "served")
    export = export_litert(base / "served", LiteRTOptions(out=base / "litert", count=20,
                                                          verify_count=16))
    return base / "served", export
