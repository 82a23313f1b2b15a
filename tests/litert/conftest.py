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
