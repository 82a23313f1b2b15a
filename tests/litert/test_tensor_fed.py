"""LiteRT flavours of a model whose inputs are all numbers (tensor-fed), on a tiny model.

The model (`tests.litert.tensor_model`) takes what the segmentation demo takes, at toy
size: int8 pixels and ``input_image_meta``. The flavours are the prepared signature
itself, so the backend must declare the SavedModel's own inputs and outputs, take the
tensors the function's feed builds for the SavedModel, and answer as the SavedModel
does. Real TensorFlow, converter and LiteRT interpreter throughout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from functions.errors import ModelNotReady, ServiceError
from functions.feed import model_inputs
from functions.request.images import inspect_image
from modelmeta import ModelMetadata
from modelprep.samples import synthetic_image
from tests.conftest import ROOT, encode

pytestmark = pytest.mark.slow


def feed_for(metadata: ModelMetadata, shapes: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """What the function sends the model for images of these sizes (a batch)."""
    rng = np.random.default_rng(7)
    images = [inspect_image(encode(synthetic_image(rng, i % 4, h, w, 3)), f"images[{i}]",
                            max_pixels=10**8) for i, (h, w) in enumerate(shapes)]
    return model_inputs(metadata, images)


@pytest.fixture(scope="module")
def savedmodel(tensor_fed):
    import tensorflow as tf

    served, _ = tensor_fed
    fn = tf.saved_model.load(str(served)).signatures["serving_default"]

    def run(feed):
        return {k: v.numpy() for k, v in fn(**{n: tf.constant(v) for n, v in feed.items()})
                .items()}

    return run


def test_both_flavours_convert_verify_and_carry_the_prepared_models_contract(tensor_fed):
    served, export = tensor_fed
    prepared = ModelMetadata.load(served)
    assert [f.flavour for f in export.files] == ["float", "int8"]
    assert export.skipped == ()
    assert export.report is not None and export.report.passed
    assert export.report.preprocessing is None
    for file in export.files:
        meta = ModelMetadata.from_json(file.metadata_path.read_text())
        assert meta.inputs == prepared.inputs and meta.outputs == prepared.outputs
        assert meta.labels == prepared.labels and meta.name == prepared.name
        assert meta.source["litert_flavour"] == file.flavour
        assert meta.source["verified"] is True
        assert meta.source["verified_against"] == "the prepared SavedModel"
        assert meta.source["verification"].startswith("16 images (16 synthetic 16x16x3")
    text = export.format()
    assert ("inputs 'input_image' int8[-1, 16, 16, 3] scale 1 zero point -128, "
            "'input_image_meta' float32[-1, 16]") in text
    assert "int8 calibrated on 20 synthetic 16x16x3 images (seed 0)" in text
    assert "int8   scores (probabilities): argmax 100.00% (>= 99%)" in text
    assert text.endswith("PASSED")


@pytest.mark.parametrize("flavour, tolerance", [("float", 1e-5), ("int8", 0.05)])
def test_the_backend_takes_the_savedmodels_inputs_and_answers_as_it_does(
        tensor_fed, savedmodel, flavour, tolerance):
    from functions.backends.litert import LiteRTBackend

    served, export = tensor_fed
    backend = LiteRTBackend(export.out, flavour)
    assert backend.metadata.inputs == ModelMetadata.load(served).inputs
    feed = feed_for(backend.metadata, [(16, 16), (30, 12), (9, 40)])
    assert feed["input_image"].dtype == np.int8 and feed["input_image_meta"].shape == (3, 16)
    got, want = backend.predict(feed), savedmodel(feed)
    assert sorted(got) == ["heat", "scores"]
    for name in got:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        assert np.abs(got[name] - want[name]).max() <= tolerance, name
    assert np.array_equal(got["scores"].argmax(1), want["scores"].argmax(1))
    one = backend.predict({k: v[1:2] for k, v in feed.items()})  # a batch of one
    assert np.array_equal(one["scores"], got["scores"][1:2])


def test_feeds_the_model_cannot_take_are_refused_plainly(tensor_fed):
    from functions.backends.litert import LiteRTBackend

    _, export = tensor_fed
    backend = LiteRTBackend(export.out, "float")
    feed = feed_for(backend.metadata, [(16, 16)])
    with pytest.raises(ServiceError, match=r"the LiteRT model takes \['input_image', "
                                           r"'input_image_meta'\], got \['input_image'\]"):
        backend.predict({"input_image": feed["input_image"]})
    wrong = {**feed, "input_image": feed["input_image"].astype(np.uint8)}
    with pytest.raises(ServiceError, match=r"the LiteRT model's input 'input_image' takes "
                                           r"int8\[-1, 16, 16, 3\], got uint8\[1, 16, 16, 3\]"):
        backend.predict(wrong)
    short = {**feed, "input_image_meta": np.zeros((2, 16), np.float32)}
    with pytest.raises(ServiceError, match="disagree on the batch size"):
        backend.predict(short)


def test_metadata_that_does_not_match_the_model_is_refused(tensor_fed, tmp_path):
    from functions.backends.litert import LiteRTBackend

    _, export = tensor_fed
    folder = tmp_path / "litert"
    shutil.copytree(export.out, folder)
    meta = json.loads((folder / "model_float.json").read_text())
    meta["inputs"][1]["shape"] = [-1, 12]
    (folder / "model_float.json").write_text(json.dumps(meta))
    with pytest.raises(ModelNotReady, match=r"tensor 'input_image_meta' is float32\[-1, 16\] "
                                            r"but its metadata says float32\[-1, 12\]; export "
                                            "the flavour again"):
        LiteRTBackend(folder, "float")
    meta["inputs"][1]["shape"] = [-1, 16]
    meta["inputs"][0]["kind"] = "pixels"
    (folder / "model_float.json").write_text(json.dumps(meta))
    with pytest.raises(ModelNotReady, match="must describe one input of kind 'pixels', or "
                                            "inputs of kinds quantized_pixels and tensor only"):
        LiteRTBackend(folder, "float")


def test_a_flavour_outside_its_tolerance_fails_verification(tensor_fed):
    from modelprep.errors import VerificationFailed
    from modelprep.litert import LiteRTTolerances, verify_litert

    served, export = tensor_fed
    report = verify_litert(None, served, litert_dir=export.out, flavours=["int8"], count=4,
                           tolerances=LiteRTTolerances(int8_max_error=1e-6))
    assert not report.passed
    assert any(p.startswith("int8 heat: max error ") for p in report.failures())
    with pytest.raises(VerificationFailed, match="disagree with the original model"):
        report.raise_if_failed()


def test_the_cli_exports_a_tensor_fed_model(tensor_fed, tmp_path):
    served, _ = tensor_fed
    out = subprocess.run([sys.executable, "-m", "modelprep.cli", "litert", str(served),
                          "--flavour", "float", "--out", str(tmp_path / "litert"),
                          "--verify-count", "4"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr
    assert "float  scores (probabilities): argmax 100.00%" in out.stdout
    assert "compared with the prepared SavedModel" in out.stdout
    assert sorted(p.name for p in (tmp_path / "litert").iterdir()) == [
        "model_float.json", "model_float.tflite"]
