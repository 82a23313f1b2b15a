"""`modelprep verify` passes on every source kind wrapped in every input and output mode."""

from __future__ import annotations

import pytest

from modelprep.verify import VerifyOptions, verify
from tests.modelprep import source_models as models

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", models.WRAPPED)
def test_verify_passes_on_each_wrapped_source(name):
    if name == "half_plus_two" and not (models.HALF_PLUS_TWO / "00000123").is_dir():
        pytest.skip(f"TF Serving test models not at {models.HALF_PLUS_TWO}")
    source, _ = models._wrap_configs()[name]
    prepared, metadata = models.wrapped(name)
    report = verify(source(), prepared, VerifyOptions(count=6))
    assert report.passed, report.format()
    checked = {check.name for check in report.outputs}
    assert checked == {o.name for o in metadata.outputs}
