"""Loading every kind of source model, keeping signatures, and the wrapped models'
signatures as a fresh process and `modelprep inspect` see them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from modelprep.errors import SourceError, SpecMismatch
from modelprep.inspect import describe
from modelprep.sources import source_kind
from tests.modelprep import source_models as models

needs_fixtures = pytest.mark.skipif(not (models.HALF_PLUS_TWO / "00000123").is_dir(),
                                    reason=f"TF Serving test models not at {models.TFSERVING}")


def test_the_kind_is_told_from_the_path(tmp_path):
    (tmp_path / "dir").mkdir()
    assert source_kind(tmp_path / "dir") == "saved_model"
    assert source_kind(tmp_path / "saved_model.pb") == "saved_model"
    assert source_kind(tmp_path / "model.keras") == "keras"
    assert source_kind(tmp_path / "MODEL.H5") == "keras"
    assert source_kind(tmp_path / "weights.hdf5") == "keras"
    assert source_kind(tmp_path / "frozen.pb") == "graph_def"
    with pytest.raises(SourceError) as excinfo:
        source_kind(tmp_path / "model.onnx")
    assert str(excinfo.value) == (
        f"cannot tell what kind of model {tmp_path / 'model.onnx'} is: expected a SavedModel "
        "directory, a TF Serving model base, a Keras .keras/.h5 file or a frozen GraphDef .pb")


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def _specs(specs) -> dict:
    return {name: (spec.dtype.name, None if spec.shape.rank is None else spec.shape.as_list())
            for name, spec in specs.items()}


def _tf1_feed(count: int = 4) -> dict[str, np.ndarray]:
    pixels = models.photos(models.TF1_SIZE, count).astype(np.float32)
    meta = np.random.default_rng(3).normal(size=(count, 4)).astype(np.float32)
    return {"input_image": pixels - np.float32(models.MEAN), "input_image_meta": meta}


# --- TF1 ----------------------------------------------------------------------------


@pytest.mark.slow
def test_tf1_saved_model_is_frozen_and_answers_as_tensorflows_own_loader(tf):
    from modelprep.sources import load_source

    path = models.tf1_image_model()
    source = load_source(path)
    assert (source.format, source.signature, source.owner, source.path) == (
        "saved_model_tf1", "serving_default", None, str(path))
    assert _specs(source.inputs) == {"input_image": ("float32", [None, 32, 32, 3]),
                                     "input_image_meta": ("float32", [None, 4])}
    assert _specs(source.outputs) == {"probs": ("float32", [None, 3]),
                                      "mask": ("float32", [None, 32, 32, 1]),
                                      "image": ("float32", [None, 32, 32, 3])}
    assert list(source.other_signatures) == ["probs_only"]
    assert source.unusable_signatures == {}

    # TF's own TF1 loader runs the model from its variables; ours from frozen constants
    reference = tf.saved_model.load(str(path)).signatures["serving_default"]
    feed = _tf1_feed()
    want = reference(**{k: tf.constant(v) for k, v in feed.items()})
    got = source.fn(**feed)
    assert sorted(got) == ["image", "mask", "probs"]
    for name in got:
        assert got[name].shape == want[name].shape
        assert float(np.abs(got[name].numpy() - want[name].numpy()).max()) <= 1e-6
    # the model is not degenerate: photos get different answers
    assert len({int(i) for i in want["probs"].numpy().argmax(axis=1)}) > 1
    mask = want["mask"].numpy()
    assert float(mask.min()) < 0.2 and float(mask.max()) > 0.8  # masks over the whole range

    only = source.other_signatures["probs_only"]
    assert _specs(only.inputs) == {"input_image": ("float32", [None, 32, 32, 3])}
    want_only = tf.saved_model.load(str(path)).signatures["probs_only"](
        input_image=tf.constant(feed["input_image"]))["probs"].numpy()
    assert float(np.abs(only.fn(input_image=feed["input_image"])["probs"].numpy()
                        - want_only).max()) <= 1e-6


@pytest.mark.slow
@needs_fixtures
def test_tf_serving_half_plus_two_every_signature(tf):
    from modelprep.sources import load_source

    source = load_source(models.HALF_PLUS_TWO)  # a model base: its highest version
    assert source.path == str(models.HALF_PLUS_TWO / "00000123")
    assert source.format == "saved_model_tf1"
    x = np.array([[-1.0], [0.0], [3.0]], np.float32)
    assert source.fn(x=x)["y"].numpy().ravel().tolist() == [1.5, 2.0, 3.5]  # x/2 + 2
    assert {k: s.method for k, s in source.other_signatures.items()} == {
        "classify_x_to_y": "tensorflow/serving/classify",
        "regress_x2_to_y3": "tensorflow/serving/regress",
        "regress_x_to_y": "tensorflow/serving/regress",
        "regress_x_to_y2": "tensorflow/serving/regress",
    }
    examples = tf.constant([_example(v) for v in (-1.0, 0.0, 3.0)])
    classify = source.other_signatures["classify_x_to_y"]
    assert _specs(classify.inputs) == {"inputs": ("string", None)}
    assert classify.fn(inputs=examples)["scores"].numpy().ravel().tolist() == [1.5, 2.0, 3.5]


@pytest.mark.slow
@needs_fixtures
def test_tf1_export_of_tf_1_0_reads_dtypes_and_shapes_from_the_graph(tf):
    """half_plus_three was exported by TF 1.0: its SignatureDefs leave shapes open and call
    the tf.Example input a float; the graph knows better, and we believe the graph."""
    from modelprep.sources import load_source

    info = {s.key: s for s in describe(models.HALF_PLUS_THREE).signatures}
    assert info["serving_default"].inputs[0].shape is None
    assert info["tensorflow/serving/regress"].inputs[0].dtype == "float32"

    source = load_source(models.HALF_PLUS_THREE)
    assert _specs(source.inputs) == {"x": ("float32", [None, 1])}
    regress = source.other_signatures["tensorflow/serving/regress"]
    assert _specs(regress.inputs) == {"inputs": ("string", None)}
    # x is an Identity of the tf.Example parser's output: feeding it cuts the parser off
    assert source.fn(x=np.array([[2.0]], np.float32))["y"].numpy().tolist() == [[4.0]]
    assert regress.fn(inputs=tf.constant([_example(2.0)]))["outputs"].numpy().tolist() == [[4.0]]


def _example(x: float) -> bytes:
    import tensorflow as tf

    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# --- frozen GraphDef ---------------------------------------------------------------


@pytest.mark.slow
def test_frozen_graph_with_named_tensors(tf):
    from modelprep.sources import load_source

    source = load_source(models.frozen_graph(),
                         graph_inputs={"image": "input_image:0", "meta": "input_image_meta"},
                         graph_outputs={"probs": "probs:0", "mask": "mask:0"})
    assert (source.format, source.signature, source.owner) == ("graph_def", "serving_default",
                                                                None)
    assert _specs(source.inputs) == {"image": ("float32", [None, 32, 32, 3]),
                                     "meta": ("float32", [None, 4])}
    assert _specs(source.outputs) == {"probs": ("float32", [None, 3]),
                                      "mask": ("float32", [None, 32, 32, 1])}
    feed = _tf1_feed()
    want = tf.saved_model.load(str(models.tf1_image_model())).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in feed.items()})
    got = source.fn(image=feed["input_image"], meta=feed["input_image_meta"])
    for name in ("probs", "mask"):
        assert float(np.abs(got[name].numpy() - want[name].numpy()).max()) <= 1e-6


@pytest.mark.slow
def test_frozen_graph_errors_name_the_tensor(tmp_path):
    from modelprep.sources import load_source

    pb = models.frozen_graph()
    with pytest.raises(SourceError) as excinfo:
        load_source(pb)
    assert str(excinfo.value) == (f"{pb} is a frozen GraphDef: name its input and output "
                                  "tensors (--graph-inputs images=input:0 --graph-outputs "
                                  "probs=softmax:0)")
    with pytest.raises(SourceError) as excinfo:
        load_source(pb, graph_inputs={"image": "nope:0"}, graph_outputs={"probs": "probs:0"})
    assert str(excinfo.value) == (f"frozen GraphDef {pb}: input 'image': the graph has no "
                                  "tensor 'nope:0' (its placeholders: input_image:0, "
                                  "input_image_meta:0)")
    with pytest.raises(SourceError, match="output 'probs': the graph has no tensor 'probs:3'"):
        load_source(pb, graph_inputs={"image": "input_image:0"},
                    graph_outputs={"probs": "probs:3"})
    with pytest.raises(SourceError, match="only signature is 'serving_default'; there is no "
                                          "signature 'other'"):
        load_source(pb, "other", graph_inputs={"i": "input_image:0"},
                    graph_outputs={"p": "probs:0"})
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xfenot a graph")
    with pytest.raises(SourceError) as excinfo:
        load_source(bad, graph_inputs={"i": "x:0"}, graph_outputs={"o": "y:0"})
    assert str(excinfo.value) == f"{bad}: cannot parse as a frozen GraphDef (corrupt, or not a " \
                                 "GraphDef)"
    with pytest.raises(SourceError) as excinfo:
        load_source(models.tf1_image_model(), graph_inputs={"i": "x:0"})
    assert "is not a frozen GraphDef; --graph-inputs and --graph-outputs apply only to .pb" \
        in str(excinfo.value)


# --- Keras --------------------------------------------------------------------------


@pytest.mark.slow
def test_keras_files(tf):
    import keras

    from modelprep.sources import load_source

    path = models.mobilenet_keras()
    source = load_source(path)
    assert (source.format, source.signature) == ("keras", "serving_default")
    model = keras.saving.load_model(path)
    ((name, spec),) = source.inputs.items()
    assert name == model.inputs[0].name
    assert (spec.dtype.name, spec.shape.as_list()) == ("float32", [None, 96, 96, 3])
    assert _specs(source.outputs) == {"predictions": ("float32", [None, 5])}
    x = models.photos(96, 2).astype(np.float32) / 127.5 - 1
    want = model(x, training=False).numpy()
    got = source.fn(**{name: x})["predictions"].numpy()
    assert float(np.abs(got - want).max()) <= 1e-5

    source = load_source(models.two_input_h5())
    assert _specs(source.inputs) == {"pixels": ("float32", [None, 16, 16, 3]),
                                     "meta": ("float32", [None, 4])}
    assert _specs(source.outputs) == {"probs": ("float32", [None, 5]),
                                      "aux": ("float32", [None, 2])}
    h5 = keras.saving.load_model(models.two_input_h5(), compile=False)
    pixels = models.photos(16, 2).astype(np.float32) / 255
    meta = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    want_probs, want_aux = h5([pixels, meta], training=False)
    got = source.fn(pixels=pixels, meta=meta)
    assert float(np.abs(got["probs"].numpy() - want_probs.numpy()).max()) <= 1e-6
    assert float(np.abs(got["aux"].numpy() - want_aux.numpy()).max()) <= 1e-6


@pytest.mark.slow
def test_keras_errors(tmp_path):
    from modelprep.sources import load_source

    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(SourceError, match=f"cannot load Keras model {broken}: "):
        load_source(broken)
    with pytest.raises(SourceError) as excinfo:
        load_source(models.mobilenet_keras(), "serving_fp16")
    assert str(excinfo.value) == (f"{models.mobilenet_keras()} is a Keras model, whose only "
                                  "signature is 'serving_default'; there is no signature "
                                  "'serving_fp16'")


# --- SavedModel errors --------------------------------------------------------------


@pytest.mark.slow
def test_saved_model_errors(tmp_path):
    from modelprep.sources import load_source

    with pytest.raises(SourceError) as excinfo:
        load_source(tmp_path / "missing")
    assert str(excinfo.value) == f"source model {tmp_path / 'missing'} does not exist"
    path = models.tf1_image_model()
    with pytest.raises(SourceError) as excinfo:
        load_source(path, "classify")
    assert str(excinfo.value) == (f"SavedModel {path} has no signature 'classify'; it has "
                                  "['probs_only', 'serving_default']")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no saved_model.pb or saved_model.pbtxt here"):
        load_source(tmp_path / "empty")


# --- keeping signatures --------------------------------------------------------------


def _table(info) -> dict:
    """Signatures as inspect reports them, without the graph tensor names (which differ)."""
    return {s.key: (s.method, [(t.name, t.dtype, t.shape) for t in s.inputs],
                    [(t.name, t.dtype, t.shape) for t in s.outputs]) for s in info.signatures}


@pytest.mark.slow
@needs_fixtures
def test_kept_signatures_are_unchanged(tf, tmp_path):
    """Same keys, methods (TF Serving's classify/regress APIs check them), inputs, outputs
    and answers as the source's."""
    out, metadata = models.wrapped("half_plus_two")
    original, wrapped = _table(describe(models.HALF_PLUS_TWO)), _table(describe(out))
    assert set(wrapped) == set(original)
    for key in set(original) - {"serving_default"}:
        assert wrapped[key] == original[key], key
    assert metadata.source["kept_signatures"] == sorted(set(original) - {"serving_default"})

    loaded = tf.saved_model.load(str(out))
    reference = tf.saved_model.load(str(models.HALF_PLUS_TWO / "00000123"))
    examples = tf.constant([_example(v) for v in (-1.0, 0.5, 3.0)])
    for key in ("classify_x_to_y", "regress_x_to_y", "regress_x_to_y2"):
        got = loaded.signatures[key](inputs=examples)
        want = reference.signatures[key](inputs=examples)
        assert {k: v.numpy().tolist() for k, v in got.items()} == \
            {k: v.numpy().tolist() for k, v in want.items()}, key

    from modelprep.wrap import WrapOptions, wrap

    wrap(models.HALF_PLUS_TWO, tmp_path / "some", WrapOptions(
        inputs={"x": _tensor()}, keep_signatures=("regress_x_to_y",)))
    assert [s.key for s in describe(tmp_path / "some").signatures] == ["serving_default",
                                                                        "regress_x_to_y"]


@pytest.mark.slow
def test_wrapping_another_signature_keeps_the_rest(tmp_path):
    from modelprep.wrap import WrapOptions, wrap

    messages: list[str] = []
    metadata = wrap(models.tf1_image_model(), tmp_path / "w", WrapOptions(
        signature="probs_only", keep_signatures=True,
        normalization=_minus_mean()), progress=messages.append)
    assert metadata.source["signature"] == "probs_only"
    assert [s.key for s in describe(tmp_path / "w").signatures] == ["serving_default"]
    assert ("not keeping the source's 'serving_default': the wrapped signature takes its "
            "place") in messages

    with pytest.raises(SpecMismatch) as excinfo:
        wrap(models.tf1_image_model(), tmp_path / "x", WrapOptions(
            signature="probs_only", keep_signatures=("serving_default",),
            normalization=_minus_mean()))
    assert str(excinfo.value) == ("cannot keep 'serving_default' unchanged: the wrapped "
                                  "signature 'probs_only' takes its place")
    with pytest.raises(SpecMismatch) as excinfo:
        wrap(models.tf1_image_model(), tmp_path / "x", WrapOptions(
            keep_signatures=("nope",), image_input="input_image", normalization=_minus_mean()))
    assert str(excinfo.value) == ("no signature 'nope' to keep; the source's other signatures "
                                  "are ['probs_only']")
    with pytest.raises(SpecMismatch, match="signature 'probs_only' is the one being wrapped"):
        wrap(models.tf1_image_model(), tmp_path / "x", WrapOptions(
            signature="probs_only", keep_signatures=("probs_only",),
            normalization=_minus_mean()))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_tf2_signatures_are_kept_with_their_variables(tf, tmp_path):
    module = tf.Module()
    module.scale = tf.Variable(3.0)
    module.serve = tf.function(
        lambda images: {"mean": tf.reduce_mean(images, axis=[1, 2]) * module.scale},
        input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32, name="images")])
    module.triple = tf.function(
        lambda x, y: {"sum": (x + y) * module.scale, "x3": x * module.scale},
        input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"),
                         tf.TensorSpec([None, 2], tf.float32, name="y")])
    source = tmp_path / "tf2"
    tf.saved_model.save(module, str(source), signatures={
        "serving_default": module.serve, "triple": module.triple.get_concrete_function()})
    from modelprep.wrap import WrapOptions, wrap

    wrap(source, tmp_path / "w", WrapOptions(keep_signatures=True, normalization=None))
    original, wrapped = _table(describe(source)), _table(describe(tmp_path / "w"))
    assert set(wrapped) == {"serving_default", "triple"}
    assert wrapped["triple"] == original["triple"]
    loaded = tf.saved_model.load(str(tmp_path / "w"))
    got = loaded.signatures["triple"](x=tf.constant([[1.0, 2.0]]), y=tf.constant([[3.0, 4.0]]))
    assert got["sum"].numpy().tolist() == [[12.0, 18.0]]
    assert got["x3"].numpy().tolist() == [[3.0, 6.0]]
    white = tf.constant([models.png(np.full((4, 4), 255, np.uint8))])
    assert loaded.signatures["serving_default"](image_bytes=white)["mean"].numpy().tolist() \
        == [[3.0]]


