"""Wrapped models against their originals, per input and output layer, on real models of
every source kind: the same pixels must give the same answers, within the quantization
step where there is one."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from modelmeta import ModelMetadata, Normalization, Quantization
from modelprep.errors import SpecMismatch
from modelprep.options import InputLayer, OutputLayer
from modelprep.wrap import WrapOptions, wrap
from tests.conftest import ROOT
from tests.modelprep import source_models as models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def _serve(tf, path):
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def _tf1_reference(tf):
    """The TF1 model run by TensorFlow's own TF1 loader, from its variables."""
    return tf.saved_model.load(str(models.tf1_image_model())).signatures["serving_default"]


def _meta(count: int) -> np.ndarray:
    return np.random.default_rng(5).normal(size=(count, 4)).astype(np.float32)


def _decode_pngs(items) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in items])


def _max_error(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())


# --- the Mask R-CNN service done right (TF1 source) -----------------------------------


def test_int8_pixels_minus_the_mean_fit_without_wrapping(tf):
    """The service sent ``(image - MEAN).astype(int8)``, which wraps (pixel 255 in the red
    channel is 131.3 above the mean: -125 as int8). The int8 input with a scale and a
    zero point holds every pixel within half a step, and the graph dequantizes it."""
    path, metadata = models.wrapped("tf1_int8")
    spec = metadata.input("input_image")
    assert (spec.kind, spec.dtype, spec.shape) == ("quantized_pixels", "int8", (-1, 32, 32, 3))
    q = spec.quantization
    assert (q.dtype, q.zero_point) == ("int8", -13)
    assert q.scale == pytest.approx((255 - 103.9 + 123.7) / 255)
    assert spec.image.normalization == Normalization("meanstd", models.MEAN, (1.0, 1.0, 1.0))
    assert metadata.input("input_image_meta").kind == "tensor"

    pixels = models.photos(models.TF1_SIZE, 4).astype(np.float32)
    pixels[0, 0, 0] = (255, 0, 255)  # the extremes
    exact = pixels - np.float32(models.MEAN)
    naive = exact.astype(np.int32).astype(np.int8)  # what the old client sent
    assert naive[0, 0, 0, 0] == -125 and exact[0, 0, 0, 0] == pytest.approx(131.3, abs=1e-4)

    # the client's side of the contract (modelmeta): q = clip(round(value/scale) + zp)
    sent = np.clip(np.round(exact / q.scale) + q.zero_point, -128, 127).astype(np.int8)
    received = q.scale * (sent.astype(np.float32) - q.zero_point)
    assert _max_error(received, exact) <= q.scale / 2 + 1e-4

    meta = _meta(4)
    got = _serve(tf, path)(input_image=tf.constant(sent), input_image_meta=tf.constant(meta))
    reference = _tf1_reference(tf)
    # the graph dequantizes exactly as the contract says
    on_received = reference(input_image=tf.constant(received.astype(np.float32)),
                            input_image_meta=tf.constant(meta))
    assert _max_error(got["probs"], on_received["probs"]) <= 1e-5
    # and the answers stay those of the exact pixels
    on_exact = reference(input_image=tf.constant(exact), input_image_meta=tf.constant(meta))
    assert np.array_equal(got["probs"].numpy().argmax(1), on_exact["probs"].numpy().argmax(1))
    assert _max_error(got["probs"], on_exact["probs"]) < 0.02


