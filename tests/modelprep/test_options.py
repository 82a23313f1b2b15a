"""Input and output layers: their text forms, and the in-graph ops run by real TensorFlow."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from modelmeta import Normalization, Quantization
from modelprep.errors import ModelprepError
from modelprep.options import (
    InputLayer,
    OptionSyntaxError,
    OutputLayer,
    QuantizeSpec,
    input_layers,
    keep_signatures,
    normalized_range,
    output_layers,
    parse_graph_tensors,
    parse_shape,
)
from tests.conftest import ROOT

# --- text forms (no TensorFlow) ---------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("image_bytes", InputLayer("image_bytes")),
    ("image_base64", InputLayer("image_base64")),
    ("quantized_pixels", InputLayer("quantized_pixels")),
    ("quantized_pixels:int8", InputLayer("quantized_pixels", QuantizeSpec("int8"))),
    ("quantized_pixels:int8:-123.7:151.1",
     InputLayer("quantized_pixels", QuantizeSpec("int8", low=-123.7, high=151.1))),
    ("quantized_pixels:int8:scale=1.08:zero_point=-13",
     InputLayer("quantized_pixels", QuantizeSpec("int8", scale=1.08, zero_point=-13))),
    ("quantized_pixels:uint8:zero_point=3:scale=0.5",
     InputLayer("quantized_pixels", QuantizeSpec("uint8", scale=0.5, zero_point=3))),
    ("tensor", InputLayer("tensor")),
    ("tensor:-1,4", InputLayer("tensor", shape=(-1, 4))),
    ("tensor:[-1, 1]", InputLayer("tensor", shape=(-1, 1))),
    ("tensor:[]", InputLayer("tensor", shape=())),
])
def test_input_layer_text(text, expected):
    assert InputLayer.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("pixels", "'pixels': input kind must be one of image_bytes, image_base64, "
               "quantized_pixels, tensor"),
    ("image_bytes:png", "'image_bytes:png': image_bytes takes no options"),
    ("quantized_pixels:int16", "'int16': quantization dtype must be uint8 or int8 (DTYPE, "
                               "DTYPE:LOW:HIGH or DTYPE:scale=S:zero_point=Z)"),
    ("quantized_pixels:int8:1", "'int8:1': expected DTYPE, DTYPE:LOW:HIGH or "
                                "DTYPE:scale=S:zero_point=Z"),
    ("quantized_pixels:int8:1:0", "quantization range needs low < high, got [1.0, 0.0]"),
    ("quantized_pixels:int8:a:1", "'int8:a:1': 'a' is not a number"),
    ("quantized_pixels:int8:0:inf", "'int8:0:inf': 'inf' is not a finite number"),
    ("quantized_pixels:int8:scale=1:zero_point=0.5",
     "'int8:scale=1:zero_point=0.5': zero_point must be an integer"),
    ("quantized_pixels:int8:zero_point=3", "an explicit quantization needs a scale"),
    ("quantized_pixels:int8:scale=1:scale=2", "'int8:scale=1:scale=2': expected DTYPE"),
    ("tensor:-1,x", "'tensor:-1,x': a shape is comma-separated integers such as -1,4"),
    ("tensor:-1,0", "tensor shape dimensions must be positive or -1, got [-1, 0]"),
])
def test_input_layer_text_errors(text, message):
    with pytest.raises(OptionSyntaxError) as excinfo:
        InputLayer.parse(text)
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, ModelprepError)  # one line, exit 1 on the command line


@pytest.mark.parametrize(("text", "expected"), [
    ("float", OutputLayer()),
    ("png", OutputLayer("png")),
    ("png:-1:1", OutputLayer("png", low=-1.0, high=1.0)),
    ("uint8:0:1", OutputLayer("quantize", QuantizeSpec("uint8", low=0.0, high=1.0))),
    ("int8:scale=0.5:zero_point=-3",
     OutputLayer("quantize", QuantizeSpec("int8", scale=0.5, zero_point=-3))),
])
def test_output_layer_text(text, expected):
    assert OutputLayer.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("uint8", "a quantized output needs its range (uint8:LOW:HIGH) or scale and zero_point"),
    ("png:1", "'png:1': expected png or png:LOW:HIGH"),
    ("png:1:1", "png range needs LOW < HIGH, got [1.0, 1.0]"),
    ("jpeg", "'jpeg': an output layer is float, png[:LOW:HIGH], or a quantization such as "
             "uint8:0:1"),
    ("float:1", "an output layer is float"),
])
def test_output_layer_text_errors(text, message):
    with pytest.raises(OptionSyntaxError, match=None) as excinfo:
        OutputLayer.parse(text)
    assert message in str(excinfo.value)


def test_flags_map_onto_the_option_mappings():
    assert input_layers(["a=image_base64", "b=tensor:-1,4"]) == {
        "a": InputLayer("image_base64"), "b": InputLayer("tensor", shape=(-1, 4))}
    assert output_layers(["mask=uint8:0:1"], ["image=-1:1", "rgb"]) == {
        "mask": OutputLayer("quantize", QuantizeSpec("uint8", low=0.0, high=1.0)),
        "image": OutputLayer("png", low=-1.0, high=1.0),
        "rgb": OutputLayer("png")}
    assert keep_signatures(False) is False and keep_signatures(True) is True
    assert keep_signatures("a, b") == ("a", "b")
    with pytest.raises(OptionSyntaxError, match="--input names 'a' twice"):
        input_layers(["a=tensor", "a=image_bytes"])
    with pytest.raises(OptionSyntaxError, match=r"--input takes NAME=VALUE, got 'a'"):
        input_layers(["a"])
    with pytest.raises(OptionSyntaxError, match="output 'm' is given both --quantize-output "
                                               "and --png-output; choose one"):
        output_layers(["m=uint8:0:1"], ["m"])
    with pytest.raises(OptionSyntaxError, match="--keep-signatures takes comma-separated"):
        keep_signatures("a,,b")


def test_graph_tensor_names():
    assert parse_graph_tensors("input:0") == {"input": "input:0"}
    assert parse_graph_tensors("images=input, scope/logits:0,scope/split:1") == {
        "images": "input:0", "logits": "scope/logits:0", "split_1": "scope/split:1"}
    with pytest.raises(OptionSyntaxError, match="--graph-inputs: alias 'x' used twice"):
        parse_graph_tensors("x=a:0,x=b:0")
    with pytest.raises(OptionSyntaxError, match="--graph-outputs: alias '2d' must be a "
                                               "Python-style identifier; write ALIAS=2d:0"):
        parse_graph_tensors("2d:0", "--graph-outputs")
    with pytest.raises(OptionSyntaxError, match="'a b' is not a tensor name"):
        parse_graph_tensors("a b")
    with pytest.raises(OptionSyntaxError, match="empty item"):
        parse_graph_tensors("a,")


def test_shapes():
    assert parse_shape("-1,28,28,1") == (-1, 28, 28, 1)
    assert parse_shape(" [ ] ") == ()


@pytest.mark.parametrize(("norm", "expected"), [
    (Normalization("unit"), (0.0, 1.0)),
    (Normalization("symmetric"), (-1.0, 1.0)),
    (Normalization("raw"), (0.0, 255.0)),
    (Normalization("meanstd", (123.7, 116.8, 103.9), (1.0, 1.0, 1.0)), (-123.7, 151.1)),
    (Normalization("meanstd", (127.5,), (127.5,)), (-1.0, 1.0)),
])
def test_normalized_range(norm, expected):
    assert normalized_range(norm) == pytest.approx(expected)


def test_quantize_specs_resolve():
    # a bare dtype takes the range it is given: uint8 over unit pixels is q = p exactly
    assert QuantizeSpec("uint8").resolve((0.0, 1.0)) == Quantization("uint8", 1 / 255, 0)
    # pixels minus Mask R-CNN's mean fit int8 with a scale just over one pixel
    mrcnn = QuantizeSpec("int8").resolve((-123.7, 151.1))
    assert mrcnn.scale == pytest.approx(274.8 / 255) and mrcnn.zero_point == -13
    low, high = mrcnn.real_range
    assert low <= -123.7 + mrcnn.scale / 2 and high >= 151.1 - mrcnn.scale / 2
    assert QuantizeSpec("int8", scale=0.5, zero_point=-3).resolve() == Quantization("int8",
                                                                                   0.5, -3)
    with pytest.raises(OptionSyntaxError, match="quantization zero_point must be an integer "
                                               "in -128..127 for int8, got 200"):
        QuantizeSpec("int8", scale=0.5, zero_point=200).resolve()
    with pytest.raises(OptionSyntaxError, match=r"uint8 needs a range \(uint8:LOW:HIGH\)"):
        QuantizeSpec("uint8").resolve()
    assert str(QuantizeSpec.parse("int8:-1:1")) == "int8:-1:1"
    assert str(QuantizeSpec.parse("int8:scale=0.5:zero_point=-3")) == \
        "int8:scale=0.5:zero_point=-3"


def test_the_layers_module_does_not_import_tensorflow():
    code = "import sys, modelprep.options, modelprep.plan; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"


# --- in-graph ops (real TensorFlow, no model) ---------------------------------------


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def test_masks_are_clipped_never_wrapped(tf):
    """The Mask R-CNN service sent ``cast(mask * 255, int8)``; quantizing does it right."""
    from modelprep.input_ops import dequantize
    from modelprep.output_ops import quantize

    masks = tf.constant([0.6, 1.0, 0.0, 0.25, 1.7, -0.2, float("nan")])
    naive = tf.cast(masks[:2] * 255, tf.int8).numpy()
    assert naive.tolist() == [-103, -1]  # wrapped: 0.6 and 1.0 come back negative

    for dtype, expected in (("uint8", [153, 255, 0, 64, 255, 0, 0]),
                            ("int8", [25, 127, -128, -64, 127, -128, -128])):
        q = Quantization.for_range(dtype, 0.0, 1.0)
        got = quantize(masks, q)
        assert got.dtype.name == dtype
        assert got.numpy().tolist() == expected
        back = dequantize(got, q).numpy()
        assert np.abs(back[:2] - [0.6, 1.0]).max() <= q.scale / 2 + 1e-7  # within half a step
        assert back[4] == pytest.approx(1.0) and back[5] == pytest.approx(0.0)  # clipped


def test_to_dtype_rounds_and_clips_for_integer_inputs(tf):
    from modelprep.input_ops import to_dtype

    values = tf.constant([-3.0, 0.4, 0.6, 254.9, 256.0, 1000.0])
    assert to_dtype(values, tf.uint8).numpy().tolist() == [0, 0, 1, 255, 255, 255]
    assert to_dtype(values, tf.int8).numpy().tolist() == [-3, 0, 1, 127, 127, 127]
    assert to_dtype(values, tf.float16).dtype == tf.float16


def test_png_batches(tf):
    from modelprep.output_ops import encode_png_batch

    rng = np.random.default_rng(0)
    for shape in ((3, 5, 7, 3), (2, 4, 6, 1), (2, 4, 6), (1, 3, 3, 4)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        encoded = encode_png_batch(tf.constant(images)).numpy()
        assert encoded.shape == (shape[0],)
        for item, want in zip(encoded, images, strict=True):
            got = np.asarray(Image.open(io.BytesIO(item)))
            assert got.shape[:2] == want.shape[:2]
            assert np.array_equal(got.reshape(want.shape), want)


def _variants(data: bytes) -> dict[str, str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return {
        "standard": std,
        "url-safe": url,
        "standard unpadded": std.rstrip("="),
        "url-safe unpadded": url.rstrip("="),
        "MIME lines": "\r\n".join(std[i:i + 76] for i in range(0, len(std), 76)) + "\r\n",
        "spaces and tabs": " " + std[:8] + " \t" + std[8:] + "\n",
        "data: prefix": "data:image/png;base64," + std,
        "data: prefix, wrong media type": "data:image/jpeg;base64," + url.rstrip("="),
        "DATA: prefix, upper case": "  DATA:image/png;base64," + std,
    }


@pytest.mark.parametrize("length", [0, 1, 2, 3, 300, 301, 302])
def test_base64_text_in_every_variant_clients_send(tf, length):
    from modelprep.input_ops import decode_base64_text

    data = bytes(range(251, 256)) + bytes((i * 37) % 256 for i in range(length))
    variants = _variants(data)
    if length == 300:  # the alphabets differ only where the data makes + / - _
        assert "+" in variants["standard"] and "/" in variants["standard"]
        assert "-" in variants["url-safe"] and "_" in variants["url-safe"]
    got = decode_base64_text(tf.constant(list(variants.values()))).numpy()
    assert dict(zip(variants, got, strict=True)) == dict.fromkeys(variants, data)
    # plain decode_base64 takes only the web-safe alphabet, which is why the layer exists
    if "+" in variants["standard"] or "/" in variants["standard"]:
        with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid character"):
            tf.io.decode_base64(tf.constant([variants["standard"]]))


@pytest.mark.parametrize("text", ["abcde", "ab$d", "a", "data:image/png;base64,a"])
def test_malformed_base64_text_fails_in_the_graph(tf, text):
    from modelprep.input_ops import decode_base64_text

    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_base64_text(tf.constant([text]))
