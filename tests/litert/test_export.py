"""`modelprep litert`: exporting LiteRT flavours and verifying them against the original."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from modelmeta import ModelMetadata, Normalization
from modelprep.errors import VerificationFailed
from tests.conftest import ROOT, encode

pytestmark = pytest.mark.slow


def test_demo_flavours_pass_verification(litert_export, demo_model):
    from modelprep.litert import verify_litert

    report = verify_litert(None, demo_model.served, litert_dir=litert_export.out)
    print(report.format())
    assert report.passed, report.failures()
    assert report.images == 64 and report.description == "64 held-out digits"
    pre = report.preprocessing
    assert (pre.identical, pre.max_pixel_error, pre.max_value_error) == (64, 0.0, 0.0)
    by_flavour = {f.flavour: f.outputs[0] for f in report.flavours}
    assert by_flavour["float"].argmax_agreement == 1.0
    assert by_flavour["float"].max_abs_error < 1e-5
    assert by_flavour["int8"].argmax_agreement >= 0.99
    assert by_flavour["int8"].max_abs_error < 0.1
    lines = report.format().splitlines()
    assert lines[1].startswith("preprocessing  Python vs graph: 64/64 images identical")
    assert lines[-1] == "PASSED"


def test_export_writes_both_flavours_with_their_sizes(litert_export):
    files = {f.flavour: f for f in litert_export.files}
    assert sorted(files) == ["float", "int8"]
    assert files["float"].model == litert_export.out / "model_float.tflite"
    assert files["int8"].metadata_path == litert_export.out / "model_int8.json"
    # int8 weights take a quarter of the float ones
    assert files["int8"].size_bytes < files["float"].size_bytes / 3
    assert litert_export.calibration == "200 digits of the training split"
    float_meta = ModelMetadata.from_json(files["float"].metadata_path.read_text())
    assert float_meta.inputs[0].quantization is None
    assert float_meta.inputs[0].dtype == "float32"
    assert float_meta.source["litert_flavour"] == "float"
    assert "calibration" not in float_meta.source
    text = litert_export.format()
    assert "int8 calibrated on 200 digits of the training split" in text
    assert "scale 0.00392157 zero point -128" in text


def test_a_wrong_flavour_fails_verification(litert_export, demo_model, tmp_path):
    """The int8 model put where the float one belongs: float tolerances catch it."""
    from modelprep.litert import verify_litert

    folder = tmp_path / "litert"
    folder.mkdir()
    shutil.copy(litert_export.out / "model_int8.tflite", folder / "model_float.tflite")
    shutil.copy(litert_export.out / "model_int8.json", folder / "model_float.json")
    report = verify_litert(None, demo_model.served, litert_dir=folder, count=16)
    assert not report.passed
    (failure,) = report.failures()
    assert failure.startswith("float scores: max error ")
    assert failure.endswith(" > 0.0001")
    with pytest.raises(VerificationFailed) as caught:
        report.raise_if_failed()
    assert caught.value.exit_code == 4
    assert report.format().splitlines()[-1] == "FAILED"


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A small colour classifier, 32x32x3 NHWC, random weights; wrapped with meanstd + crop."""
    import keras
    import tensorflow as tf

    from modelprep.wrap import WrapOptions, wrap

    keras.utils.set_random_seed(1)
    net = keras.Sequential([
        keras.Input(shape=(32, 32, 3), name="pixels"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    ])

    class Serving(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32,
                                                    name="pixels")])
        def serve(self, pixels):
            return {"logits": self.model(pixels, training=False)}

    base = tmp_path_factory.mktemp("rgb")
    serving = Serving(net)
    tf.saved_model.save(serving, str(base / "original"),
                        signatures={"serving_default": serving.serve})
    norm = Normalization("meanstd", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    wrap(base / "original", base / "served", WrapOptions(
        name="tiny", normalization=norm, resize="crop", output_roles={"logits": "logits"}))
    return base


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Crops of the photos scikit-learn ships, as JPEG and PNG files of several sizes."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(12):
        image = load_sample_images().images[i % 2]
        h, w = rng.integers(40, 400, 2)
        top, left = rng.integers(0, image.shape[0] - h), rng.integers(0, image.shape[1] - w)
        crop = Image.fromarray(image[top:top + h, left:left + w])
        crop.save(folder / f"photo{i}.{'jpg' if i % 3 else 'png'}")
    return folder


def test_a_colour_model_with_meanstd_and_crop(rgb_model, photos):
    """NHWC input, three channels, meanstd, crop, logits; calibrated on synthetic images."""
    from functions.backends.inprocess import InProcessBackend
    from functions.backends.litert import LiteRTBackend
    from modelprep.litert import LiteRTOptions, export_litert, verify_litert

    result = export_litert(rgb_model / "served", LiteRTOptions(count=40))
    assert result.out == rgb_model / "served" / "litert"
    assert result.calibration == "40 synthetic 32x32x3 images (seed 0)"
    int8 = {f.flavour: f for f in result.files}["int8"].metadata
    assert int8.inputs[0].shape == (-1, 32, 32, 3)
    assert int8.inputs[0].image.layout == "nhwc"
    assert int8.outputs[0].role == "logits"

    report = verify_litert(rgb_model / "original", rgb_model / "served", images=photos)
    print(report.format())
    assert report.images == 12
    pre = report.preprocessing
    assert 0 < pre.max_pixel_error <= 0.01  # crops are resized: within the bound, not exact
    by_flavour = {f.flavour: f.outputs[0] for f in report.flavours}
    assert by_flavour["float"].passed
    assert by_flavour["float"].argmax_agreement == 1.0

    # and through both backends, on the photo files as a client sends them
    served = InProcessBackend(rgb_model / "served")
    lite = LiteRTBackend(rgb_model / "served", "float")
    files = np.array([p.read_bytes() for p in sorted(photos.iterdir())], dtype=object)
    want = served.predict({"image_bytes": files})["logits"]
    got = lite.predict({"image_bytes": files})["logits"]
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert np.abs(got - want).max() < 1e-4


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprep.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_exports_from_a_folder_of_images_and_verifies(demo_model, digits, tmp_path):
    folder = tmp_path / "representative"
    folder.mkdir()
    for i in range(20):
        (folder / f"d{i:02d}.png").write_bytes(encode(digits.x_train[i]))
    out = run_cli("litert", str(demo_model.served), "--out", str(tmp_path / "lite"),
                  "--flavour", "int8", "--images", str(folder), "--verify", "--verify-count",
                  "32")
    assert out.returncode == 0, out.stderr
    assert f"int8 calibrated on 20 images from {folder}" in out.stdout
    assert "32 images: 32 held-out digits" in out.stdout
    assert out.stdout.rstrip().endswith("PASSED")
    assert sorted(p.name for p in (tmp_path / "lite").iterdir()) == ["model_int8.json",
                                                                    "model_int8.tflite"]


def test_cli_errors(tmp_path, demo_model):
    out = run_cli("litert", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"modelprep: error: prepared model {tmp_path / 'nope'} " \
        "does not exist"
    out = run_cli("litert", str(demo_model.served), "--flavour", "fp16")
    assert out.returncode == 2
    assert "invalid choice: 'fp16'" in out.stderr
    out = run_cli("litert", str(demo_model.served), "--out", str(tmp_path / "x"),
                  "--original", str(tmp_path))
    assert out.returncode == 2
    assert f"modelprep: error: original model {tmp_path} is not a SavedModel directory" \
        in out.stderr


def test_an_int8_flavour_that_misses_its_tolerance_is_marked_unverified(demo_model, tmp_path):
    """Calibrated on one blank image, int8's input range collapses to nothing: verify
    catches it, the command exits 4, and the flavour's metadata says verified: false (the
    litert backend refuses it unless told otherwise). The float flavour still passes."""
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "blank.png").write_bytes(encode(np.zeros((28, 28), np.uint8)))
    out = run_cli("litert", str(demo_model.served), "--out", str(tmp_path / "lite"),
                  "--images", str(blank), "--verify-count", "32")
    assert out.returncode == 4, out.stderr
    assert "int8 calibrated on 1 images from" in out.stdout
    assert out.stdout.rstrip().endswith("FAILED")
    assert ("The int8 flavour's metadata says verified: false, so the litert backend refuses "
            "it unless LITERT_ALLOW_UNVERIFIED=true") in out.stderr
    int8 = ModelMetadata.from_json((tmp_path / "lite" / "model_int8.json").read_text())
    assert int8.source["verified"] is False
    assert int8.source["verification"].startswith("32 images (32 held-out digits): int8 scores: ")
    flt = ModelMetadata.from_json((tmp_path / "lite" / "model_float.json").read_text())
    assert flt.source["verified"] is True
    assert flt.source["verification"].startswith("32 images (32 held-out digits): scores: "
                                                 "argmax 100.00%")


def test_int8_on_generated_images_says_why_it_should_get_photos(rgb_model):
    from modelprep.litert import LiteRTOptions, export_litert

    heard: list[str] = []
    result = export_litert(rgb_model / "served", LiteRTOptions(
        flavours=("int8",), out=rgb_model / "lite-synthetic", count=8, verify=False),
        warn=heard.append)
    assert heard == [
        "int8 is calibrated on 8 synthetic 32x32x3 images (seed 0) because no --images DIR "
        "was given: generated images do not span the value ranges real photos reach inside "
        "the model, so int8 answers may drift; give --images DIR with 100 or more "
        "representative 32x32 photos (any size is resized)"]
    assert f"warning: {heard[0]}" in result.format()
    (file,) = result.files
    assert file.metadata.source["verified"] is False
    assert file.metadata.source["verification"] == "not verified (exported with --no-verify)"