def test_quantized_mask_and_png_image_outputs(tf):
    path, metadata = models.wrapped("tf1_int8")
    mask_spec, image_spec = metadata.output("mask"), metadata.output("image_bytes")
    assert (mask_spec.role, mask_spec.dtype, mask_spec.shape) == ("masks", "uint8",
                                                                  (-1, 32, 32, 1))
    assert mask_spec.quantization == Quantization("uint8", 1 / 255, 0)
    assert (image_spec.role, image_spec.dtype, image_spec.shape, image_spec.encoding,
            image_spec.original) == ("image", "string", (-1,), "png", "image")
    assert image_spec.quantization == Quantization.for_range("uint8", -1.0, 1.0)
    assert metadata.output("probs").quantization is None

    q = metadata.input("input_image").quantization
    pixels = models.photos(models.TF1_SIZE, 3).astype(np.float32)
    sent = np.clip(np.round((pixels - np.float32(models.MEAN)) / q.scale) + q.zero_point,
                   -128, 127).astype(np.int8)
    received = (q.scale * (sent.astype(np.float32) - q.zero_point)).astype(np.float32)
    meta = _meta(3)
    got = _serve(tf, path)(input_image=tf.constant(sent), input_image_meta=tf.constant(meta))
    want = _tf1_reference(tf)(input_image=tf.constant(received),
                              input_image_meta=tf.constant(meta))

    mask = got["mask"].numpy()
    assert mask.dtype == np.uint8 and mask.shape == (3, 32, 32, 1)
    step = mask_spec.quantization.scale
    assert _max_error(mask * step, want["mask"]) <= step / 2 + 1e-6
    assert mask.max() > 200 and mask.min() < 50  # the whole range is used

    pngs = got["image_bytes"].numpy()
    assert pngs.shape == (3,)
    samples = _decode_pngs(pngs)
    assert samples.shape == (3, 32, 32, 3) and samples.dtype == np.uint8
    png_q = image_spec.quantization
    back = png_q.scale * (samples.astype(np.float64) - png_q.zero_point)
    low, high = png_q.real_range
    assert _max_error(back, np.clip(want["image"].numpy(), low, high)) <= png_q.scale / 2 + 1e-6


def test_encoded_images_in_png_mask_out_and_kept_signature(tf):
    path, metadata = models.wrapped("tf1_bytes")
    assert [(i.name, i.kind, i.original) for i in metadata.inputs] == [
        ("image_bytes", "image_bytes", "input_image"),
        ("input_image_meta", "tensor", "input_image_meta")]
    pixels = models.photos(models.TF1_SIZE, 4)
    meta = _meta(4)
    got = _serve(tf, path)(image_bytes=tf.constant([models.png(p) for p in pixels]),
                           input_image_meta=tf.constant(meta))
    want = _tf1_reference(tf)(input_image=tf.constant(pixels.astype(np.float32)
                                                      - np.float32(models.MEAN)),
                              input_image_meta=tf.constant(meta))
    assert _max_error(got["probs"], want["probs"]) <= 1e-5
    assert _max_error(got["image"], want["image"]) <= 1e-5
    masks = _decode_pngs(got["mask_bytes"].numpy())
    assert masks.shape == (4, 32, 32)  # one gray PNG per image
    assert _max_error(masks / 255.0, want["mask"].numpy()[..., 0]) <= 0.5 / 255 + 1e-6


def test_frozen_graph_wraps_to_the_same_answers(tf):
    path, metadata = models.wrapped("frozen")
    assert metadata.source["format"] == "graph_def"
    assert metadata.source["graph_inputs"] == {"input_image": "input_image:0",
                                               "meta": "input_image_meta:0"}
    assert metadata.source["graph_outputs"] == {"probs": "probs:0", "mask": "mask:0"}
    pixels = models.photos(models.TF1_SIZE, 4)
    meta = _meta(4)
    got = _serve(tf, path)(image_bytes=tf.constant([models.png(p) for p in pixels]),
                           meta=tf.constant(meta))
    want = _tf1_reference(tf)(input_image=tf.constant(pixels.astype(np.float32)
                                                      - np.float32(models.MEAN)),
                              input_image_meta=tf.constant(meta))
    for name in ("probs", "mask"):
        assert _max_error(got[name], want[name]) <= 1e-5


# --- Keras sources ----------------------------------------------------------------------


def test_mobilenet_keras_on_encoded_photos(tf):
    import keras

    path, metadata = models.wrapped("mobilenet")
    assert metadata.source["format"] == "keras"
    image = metadata.image_input.image
    assert (image.height, image.width, image.channels) == (96, 96, 3)
    model = keras.saving.load_model(models.mobilenet_keras(), compile=False)
    pixels = models.photos(96, 4)
    want = model(pixels.astype(np.float32) / 127.5 - 1, training=False).numpy()
    got = _serve(tf, path)(image_bytes=tf.constant([models.png(p) for p in pixels]))
    got = got["predictions"].numpy()
    assert got.shape == (4, 5)
    assert _max_error(got, want) <= 1e-5
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_keras_quantized_pixels_and_probabilities(tf, tmp_path):
    """int8 pixels over the symmetric range [-1, 1] beside a pass-through input;
    probabilities back as uint8."""
    import keras

    metadata = wrap(models.two_input_h5(), tmp_path / "q", WrapOptions(
        inputs={"pixels": InputLayer.parse("quantized_pixels:int8")},
        normalization=Normalization("symmetric"),
        outputs={"probs": OutputLayer.parse("uint8:0:1")}))
    q = metadata.image_input.quantization
    assert q == Quantization("int8", 2 / 255, 0)
    pixels = models.photos(16, 3).astype(np.float32)
    sent = np.clip(np.round((pixels / 127.5 - 1) / q.scale) + q.zero_point, -128,
                   127).astype(np.int8)
    received = (q.scale * (sent.astype(np.float32) - q.zero_point)).astype(np.float32)
    assert _max_error(received, pixels / 127.5 - 1) <= q.scale / 2 + 1e-6

    meta = _meta(3)
    got = _serve(tf, tmp_path / "q")(pixels=tf.constant(sent), meta=tf.constant(meta))
    probs = got["probs"].numpy()
    assert probs.dtype == np.uint8
    out_q = metadata.output("probs").quantization
    model = keras.saving.load_model(models.two_input_h5(), compile=False)
    want_probs, want_aux = model([received, meta], training=False)
    assert _max_error(out_q.scale * probs.astype(np.float64), want_probs) <= \
        out_q.scale / 2 + 1e-6
    assert _max_error(got["aux"], want_aux) <= 1e-6


