"""`modelprep wrap` and the demo model, with real TensorFlow models."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from modelmeta import ModelMetadata
from tests.conftest import ROOT, encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def models(demo_model, tf):
    original = tf.saved_model.load(str(demo_model.original)).signatures["serving_default"]
    served = tf.saved_model.load(str(demo_model.served)).signatures["serving_default"]
    return original, served


def test_demo_model_is_accurate_on_the_held_out_split(demo_model, digits, models, tf):
    original, _ = models
    x = digits.x_test.reshape(len(digits.x_test), 784).astype(np.float32) / 255.0
    probs = original(images=tf.constant(x))["scores"].numpy()
    accuracy = float((probs.argmax(axis=1) == digits.y_test).mean())
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(demo_model.accuracy, abs=1e-9)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF"])
def test_wrapped_equals_original_on_the_same_pixels(digits, models, tf, fmt):
    """Lossless formats carry the exact pixels, so the answers must match the original's."""
    original, served = models
    x = digits.x_test
    want = original(images=tf.constant(
        x.reshape(len(x), 784).astype(np.float32) / 255.0))["scores"].numpy()
    encoded = tf.constant([encode(img, fmt) for img in x])
    got = served(image_bytes=encoded)["scores"].numpy()
    assert got.shape == want.shape
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert float(np.abs(got - want).max()) < 1e-5


def test_jpeg_keeps_the_answers(digits, models, tf):
    """JPEG is lossy: the pixels move a little, the answers must not (on nearly all)."""
    original, served = models
    x = digits.x_test
    want = original(images=tf.constant(
        x.reshape(len(x), 784).astype(np.float32) / 255.0))["scores"].numpy().argmax(axis=1)
    got = served(image_bytes=tf.constant([encode(img, "JPEG", quality=95) for img in x]))
    agreement = float((got["scores"].numpy().argmax(axis=1) == want).mean())
    assert agreement >= 0.99


def test_wrapped_metadata_describes_the_contract(demo_model):
    metadata = ModelMetadata.load(demo_model.served)
    spec = metadata.image_input
    assert (spec.name, spec.kind, spec.dtype, spec.shape) == ("image_bytes", "image_bytes",
                                                              "string", (-1,))
    assert (spec.image.height, spec.image.width, spec.image.channels) == (28, 28, 1)
    assert spec.image.layout == "flat" and spec.image.normalization.mode == "unit"
    (out,) = metadata.outputs
    assert (out.name, out.role, out.dtype, out.shape) == ("scores", "probabilities", "float32",
                                                          (-1, 10))
    assert metadata.labels == tuple("0123456789")
    assert metadata.source["input"] == "images"
    assert metadata.source["input_shape"] == "[-1, 784]"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelprep.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_wrap_then_inspect(demo_model, tmp_path):
    out = tmp_path / "wrapped"
    result = run_cli("wrap", str(demo_model.original), str(out), "--normalize", "unit",
                     "--labels", "zero,one,two,three,four,five,six,seven,eight,nine",
                     "--resize", "crop", "--name", "digits-words")
    assert result.returncode == 0, result.stderr
    assert "input 'image_bytes' (28x28x1, unit)" in result.stdout
    assert ModelMetadata.load(out).labels[7] == "seven"
    shown = run_cli("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "image_bytes" in shown.stdout and "string" in shown.stdout
    assert "scores" in shown.stdout and "[-1, 10]" in shown.stdout


@pytest.mark.parametrize("flag", [None, "--no-freeze", "--freeze"])
def test_cli_freeze_flags(demo_model, tmp_path, flag):
    import tensorflow as tf

    out = tmp_path / "wrapped"
    result = run_cli("wrap", str(demo_model.original), str(out), *([flag] if flag else []))
    assert result.returncode == 0, result.stderr
    loaded = tf.saved_model.load(str(out))
    variables = loaded.signatures["serving_default"].variables
    if flag == "--no-freeze":
        assert variables and "froze" not in result.stderr
        assert "weights" not in ModelMetadata.load(out).source
    else:  # the demo's weights are far under the limit: frozen unless told not to
        assert not variables
        assert re.search(r"froze \d+ variables \(0\.\d MiB\) into the graph", result.stderr)
        assert ModelMetadata.load(out).source["weights"] == "constants"


def test_cli_errors_name_the_tensor_and_exit_nonzero(demo_model, tmp_path):
    result = run_cli("wrap", str(demo_model.original), str(tmp_path / "w"), "--size", "32x32")
    assert result.returncode == 3
    assert "input 'images' holds 784 values per image, but 32x32x1 is 1024" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()

    result = run_cli("wrap", str(tmp_path / "missing"), str(tmp_path / "w"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr

    result = run_cli("wrap", str(demo_model.original), str(tmp_path / "w"),
                     "--labels", "a,b,c")
    assert result.returncode == 3
    assert "10 classes but 3 labels" in result.stderr
    assert not (tmp_path / "w").exists()


def test_wrap_refuses_to_overwrite_without_the_flag(demo_model, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("wrap", str(demo_model.original), str(out))
    assert result.returncode == 1
    assert "already exists; pass --overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_wrapped_model_loads_in_a_fresh_process(demo_model, digits, tmp_path):
    """Plain `tf.saved_model.load` in a new interpreter, no project code imported."""
    png = tmp_path / "d.png"
    png.write_bytes(encode(digits.x_test[0]))
    code = (
        "import sys, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(demo_model.served)!r})\n"
        "f = m.signatures['serving_default']\n"
        f"out = f(image_bytes=tf.constant([open({str(png)!r}, 'rb').read()]))\n"
        "print(int(out['scores'].numpy().argmax()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == int(digits.y_test[0])


def test_every_wrap_flag_documents_its_default():
    """`modelprep wrap --help` is the reference a user reads: every flag says what happens
    when it is left out."""
    import argparse

    from modelprep.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = [a for a in sub.choices["wrap"]._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 20
    for action in flags:
        assert "default" in (action.help or ""), action.option_strings
    text = sub.choices["wrap"].format_help()
    assert "crop (fill the frame, cut the overflow, centred)" in " ".join(text.split())
    assert "1 (gray) or 3 (RGB)" in text
