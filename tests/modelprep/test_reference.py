"""`modelprep verify` against an independent reference, and wrap's hints: the commonest
mistake (the default ``--normalize unit`` for a model trained on ``p/127.5 - 1``) must
be caught, with a message that names the normalisation and the flag that fixes it.

The models are real: a Keras MobileNetV2 (``weights=None``: no download, but its own
name, ``mobilenetv2_0.35_64``), the demo digits model, and a small Keras model that
normalises its input with a ``Rescaling`` layer.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from modelmeta import Normalization
from modelprep.errors import ModelprepError, PreprocessingHintWarning, VerificationFailed
from modelprep.reference import ReferencePreprocess, suggest_flags
from modelprep.verify import VerifyOptions, verify
from tests.conftest import ROOT, encode

MOBILENET_REFERENCE = "keras.applications.mobilenet_v2.preprocess_input"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprep.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


# --- the reference's text form and the suggested flags (numpy only) -------------------


def test_reference_preprocess_text_forms():
    assert ReferencePreprocess.parse(MOBILENET_REFERENCE) == ReferencePreprocess(
        function=MOBILENET_REFERENCE)
    assert ReferencePreprocess.parse("0.0078431373, -1") == ReferencePreprocess(
        scale=0.0078431373, offset=-1.0)
    assert str(ReferencePreprocess.parse("2,-3")) == "p * 2 + -3"
    for text in ("preprocess_input", "1,2,3", "0,1", "a..b"):
        with pytest.raises(ModelprepError):
            ReferencePreprocess.parse(text)
    fn = ReferencePreprocess.parse("0.5,1").resolve()
    assert fn(np.array([[0.0, 10.0]], np.float32)).tolist() == [[1.0, 6.0]]


def test_reference_functions_are_imported_by_name_with_clear_errors():
    with pytest.raises(ModelprepError, match="no module 'nosuchpackage'"):
        ReferencePreprocess.parse("nosuchpackage.preprocess").resolve()
    with pytest.raises(ModelprepError, match="module numpy has no nosuch"):
        ReferencePreprocess.parse("numpy.nosuch").resolve()
    with pytest.raises(ModelprepError, match="numpy.pi is not callable"):
        ReferencePreprocess.parse("numpy.pi").resolve()
    negate = ReferencePreprocess.parse("numpy.negative").resolve()
    assert negate(np.ones((1, 2, 2, 1), np.float32)).sum() == -4


@pytest.mark.parametrize("scale, offset, flags", [
    (1 / 127.5, -1.0, "--normalize symmetric"),
    (1 / 255, 0.0, "--normalize unit"),
    (1.0, 0.0, "--normalize raw"),
    (-1 / 255, 1.0, "--normalize unit --invert"),
])
def test_suggested_flags_for_affine_references(scale, offset, flags):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    probes = np.array([[offset] * 3, [255 * scale + offset] * 3])
    suggestion = suggest_flags(pixels, pixels * scale + offset, probes, 1e-3)
    assert suggestion == f"wrap again with {flags}"


def test_suggested_flags_for_mean_and_std_and_for_channel_swaps():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    values = (pixels - mean) / std
    probes = np.stack([(0 - mean) / std, (255 - mean) / std])
    assert suggest_flags(pixels, values, probes, 1e-3) == (
        "wrap again with --normalize meanstd --mean 123.675,116.28,103.53 "
        "--std 58.395,57.12,57.375")
    bgr = pixels[..., ::-1] - mean[::-1]  # Keras' caffe mode
    probes = np.stack([-mean[::-1], 255 - mean[::-1]])
    assert "no --normalize reproduces it" in suggest_flags(pixels, bgr, probes, 1e-3)


# --- the commonest mistake, on a real Keras application --------------------------------


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV2 as keras.applications names it, saved as .keras, and two wraps of it:
    the default (unit, wrong) and the right one (symmetric)."""
    import keras

    from modelprep.wrap import WrapOptions, wrap

    base = tmp_path_factory.mktemp("mobilenet")
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                           classes=4)
    assert model.name == "mobilenetv2_0.35_64"
    model.save(base / "m.keras")
    heard: list[str] = []
    wrap(base / "m.keras", base / "unit", WrapOptions(), warn=heard.append)
    right: list[str] = []
    wrap(base / "m.keras", base / "symmetric",
         WrapOptions(normalization=Normalization("symmetric")), warn=right.append)
    return base, heard, right