def test_h5_base64_text_and_pass_through(tf):
    import keras

    path, metadata = models.wrapped("h5")
    assert [(i.name, i.kind, i.dtype, i.shape) for i in metadata.inputs] == [
        ("image_b64", "image_base64", "string", (-1,)), ("meta", "tensor", "float32", (-1, 4))]
    pixels = models.photos(16, 1)[0]
    data = models.png(pixels)
    std, url = base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()
    texts = [std, url.rstrip("="), "data:image/png;base64,\n" + "\n".join(
        std[i:i + 60] for i in range(0, len(std), 60)), " DATA:image/jpeg;base64," + url]
    meta = np.tile(np.array([[0.5, -1.0, 2.0, 0.0]], np.float32), (len(texts), 1))
    got = _serve(tf, path)(image_b64=tf.constant(texts), meta=tf.constant(meta))
    model = keras.saving.load_model(models.two_input_h5(), compile=False)
    want_probs, want_aux = model([np.repeat(pixels[None].astype(np.float32) / 255, len(texts),
                                            axis=0), meta], training=False)
    assert _max_error(got["probs"], want_probs) <= 1e-6
    assert _max_error(got["aux"], want_aux) <= 1e-6
    with pytest.raises(tf.errors.InvalidArgumentError):
        _serve(tf, path)(image_b64=tf.constant(["not base64!"]), meta=tf.constant(meta[:1]))


# --- TF2 sources: the demo model and an identity model ----------------------------------


def test_demo_quantized_uint8_pixels_are_exact(tf, demo_model, digits, tmp_path):
    """uint8 with unit normalisation is q = p: the original's answers, bit for bit nearly."""
    metadata = wrap(demo_model.original, tmp_path / "q", WrapOptions(
        inputs={"images": InputLayer("quantized_pixels")},
        outputs={"scores": OutputLayer.parse("uint8:0:1")}))
    spec = metadata.input("images")
    assert (spec.dtype, spec.shape, spec.quantization) == (
        "uint8", (-1, 28, 28, 1), Quantization("uint8", 1 / 255, 0))
    assert spec.image.layout == "flat"
    x = digits.x_test[:64]
    want = _serve(tf, demo_model.original)(images=tf.constant(
        x.reshape(len(x), 784).astype(np.float32) / 255.0))["scores"].numpy()
    got = _serve(tf, tmp_path / "q")(images=tf.constant(x[..., None]))["scores"].numpy()
    assert got.dtype == np.uint8
    assert _max_error(got / 255.0, want) <= 0.5 / 255 + 1e-6
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_demo_base64_text_input(tf, demo_model, digits, tmp_path):
    wrap(demo_model.original, tmp_path / "b64", WrapOptions(input_kind="image_base64"))
    x = digits.x_test[:8]
    want = _serve(tf, demo_model.original)(images=tf.constant(
        x.reshape(len(x), 784).astype(np.float32) / 255.0))["scores"].numpy()
    texts = [base64.urlsafe_b64encode(models.png(img)).decode().rstrip("=") for img in x]
    got = _serve(tf, tmp_path / "b64")(image_b64=tf.constant(texts))["scores"].numpy()
    assert _max_error(got, want) < 1e-5