def _tensor():
    from modelprep.options import InputLayer

    return InputLayer("tensor")


def _minus_mean():
    from modelmeta import Normalization

    return Normalization("meanstd", mean=models.MEAN, std=(1.0, 1.0, 1.0))


# --- a fresh process and inspect agree on every wrapped kind -------------------------

_SIGNATURES_SCRIPT = """
import json, sys
import tensorflow as tf

def spec(s):
    return [s.dtype.name, None if s.shape.rank is None else
            [-1 if d is None else d for d in s.shape.as_list()]]

result = {}
for path in sys.argv[1:]:
    loaded = tf.saved_model.load(path)
    result[path] = {
        key: {"inputs": {k: spec(v) for k, v in fn.structured_input_signature[1].items()},
              "outputs": {k: spec(v) for k, v in fn.structured_outputs.items()}}
        for key, fn in loaded.signatures.items()}
print(json.dumps(result))
"""


@pytest.mark.slow
def test_wrapped_models_load_in_a_fresh_process_with_the_signatures_inspect_reports(
        demo_model):
    paths = {name: models.wrapped(name)[0] for name in models.WRAPPED}
    paths["demo"] = demo_model.served
    result = subprocess.run(
        [sys.executable, "-c", _SIGNATURES_SCRIPT, *map(str, paths.values())],
        capture_output=True, text=True, timeout=300, cwd="/")  # no project code importable
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    for name, path in paths.items():
        info = describe(path)
        inspected = {s.key: {"inputs": {t.name: [t.dtype, _list(t.shape)] for t in s.inputs},
                             "outputs": {t.name: [t.dtype, _list(t.shape)] for t in s.outputs}}
                     for s in info.signatures}
        assert loaded[str(path)] == inspected, name
        assert info.format == "tf2"
        assert info.metadata is not None
        metadata_names = ({i["name"] for i in info.metadata["inputs"]},
                          {o["name"] for o in info.metadata["outputs"]})
        assert metadata_names == (set(inspected["serving_default"]["inputs"]),
                                  set(inspected["serving_default"]["outputs"])), name
    assert loaded[str(paths["tf1_int8"])]["serving_default"] == {
        "inputs": {"input_image": ["int8", [-1, 32, 32, 3]],
                   "input_image_meta": ["float32", [-1, 4]]},
        "outputs": {"image_bytes": ["string", [-1]], "mask": ["uint8", [-1, 32, 32, 1]],
                    "probs": ["float32", [-1, 3]]}}
    assert set(loaded[str(paths["tf1_int8"])]) == {"serving_default", "probs_only"}


def _list(shape) -> list | None:
    return None if shape is None else list(shape)