@pytest.mark.slow
def test_wrap_warns_when_the_keras_application_name_says_otherwise(mobilenet):
    _, heard, right = mobilenet
    assert heard == [
        "input 'input_layer': the model is named 'mobilenetv2_0.35_64' (a Keras MobileNetV2, "
        "trained on p/127.5 - 1), but wrap normalises unit: p/255, the default: wrap with "
        "--normalize symmetric (modelprep verify --reference-preprocess "
        "keras.applications.mobilenet_v2.preprocess_input checks it)"]
    assert right == []


@pytest.mark.slow
def test_the_wrong_normalisation_fails_verify_with_a_reference(mobilenet):
    base, _, _ = mobilenet
    options = VerifyOptions(count=8, reference_preprocess=ReferencePreprocess.parse(
        MOBILENET_REFERENCE))
    # the old check passes it: both sides get the wrapped model's own p/255
    assert verify(base / "m.keras", base / "unit", VerifyOptions(count=8)).passed
    report = verify(base / "m.keras", base / "unit", options)
    assert not report.passed
    assert report.normalization is not None and not report.normalization.passed
    assert report.failures()[0] == (
        "normalisation differs: the wrapped model maps pixels 0 and 255 to 0 and 1 (unit: "
        "p/255), the reference (keras.applications.mobilenet_v2.preprocess_input) to -1 and "
        "1; wrap again with --normalize symmetric")
    with pytest.raises(VerificationFailed, match="^normalisation differs"):
        report.raise_if_failed()

    good = verify(base / "m.keras", base / "symmetric", options)
    assert good.passed, good.format()
    assert good.normalization.max_difference < 1e-6
    assert good.output("predictions").argmax_agree == 8


@pytest.mark.slow
def test_cli_verify_reference_preprocess_exits_4_naming_normalisation(mobilenet):
    base, _, _ = mobilenet
    out = run_cli("verify", str(base / "m.keras"), str(base / "unit"), "--count", "4",
                  "--reference-preprocess", "0.0078431373,-1")
    assert out.returncode == 4, out.stderr
    assert "reference: the original model fed p * 0.00784314 + -1 (--reference-preprocess)" \
        in out.stdout
    assert ("modelprep: error: normalisation differs: the wrapped model maps pixels 0 and 255 "
            "to 0 and 1 (unit: p/255)") in out.stderr
    assert "wrap again with --normalize symmetric" in out.stderr

    out = run_cli("verify", str(base / "m.keras"), str(base / "symmetric"), "--count", "4",
                  "--reference-preprocess", MOBILENET_REFERENCE)
    assert out.returncode == 0, out.stderr
    assert "normalisation: wrapped symmetric: p/127.5 - 1" in out.stdout


@pytest.mark.slow
def test_cli_wrap_prints_the_hint_as_a_warning(mobilenet, tmp_path):
    base, _, _ = mobilenet
    out = run_cli("wrap", str(base / "m.keras"), str(tmp_path / "w"))
    assert out.returncode == 0, out.stderr
    assert ("modelprep: warning: input 'input_layer': the model is named "
            "'mobilenetv2_0.35_64'") in out.stderr


@pytest.mark.slow
def test_a_rescaling_layer_at_the_input_asks_for_raw_pixels(tmp_path):
    import keras

    from modelprep.wrap import WrapOptions, wrap

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 127.5, -1),
                              keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")], name="tiny")
    model.save(tmp_path / "tiny.keras")
    with pytest.warns(PreprocessingHintWarning) as caught:
        wrap(tmp_path / "tiny.keras", tmp_path / "unit",
             WrapOptions(normalization=Normalization("symmetric")))
    (warning,) = caught
    assert str(warning.message).endswith(
        "the model starts with Rescaling (x * 0.007843 + -1) (it normalises 0..255 pixels "
        "itself; any other --normalize normalises twice), but wrap normalises symmetric: "
        "p/127.5 - 1: wrap with --normalize raw")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingHintWarning)
        wrap(tmp_path / "tiny.keras", tmp_path / "raw", WrapOptions(
            normalization=Normalization("raw")))


# --- answers computed elsewhere --------------------------------------------------------