def test_masks_of_0_6_and_1_0_come_back_within_one_step(tf):
    """Through a real wrapped model: the naive cast gives -103 and -1; ours clips."""
    path, metadata = models.wrapped("identity")
    spec = metadata.output("mask")
    assert (spec.dtype, spec.role, spec.quantization) == ("uint8", "masks",
                                                          Quantization("uint8", 1 / 255, 0))
    x = np.array([[[0.6, 1.0, 0.0], [0.25, 1.7, -0.2]]], np.float32)
    assert tf.cast(x[0, 0, :2] * 255, tf.int8).numpy().tolist() == [-103, -1]
    got = _serve(tf, path)(x=tf.constant(x))["mask"].numpy()
    assert got.tolist() == [[[153, 255, 0], [64, 255, 0]]]
    back = got * spec.quantization.scale
    assert _max_error(back, np.clip(x, 0, 1)) <= spec.quantization.scale / 2 + 1e-6


def test_half_plus_two_float_in_quantized_out(tf):
    path, metadata = models.wrapped("half_plus_two")
    spec = metadata.output("y")
    q = spec.quantization
    assert (spec.dtype, q.dtype, q.zero_point) == ("int8", "int8", -128)
    x = np.array([[-1.0], [0.0], [1.0], [7.5], [100.0], [-10.0]], np.float32)
    y = _serve(tf, path)(x=tf.constant(x))["y"].numpy()
    back = q.scale * (y.astype(np.float64) - q.zero_point)
    assert _max_error(back, np.clip(x / 2 + 2, 0, 10)) <= q.scale / 2 + 1e-6
    assert y[4, 0] == 127 and y[5, 0] == -128  # clipped at both ends


# --- errors name the tensor and what did not fit ---------------------------------------


@pytest.fixture(scope="module")
def odd_model(tf, tmp_path_factory):
    """A TF2 model with a uint8 image, an input named image_bytes, an unknown-rank input,
    an int64 output and a [batch, 3] float output."""
    module = tf.Module()
    module.serve = tf.function(
        lambda pixels, image_bytes, anything: {
            "classes": tf.argmax(tf.reduce_mean(tf.cast(pixels, tf.float32), [1, 2]), axis=1),
            "scores": tf.reduce_mean(tf.cast(pixels, tf.float32), [1, 2]) + image_bytes[:, :3],
            "echo": anything},
        input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.uint8, name="pixels"),
                         tf.TensorSpec([None, 4], tf.float32, name="image_bytes"),
                         tf.TensorSpec(None, tf.float32, name="anything")])
    path = tmp_path_factory.mktemp("odd") / "model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.mark.parametrize(("options", "error"), [
    (dict(), "signature 'serving_default' has inputs ['anything', 'image_bytes', 'pixels']; "
             "say which one takes the image (--image-input NAME or --input NAME=KIND) and pass "
             "the others through (--input NAME=tensor)"),
    (dict(inputs={"pixels": InputLayer("image_bytes"),
                  "anything": InputLayer("tensor", shape=(-1, 2))}),
     "the wrapped model would have two inputs named 'image_bytes' (from 'pixels' and "
     "'image_bytes'); rename one in the source model or choose another layer"),
    (dict(inputs={"pixels": InputLayer("quantized_pixels"),
                  "image_bytes": InputLayer("image_base64")}),
     "inputs ['image_bytes', 'pixels'] all take the image; only one input can take the "
     "client's image (pass the others through with --input NAME=tensor)"),
    (dict(inputs={"pixel": InputLayer("tensor")}),
     "signature 'serving_default' has no input 'pixel'; it has ['anything', 'image_bytes', "
     "'pixels']"),
    (dict(inputs={"pixels": InputLayer("image_base64")}),
     "input 'anything' has unknown rank; declare its shape (--input anything=tensor:-1,...)"),
    (dict(inputs={"pixels": InputLayer("image_base64"),
                  "anything": InputLayer("tensor", shape=(-1, 2))},
          normalization=Normalization("unit")),
     "input 'pixels' is uint8: unit normalisation gives values within [-1, 1], which round "
     "to -1, 0 or 1; use --normalize raw (or meanstd)"),
    (dict(inputs={"pixels": InputLayer("image_base64"),
                  "anything": InputLayer("tensor", shape=(-1, 2))},
          outputs={"scores": OutputLayer("png")}),
     "output 'scores' is [-1, 3]; a PNG output must be [batch, height, width] or [batch, "
     "height, width, channels] with 1 to 4 channels"),
    (dict(inputs={"pixels": InputLayer("image_base64"),
                  "anything": InputLayer("tensor", shape=(-1, 2))},
          outputs={"classes": OutputLayer.parse("uint8:0:9")}),
     "output 'classes' is int64; only float outputs can be quantized"),
    (dict(inputs={"pixels": InputLayer("image_base64"),
                  "anything": InputLayer("tensor", shape=(-1, 2))},
          outputs={"score": OutputLayer.parse("uint8:0:9")}),
     "signature 'serving_default' has no output 'score' (named by an output option); it has "
     "['classes', 'echo', 'scores']"),
    (dict(inputs={"pixels": InputLayer("image_base64"),
                  "anything": InputLayer("tensor", shape=(-1, 2))},
          height=16),
     "input 'pixels' is [-1, 8, 8, 3]: its height is 8, but the options say 16"),
])
def test_options_that_do_not_fit_are_refused_by_name(odd_model, tmp_path, options, error):
    with pytest.raises(SpecMismatch) as excinfo:
        wrap(odd_model, tmp_path / "out", WrapOptions(**options))
    assert str(excinfo.value) == error
    assert not (tmp_path / "out").exists()


