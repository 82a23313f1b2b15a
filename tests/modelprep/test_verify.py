"""`modelprep verify` with real models: the demo, hand-prepared quantized/PNG/TF1 models,
and a deliberately broken one that it must catch."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from modelmeta import ModelMetadata, Normalization, OutputSpec, Quantization
from modelprep.errors import ModelprepError, SourceError, SpecMismatch, VerificationFailed
from modelprep.samples import collect_images, tensor_sample
from modelprep.verify import VerifyOptions, compare_output, max_abs_error, verify
from tests.conftest import ROOT, SHARED_FIXTURES, encode

HALF_PLUS_TWO = SHARED_FIXTURES / "tfserving" / "saved_model_half_plus_two_cpu" / "00000123"
needs_fixtures = pytest.mark.skipif(not (HALF_PLUS_TWO / "saved_model.pb").is_file(),
                                    reason=f"TF Serving test models not at {HALF_PLUS_TWO}")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprep.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    """MaskNet and three prepared forms: uint8 masks, int8 masks with zero point -128, and
    the wrapping ``cast(mask * 255, int8)``."""
    from tests.modelprep import handmade

    base = tmp_path_factory.mktemp("masks")
    original = handmade.save_original(base / "original")
    prepared = {kind: base / kind for kind in ("uint8", "int8", "naive")}
    for kind, path in prepared.items():
        handmade.save_prepared_mask_model(original, path, mask=kind)
    return original, prepared


# --- the comparison itself (numpy only) ------------------------------------------------


def test_max_abs_error_treats_equal_specials_as_equal():
    a = np.array([1.0, np.inf, np.nan, -np.inf])
    assert max_abs_error(a, a.copy()) == 0.0
    assert max_abs_error(np.array([1.0, 2.0]), np.array([1.5, 2.0])) == 0.5
    assert max_abs_error(np.array([np.nan]), np.array([0.0])) == math.inf
    assert max_abs_error(np.array([np.inf]), np.array([1e300])) == math.inf
    assert max_abs_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_quantized_output_is_compared_after_clipping_within_half_a_step():
    q = Quantization.for_range("uint8", 0.0, 1.0)
    spec = OutputSpec("mask", "masks", "uint8", (-1, 3), quantization=q)
    want = np.array([[0.0, 0.6, 1.0], [0.3, 1.2, -0.1]], np.float32)
    got = np.array([[0, 153, 255], [77, 255, 0]], np.uint8)
    check = compare_output(spec, "mask", got, want, 1e-4)
    assert check.clipped == 2 and check.values == 6
    assert check.quantization_bound == pytest.approx(0.5 / 255)
    assert check.max_abs_error == pytest.approx(abs(77 / 255 - 0.3))
    assert check.passed

    wrapped = got.copy()
    wrapped[0, 2] = 0  # 1.0 wrapped around to the bottom of the range
    check = compare_output(spec, "mask", wrapped, want, 1e-4)
    assert check.max_abs_error == pytest.approx(1.0)
    assert not check.passed
    assert check.failure() == ("output 'mask': max abs error 1 is over the limit 0.002061 "
                               "(tolerance 0.0001 + quantization bound 0.001961)")


def test_quantized_output_must_have_the_recorded_dtype_and_shape():
    spec = OutputSpec("mask", "masks", "int8", (-1, 2),
                      quantization=Quantization("int8", 1 / 255, -128))
    with pytest.raises(SpecMismatch, match="output 'mask' is uint8, but the metadata says it "
                                           "is quantized to int8"):
        compare_output(spec, "mask", np.zeros((1, 2), np.uint8), np.zeros((1, 2)), 1e-4)
    with pytest.raises(SpecMismatch, match=r"output 'mask' has shape \[1, 3\] but the "
                                           r"original's 'mask' has \[1, 2\]"):
        compare_output(spec, "mask", np.zeros((1, 3), np.int8), np.zeros((1, 2)), 1e-4)


def test_argmax_agreement_counts_samples_with_the_same_top_class():
    spec = OutputSpec("scores", "probabilities", "float32", (-1, 3))
    want = np.array([[0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]], np.float32)
    got = np.array([[0.1, 0.8, 0.1], [0.4, 0.5, 0.1], [0.2, 0.2, 0.6]], np.float32)
    check = compare_output(spec, "scores", got, want, 0.2)
    assert (check.argmax_agree, check.argmax_total) == (2, 3)
    assert check.passed  # within the tolerance, even though one sample flips


# --- real models -----------------------------------------------------------------------


@pytest.mark.slow
def test_demo_model_passes_on_held_out_digits(demo_model, digits):
    report = verify(demo_model.original, demo_model.served, VerifyOptions(count=100))
    assert report.passed
    assert report.samples == 100
    assert report.sample_description == "100 held-out digits"
    (check,) = report.outputs
    assert (check.name, check.original_name, check.role) == ("scores", "scores",
                                                             "probabilities")
    assert (check.argmax_agree, check.argmax_total) == (100, 100)
    assert check.max_abs_error < 1e-5
    assert check.quantization_bound is None
    lines = report.format().splitlines()
    assert lines[1] == "samples: 100 held-out digits"
    assert lines[2] == ("reference: the original model fed the prepared model's own "
                        "preprocessing (unit: p/255)")
    assert lines[4].split() == ["output", "role", "max", "abs", "error", "limit", "quant",
                                "bound", "clipped", "argmax", "agreement", "result"]
    assert lines[5].split()[:2] == ["scores", "probabilities"]
    assert lines[5].split()[-3:] == ["100/100", "(100.0%)", "ok"]
    # without an independent reference, the report says what it cannot catch
    assert lines[-2].startswith("note: this proves the wrapping, not the normalisation")
    assert lines[-1].startswith("passed: 1 of 1 outputs within their limit")


@pytest.mark.slow
def test_base64_text_input_passes_with_every_client_variant(demo_model, tmp_path):
    """Samples rotate through standard, URL-safe unpadded, data: prefixed and MIME-wrapped
    base64, all of which the graph must decode to the same digits."""
    from modelprep.wrap import WrapOptions, wrap

    out = tmp_path / "b64"
    wrap(demo_model.original, out, WrapOptions(input_kind="image_base64", resize="pad",
                                               output_roles={"scores": "probabilities"}))
    report = verify(demo_model.original, out, VerifyOptions(count=10, batch_size=4))
    assert report.passed
    assert report.output("scores").argmax_agree == 10
    assert report.output("scores").max_abs_error < 1e-5


@pytest.mark.slow
def test_a_folder_of_photos_of_any_size_and_format(demo_model, digits, tmp_path):
    """Folder images are sent as their own bytes (JPEG, RGB, 3x the size) and resized in the
    graph; the original gets the same pixels from the same ops."""
    folder = tmp_path / "photos"
    folder.mkdir()
    big = [np.asarray(Image.fromarray(d).resize((84, 84))) for d in digits.x_test[:6]]
    (folder / "a.png").write_bytes(encode(big[0]))
    (folder / "b.jpg").write_bytes(encode(np.stack([big[1]] * 3, axis=2), "JPEG", quality=90))
    (folder / "c.bmp").write_bytes(encode(big[2], "BMP"))
    (folder / "d.gif").write_bytes(encode(big[3], "GIF"))
    (folder / "notes.txt").write_text("not an image")
    report = verify(demo_model.original, demo_model.served, VerifyOptions(images=folder))
    assert report.passed
    assert report.sample_description == f"4 images from {folder}"
    assert report.output("scores").argmax_agree == 4


def test_folder_problems_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelprepError, match=r"no images \(.png, .jpg, .jpeg, .gif, .bmp\) in"):
        collect_images(None, images=empty)
    with pytest.raises(ModelprepError, match="sample image folder .*missing does not exist"):
        collect_images(None, images=tmp_path / "missing")
    webp = tmp_path / "webp"
    webp.mkdir()
    Image.new("RGB", (4, 4)).save(webp / "x.png", format="WEBP")
    with pytest.raises(ModelprepError, match=r"x.png is WEBP; the model's input layer decodes "
                                             "only PNG, JPEG, GIF and BMP"):
        collect_images(None, images=webp)
    with pytest.raises(ModelprepError, match="not both"):
        collect_images(None, images=webp, samples="digits")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uint8", "int8"])
def test_quantized_and_png_outputs_pass_within_the_bound(masks, kind):
    from tests.modelprep.handmade import SIZE

    original, prepared = masks
    report = verify(original, prepared[kind], VerifyOptions(count=20, samples="synthetic"))
    assert report.passed, report.format()
    mask = report.output("mask")
    scale = 1 / 255
    assert mask.quantization_bound == pytest.approx(scale / 2)
    assert mask.max_abs_error <= scale / 2 + 1e-6
    # mask = 1.1 * pixel / 255 is over the range [0, 1] exactly where pixel >= 232
    images = collect_images(ModelMetadata.load(prepared[kind]).image_input.image,
                            samples="synthetic", count=20)
    over = sum(int(np.count_nonzero(s.pixels >= 232)) for s in images.images)
    assert over > 0 and mask.clipped == over
    assert mask.values == 20 * SIZE * SIZE
    picture = report.output("picture_bytes")
    assert picture.original_name == "picture" and picture.quantization_bound == 0.5
    assert picture.max_abs_error < 1e-3
    logits = report.output("logits")
    assert logits.argmax_agree == 20 and logits.max_abs_error < 1e-4
    assert "picture_bytes (picture)" in report.format()


@pytest.mark.slow
def test_the_wrapping_int8_cast_fails_verification(masks):
    original, prepared = masks
    report = verify(original, prepared["naive"], VerifyOptions(count=20, samples="synthetic"))
    assert not report.passed
    mask = report.output("mask")
    # pixel values 128..255 wrap to -128..-1: 0.6 comes back as -103/255, not 153/255
    assert not mask.passed and mask.max_abs_error == pytest.approx(1.0, abs=0.01)
    assert report.output("logits").passed and report.output("picture_bytes").passed
    assert report.failures() == [mask.failure()]
    assert report.format().splitlines()[-1].startswith("FAILED: 2 of 3 outputs")
    with pytest.raises(VerificationFailed,
                       match=r"output 'mask': max abs error 1 is over the limit 0\.002061 "):
        report.raise_if_failed()
    relaxed = verify(original, prepared["naive"], VerifyOptions(
        count=20, samples="synthetic", output_tolerance={"mask": 1.0}))
    assert relaxed.passed and relaxed.output("mask").tolerance == 1.0
    assert relaxed.output("logits").tolerance == 1e-4


@pytest.mark.slow
def test_cli_prints_the_table_and_exits_4_on_failure(masks, capsys):
    from modelprep.cli import main

    original, prepared = masks
    ok = run_cli("verify", str(original), str(prepared["uint8"]), "--count", "8")
    assert ok.returncode == 0, ok.stderr
    assert "mask " in ok.stdout and "passed: 3 of 3 outputs" in ok.stdout
    assert "batch 1/1: 8 samples" in ok.stderr
    # the same entry point in this process, to spare a second TensorFlow start
    code = main(["verify", str(original), str(prepared["naive"]), "--count", "8",
                 "--output-tolerance", "logits=0.5", "--samples", "synthetic"])
    out, err = capsys.readouterr()
    assert code == 4
    assert "FAIL" in out
    assert "modelprep: error: output 'mask': max abs error" in err


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantized_pixel_inputs(demo_model, tmp_path, dtype):
    from tests.modelprep.handmade import save_quantized_pixels_digits

    out = tmp_path / f"q{dtype}"
    save_quantized_pixels_digits(demo_model.original, out, dtype)
    report = verify(demo_model.original, out, VerifyOptions(count=50))
    assert report.passed
    assert report.output("scores").argmax_agree == 50
    assert report.output("scores").max_abs_error < 1e-5


@pytest.mark.slow
@needs_fixtures
def test_tf1_fixture_with_pass_through_input_and_int8_output(tmp_path):
    from tests.modelprep.handmade import save_prepared_half_plus_two

    full = save_prepared_half_plus_two(HALF_PLUS_TWO, tmp_path / "full", 0.0, 4.0)
    report = verify(HALF_PLUS_TWO, tmp_path / "full", VerifyOptions(count=40))
    assert report.passed and report.samples == 40
    assert report.sample_description == "40 generated tensor samples (seed 0)"
    y = report.output("y")
    assert y.clipped == 0 and y.quantization_bound == pytest.approx(full.outputs[0]
                                                                    .quantization.scale / 2)

    # y = x/2 + 2 for x in [-1, 1]; over [0, 2] every positive x is clipped, not wrapped
    save_prepared_half_plus_two(HALF_PLUS_TWO, tmp_path / "narrow", 0.0, 2.0)
    report = verify(HALF_PLUS_TWO, tmp_path / "narrow", VerifyOptions(count=40))
    x, _ = tensor_sample(full.inputs[0], 40, np.random.default_rng(0))
    assert report.passed
    assert report.output("y").clipped == int(np.count_nonzero(x > 0)) > 0


@pytest.mark.slow
def test_mismatches_between_metadata_and_models_are_named(demo_model, tmp_path):
    import shutil

    with pytest.raises(SourceError, match="no metadata at"):
        verify(demo_model.original, demo_model.original)
    with pytest.raises(SourceError, match="prepared model .*nowhere does not exist"):
        verify(demo_model.original, tmp_path / "nowhere")
    with pytest.raises(SpecMismatch, match=r"a tolerance is given for output 'score', but the "
                                           r"prepared model's outputs are \['scores'\]"):
        verify(demo_model.original, demo_model.served,
               VerifyOptions(output_tolerance={"score": 1e-3}))

    renamed = tmp_path / "renamed"
    shutil.copytree(demo_model.served, renamed)
    meta = ModelMetadata.load(renamed)
    out = meta.outputs[0]
    ModelMetadata(name=meta.name, inputs=meta.inputs, labels=meta.labels, source=meta.source,
                  outputs=(OutputSpec("probs", out.role, out.dtype, out.shape),)).save(renamed)
    with pytest.raises(SpecMismatch, match=r"prepared output 'probs' comes from original "
                                           r"output 'probs', which is not among the original's "
                                           r"outputs \['scores'\]"):
        verify(demo_model.original, renamed, VerifyOptions(count=4))
    # the metadata's `original` says where an output comes from
    ModelMetadata(name=meta.name, inputs=meta.inputs, labels=meta.labels, source=meta.source,
                  outputs=(OutputSpec("probs", out.role, out.dtype, out.shape,
                                      original="scores"),)).save(renamed)
    with pytest.raises(SpecMismatch, match="the prepared model does not return output 'probs'"):
        verify(demo_model.original, renamed, VerifyOptions(count=4))


def test_option_values_are_checked(tmp_path):
    for options, message in (
            (VerifyOptions(count=0), "count must be at least 1, got 0"),
            (VerifyOptions(samples="faces"), "samples must be one of auto, digits, synthetic"),
            (VerifyOptions(tolerance=-1.0), "tolerance for 'tolerance' must be a non-negative"),
            (VerifyOptions(output_tolerance={"y": math.nan}), "tolerance for 'y' must be")):
        with pytest.raises(ModelprepError, match=message):
            verify(tmp_path, tmp_path, options)


def test_verify_help_lists_the_option_fields():
    result = run_cli("verify", "--help")
    assert result.returncode == 0
    for flag in ("--images DIR", "--samples", "--count N", "--tolerance", "--output-tolerance",
                 "--batch-size N", "--seed"):
        assert flag in result.stdout


# --- models prepared by `modelprep wrap` itself --------------------------------------


@pytest.mark.slow
@needs_fixtures
def test_wrapped_tf1_fixture_passes(tmp_path):
    """TF Serving's TF1 half_plus_two, straight from its model base: x passed through,
    y quantized to int8 over [0, 10]."""
    from modelprep.options import InputLayer, OutputLayer
    from modelprep.wrap import WrapOptions, wrap

    wrap(HALF_PLUS_TWO.parent, tmp_path / "w", WrapOptions(
        inputs={"x": InputLayer("tensor")}, outputs={"y": OutputLayer.parse("int8:0:10")}))
    report = verify(HALF_PLUS_TWO.parent, tmp_path / "w", VerifyOptions(count=32))
    assert report.passed, report.format()
    y = report.output("y")
    assert y.quantization_bound == pytest.approx(10 / 255 / 2)
    assert y.clipped == 0


@pytest.mark.slow
def test_wrapped_mask_model_with_quantized_and_png_outputs_passes(masks, tmp_path):
    from modelprep.options import OutputLayer
    from modelprep.wrap import WrapOptions, wrap

    original, _ = masks
    wrap(original, tmp_path / "w", WrapOptions(outputs={
        "mask": OutputLayer.parse("uint8:0:1"), "picture": OutputLayer.parse("png:0:255")}))
    report = verify(original, tmp_path / "w", VerifyOptions(count=16))
    assert report.passed, report.format()
    assert report.output("mask").clipped > 0  # 1.1 * pixel over the range [0, 1]
    assert report.output("picture_bytes").original_name == "picture"


@pytest.mark.slow
def test_wrapped_int8_pixel_input_passes(demo_model, tmp_path):
    from modelprep.options import InputLayer
    from modelprep.wrap import WrapOptions, wrap

    wrap(demo_model.original, tmp_path / "w", WrapOptions(
        inputs={"images": InputLayer.parse("quantized_pixels:int8")}))
    report = verify(demo_model.original, tmp_path / "w", VerifyOptions(count=32))
    assert report.passed, report.format()
    assert report.output("scores").argmax_agree == 32


@pytest.mark.slow
def test_wrapped_keras_mobilenet_passes(tmp_path):
    """A Keras MobileNetV2 (weights=None, small) from its .keras file, symmetric input,
    probabilities quantized to uint8."""
    import keras

    from modelprep.options import OutputLayer
    from modelprep.wrap import WrapOptions, wrap

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                           classes=4)
    model.save(tmp_path / "m.keras")
    wrap(tmp_path / "m.keras", tmp_path / "w", WrapOptions(
        normalization=Normalization("symmetric"),
        outputs={"predictions": OutputLayer.parse("uint8:0:1")}))
    report = verify(tmp_path / "m.keras", tmp_path / "w", VerifyOptions(count=8))
    assert report.passed, report.format()
    assert report.sample_description == "8 synthetic 64x64x3 images (seed 0)"
    assert report.output("predictions").quantization_bound == pytest.approx(1 / 510)