@pytest.fixture(scope="module")
def digit_answers(demo_model, digits, tmp_path_factory):
    """20 held-out digits as PNG files and the original model's answers on them, computed
    here with the demo's known preprocessing (p/255): what a user brings from training."""
    import tensorflow as tf

    base = tmp_path_factory.mktemp("answers")
    folder = base / "images"
    folder.mkdir()
    names = [f"d{i:02d}.png" for i in range(20)]
    for name, pixels in zip(names, digits.x_test[:20], strict=True):
        (folder / name).write_bytes(encode(pixels))
    fn = tf.saved_model.load(str(demo_model.original)).signatures["serving_default"]
    x = digits.x_test[:20].reshape(20, 784).astype(np.float32) / 255
    np.savez(base / "answers.npz", scores=fn(images=tf.constant(x))["scores"].numpy(),
             sample_names=np.array(names))
    return folder, base / "answers.npz"


@pytest.mark.slow
def test_reference_outputs_pass_the_right_wrap_and_fail_the_wrong_one(demo_model,
                                                                       digit_answers,
                                                                       tmp_path):
    from modelprep.wrap import WrapOptions, wrap

    folder, answers = digit_answers
    report = verify(None, demo_model.served, VerifyOptions(images=folder,
                                                           reference_outputs=answers))
    assert report.passed, report.format()
    (check,) = report.outputs
    assert (check.reference, check.argmax_agree, check.argmax_total) == ("outputs", 20, 20)
    assert report.original == f"the reference outputs {answers}"

    wrap(demo_model.original, tmp_path / "wrong", WrapOptions(
        normalization=Normalization("symmetric")))
    report = verify(None, tmp_path / "wrong", VerifyOptions(images=folder,
                                                            reference_outputs=answers))
    assert not report.passed
    assert report.failures()[0].startswith(
        "output 'scores' against the reference outputs: max abs error")
    assert ("note: the prepared model normalises pixels as symmetric: p/127.5 - 1; if the "
            "model was trained otherwise, wrap it again with the right --normalize.") \
        in report.format()

    both = verify(demo_model.original, demo_model.served, VerifyOptions(
        images=folder, reference_outputs=answers,
        reference_preprocess=ReferencePreprocess(scale=1 / 255)))
    assert both.passed, both.format()
    assert [c.reference for c in both.outputs] == ["original", "outputs"]
    assert both.format().splitlines()[5].split()[0] == "against"


@pytest.mark.slow
def test_reference_outputs_must_match_the_samples(demo_model, digit_answers, tmp_path):
    from modelprep.errors import SpecMismatch

    folder, answers = digit_answers
    with pytest.raises(SpecMismatch, match="'scores' has 20 rows, but verify reads 5 samples"):
        verify(None, demo_model.served, VerifyOptions(images=folder, count=5,
                                                      reference_outputs=answers))
    renamed = tmp_path / "renamed.npz"
    data = dict(np.load(answers))
    np.savez(renamed, scores=data["scores"], sample_names=np.array(
        [f"x{i:02d}.png" for i in range(20)]))
    with pytest.raises(SpecMismatch, match=r"sample_names does not match the samples \(row 0: "
                                           r"'x00.png' vs 'd00.png'\)"):
        verify(None, demo_model.served, VerifyOptions(images=folder, reference_outputs=renamed))
    np.savez(renamed, probs=data["scores"])
    with pytest.raises(SpecMismatch, match=r"have no array for output 'scores'.*\['probs'\]"):
        verify(None, demo_model.served, VerifyOptions(images=folder, reference_outputs=renamed))
    with pytest.raises(ModelprepError, match="verify needs the original model, or reference"):
        verify(None, demo_model.served, VerifyOptions())


@pytest.mark.slow
def test_cli_reference_outputs_without_the_original(demo_model, digit_answers):
    folder, answers = digit_answers
    out = run_cli("verify", str(demo_model.served), "--images", str(folder),
                  "--reference-outputs", str(answers))
    assert out.returncode == 0, out.stderr
    assert f"reference: the outputs in {answers}" in out.stdout
    assert "passed: 1 of 1 outputs within their limit" in out.stdout


def test_verify_without_a_reference_says_what_it_cannot_catch():
    help_text = run_cli("verify", "--help").stdout
    for flag in ("--reference-preprocess FUNCTION|SCALE,OFFSET", "--reference-outputs X.npz"):
        assert flag in help_text
    assert "a model wrapped with the wrong --normalize passes too" in help_text