def test_integer_image_inputs_get_raw_pixels(tf, odd_model, tmp_path):
    """A uint8 model input takes raw pixels by default; quantized uint8 pixels are then
    q = p, and the declared shape of an open input holds."""
    metadata = wrap(odd_model, tmp_path / "out", WrapOptions(
        inputs={"pixels": InputLayer("quantized_pixels"),
                "anything": InputLayer("tensor", shape=(-1, 2))}))
    spec = metadata.input("pixels")
    assert spec.image.normalization == Normalization("raw")
    assert spec.quantization == Quantization("uint8", 1.0, 0)
    assert [(i.name, i.kind, i.shape) for i in metadata.inputs] == [
        ("pixels", "quantized_pixels", (-1, 8, 8, 3)), ("anything", "tensor", (-1, 2)),
        ("image_bytes", "tensor", (-1, 4))]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    feed = dict(image_bytes=tf.constant(np.ones((2, 4), np.float32)),
                anything=tf.constant(np.zeros((2, 2), np.float32)))
    got = _serve(tf, tmp_path / "out")(pixels=tf.constant(pixels), **feed)
    want = _serve(tf, odd_model)(pixels=tf.constant(pixels), **feed)
    assert np.array_equal(got["scores"].numpy(), want["scores"].numpy())
    assert np.array_equal(got["classes"].numpy(), want["classes"].numpy())


# --- the command line ----------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprep.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_wraps_a_frozen_graph_with_every_kind_of_flag(tmp_path):
    out = tmp_path / "served"
    result = run_cli(
        "wrap", str(models.frozen_graph()), str(out),
        "--graph-inputs", "image=input_image:0,meta=input_image_meta:0",
        "--graph-outputs", "probs=probs:0,mask=mask:0,image=image:0",
        "--input", "image=quantized_pixels:int8:scale=1.08:zero_point=-13",
        "--normalize", "meanstd", "--mean", "123.7,116.8,103.9", "--std", "1,1,1",
        "--quantize-output", "mask=uint8:0:1", "--png-output", "image=-1:1",
        "--output", "mask=masks", "--labels", "cat,dog,bird")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"wrote {out}: input 'image' (32x32x3, meanstd, int8), input 'meta' (tensor float32 "
        "[-1, 4]), outputs image_bytes (image, png), mask (masks, uint8), probs "
        "(probabilities)\n")
    metadata = ModelMetadata.load(out)
    assert metadata.input("image").quantization == Quantization("int8", 1.08, -13)
    assert metadata.labels == ("cat", "dog", "bird")


def test_cli_errors_exit_with_their_codes(tmp_path):
    frozen = str(models.frozen_graph())
    cases = [
        (["--input", "x=pixels"], 1, "modelprep: error: 'pixels': input kind must be one of"),
        (["--graph-inputs", "image=nope:0", "--graph-outputs", "p=probs:0"], 2,
         "input 'image': the graph has no tensor 'nope:0'"),
        (["--graph-inputs", "image=input_image:0", "--graph-outputs", "p=probs:0",
          "--png-output", "p"], 3, "output 'p' is [-1, 3]; a PNG output must be"),
    ]
    for flags, code, message in cases:
        result = run_cli("wrap", frozen, str(tmp_path / "w"), *flags)
        assert result.returncode == code, (flags, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "w").exists()
