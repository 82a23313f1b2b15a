"""modelprep.inspect against TF Serving's own test SavedModels, a fresh TF2 model and
hand-built protos."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import modelmeta
from modelprep.errors import SourceError
from modelprep.inspect import (
    InspectError,
    SavedModelInfo,
    SignatureInfo,
    TensorInfo,
    describe,
    dtype_name,
    format_info,
)

# /work/shared/fixtures/tfserving, found the way tests/conftest.py finds SHARED_FIXTURES.
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "tfserving"
HALF_PLUS_TWO_BASE = FIXTURES / "saved_model_half_plus_two_cpu"
HALF_PLUS_TWO = HALF_PLUS_TWO_BASE / "00000123"
HALF_PLUS_THREE = FIXTURES / "saved_model_half_plus_three" / "00000123"
GOLDEN = FIXTURES / "saved_model_half_plus_two_2_versions_metadata.json"

needs_fixtures = pytest.mark.skipif(not (HALF_PLUS_TWO / "saved_model.pb").is_file(),
                                    reason=f"TF Serving test models not at {FIXTURES}")

HALF_PLUS_TWO_KEYS = ("serving_default", "classify_x_to_y", "regress_x2_to_y3",
                      "regress_x_to_y", "regress_x_to_y2")


def _copy_pb(src_dir: Path, dst_dir: Path) -> Path:
    """A SavedModel needs only its saved_model.pb to be described (never write to FIXTURES)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_dir / "saved_model.pb", dst_dir / "saved_model.pb")
    return dst_dir


def _by_key(info: SavedModelInfo) -> dict[str, SignatureInfo]:
    return {s.key: s for s in info.signatures}


# --- TF Serving's half_plus_two / half_plus_three (TF1) --------------------------


@needs_fixtures
def test_half_plus_two_matches_tf_serving_get_model_metadata():
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    golden = json.loads(GOLDEN.read_text())["metadata"]["signature_def"]["signature_def"]
    info = describe(HALF_PLUS_TWO)

    # The golden answer is for saved_model_half_plus_two_2_versions, whose export has one
    # signature more than the _cpu model's; every signature the _cpu model has must match.
    ours = _by_key(info)
    assert set(golden) - set(ours) == {"classify_x2_to_y3"}
    assert set(ours) <= set(golden)

    def expected(tensors: dict) -> dict:
        result = {}
        for alias, t in tensors.items():
            shape_proto = t["tensor_shape"]
            shape = (None if shape_proto["unknown_rank"]
                     else tuple(int(d["size"]) for d in shape_proto["dim"]))
            dtype = tf.as_dtype(types_pb2.DataType.Value(t["dtype"])).name
            result[alias] = (dtype, shape, t["name"])
        return result

    def actual(tensors: tuple[TensorInfo, ...]) -> dict:
        return {t.name: (t.dtype, t.shape, t.tensor) for t in tensors}

    for key, sig in ours.items():
        want = golden[key]
        assert sig.method == want["method_name"], key
        assert actual(sig.inputs) == expected(want["inputs"]), key
        assert actual(sig.outputs) == expected(want["outputs"]), key


@needs_fixtures
def test_half_plus_two_summary():
    info = describe(HALF_PLUS_TWO)
    assert info.path == str(HALF_PLUS_TWO)
    assert info.format == "tf1"
    assert info.tf_version == "1.14.0"
    assert info.tags == (("serve",),)
    assert info.signature_tags == ("serve",)
    assert info.metadata is None
    assert info.model_base is None and info.versions == ()
    assert tuple(s.key for s in info.signatures) == HALF_PLUS_TWO_KEYS
    assert info.signatures[0] == SignatureInfo(
        key="serving_default", method="tensorflow/serving/predict",
        inputs=(TensorInfo("x", "float32", (-1, 1), "x:0"),),
        outputs=(TensorInfo("y", "float32", (-1, 1), "y:0"),))
    assert _by_key(info)["classify_x_to_y"].inputs == (
        TensorInfo("inputs", "string", None, "tf_example:0"),)


@needs_fixtures
def test_half_plus_two_text():
    lines = format_info(describe(HALF_PLUS_TWO)).splitlines()
    assert lines[:9] == [
        f"SavedModel {HALF_PLUS_TWO}  (TF1, saved by TensorFlow 1.14.0)",
        "MetaGraph tags: serve",
        "",
        'signature "serving_default"',
        "  inputs",
        "    x  float32  [-1, 1]  x:0",
        "  outputs",
        "    y  float32  [-1, 1]  y:0",
        "",
    ]
    start = lines.index('signature "classify_x_to_y"  (classify)')
    assert lines[start:start + 6] == [
        'signature "classify_x_to_y"  (classify)',
        "  inputs",
        "    inputs  string   [?]      tf_example:0",
        "  outputs",
        "    scores  float32  [-1, 1]  y:0",
        "",
    ]
    assert 'signature "regress_x_to_y2"  (regress)' in lines
    assert not any(line != line.rstrip() for line in lines)


@needs_fixtures
def test_half_plus_three_has_no_recorded_shapes():
    # Exported by TF 1.0 without tensor shapes in its signatures: unknown, not scalars.
    info = describe(HALF_PLUS_THREE)
    assert info.tf_version == "1.0.0-rc2"
    assert tuple(s.key for s in info.signatures) == ("serving_default",
                                                     "tensorflow/serving/regress")
    regress = info.signatures[1]
    assert regress.method == "tensorflow/serving/regress"
    assert regress.inputs == (TensorInfo("inputs", "float32", None, "tf_example:0"),)
    assert regress.outputs == (TensorInfo("outputs", "float32", None, "Identity:0"),)
    text = format_info(info)
    assert "    x  float32  [?]  x:0\n" in text
    assert 'signature "tensorflow/serving/regress"  (regress)\n' in text


# --- path forms ------------------------------------------------------------------


@needs_fixtures
def test_model_base_describes_its_highest_version():
    info = describe(HALF_PLUS_TWO_BASE)
    assert info.path == str(HALF_PLUS_TWO)
    assert info.model_base == str(HALF_PLUS_TWO_BASE)
    assert info.versions == (123,)
    assert info.signatures == describe(HALF_PLUS_TWO).signatures
    lines = format_info(info).splitlines()
    assert lines[:3] == [
        f"SavedModel {HALF_PLUS_TWO}  (TF1, saved by TensorFlow 1.14.0)",
        f"TF Serving model base {HALF_PLUS_TWO_BASE}: describing version 123, "
        "the highest of 123",
        "MetaGraph tags: serve",
    ]


@needs_fixtures
def test_model_base_picks_the_numerically_highest_version(tmp_path):
    base = tmp_path / "model"
    _copy_pb(HALF_PLUS_TWO, base / "9")
    _copy_pb(HALF_PLUS_THREE, base / "00010")
    (base / "tmp-99").mkdir()          # not a version
    (base / "100").write_text("a file, not a version folder")
    info = describe(base)
    assert info.versions == (9, 10)
    assert info.path == str(base / "00010")
    assert info.tf_version == "1.0.0-rc2"
    assert f"TF Serving model base {base}: describing version 10, the highest of 9, 10" \
        in format_info(info)


def test_model_base_whose_highest_version_is_not_a_saved_model(tmp_path):
    base = tmp_path / "model"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"")
    (base / "2" / "variables").mkdir(parents=True)
    with pytest.raises(InspectError) as excinfo:
        describe(base)
    assert str(excinfo.value) == (f"{base / '2'}: the highest version of model base {base} "
                                  "has no saved_model.pb or saved_model.pbtxt")


@needs_fixtures
def test_saved_model_file_path(tmp_path):
    info = describe(HALF_PLUS_TWO / "saved_model.pb")
    assert info.path == str(HALF_PLUS_TWO)
    assert info.signatures == describe(HALF_PLUS_TWO).signatures


@needs_fixtures
def test_pbtxt(tmp_path):
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((HALF_PLUS_TWO / "saved_model.pb").read_bytes())
    (tmp_path / "saved_model.pbtxt").write_text(text_format.MessageToString(proto))
    info = describe(tmp_path)
    assert info.path == str(tmp_path)
    assert info.signatures == describe(HALF_PLUS_TWO).signatures
    assert info.tf_version == "1.14.0"


# --- a TF2 SavedModel --------------------------------------------------------------


@pytest.fixture(scope="module")
def tf2_model(tmp_path_factory) -> Path:
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.weight = tf.Variable(0.5)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def score(self, text):
            return {"score": tf.cast(tf.strings.length(text), tf.float32) * self.weight}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="values"),
                                      tf.TensorSpec(None, tf.int8, name="anything")])
        def total(self, values, anything):
            return {"total": tf.reduce_sum(values), "rank": tf.rank(anything)}

    module = Scorer()
    path = tmp_path_factory.mktemp("tf2") / "scorer"
    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.score.get_concrete_function(),
        "another": module.total.get_concrete_function(),
    })
    return path


@pytest.mark.slow
def test_tf2_model(tf2_model):
    import tensorflow as tf

    info = describe(tf2_model)
    assert info.format == "tf2"
    assert info.tf_version == tf.__version__
    assert info.tags == (("serve",),)
    assert info.metadata is None
    # __saved_model_init_op is left out; serving_default comes first.
    assert tuple(s.key for s in info.signatures) == ("serving_default", "another")

    default, another = info.signatures
    assert default.method == "tensorflow/serving/predict"
    assert default.inputs == (TensorInfo("text", "string", (-1,), "serving_default_text:0"),)
    (score,) = default.outputs
    assert (score.name, score.dtype, score.shape) == ("score", "float32", (-1,))
    assert re.fullmatch(r"\w*PartitionedCall(_\d+)?:\d+", score.tensor)

    assert [(t.name, t.dtype, t.shape, t.tensor) for t in another.inputs] == [
        ("anything", "int8", None, "another_anything:0"),
        ("values", "float32", (-1, 3), "another_values:0"),
    ]
    assert [(t.name, t.dtype, t.shape) for t in another.outputs] == [
        ("rank", "int32", ()), ("total", "float32", ())]


@pytest.mark.slow
def test_tf2_model_text(tf2_model):
    import tensorflow as tf

    info = describe(tf2_model)
    lines = format_info(info).splitlines()
    assert lines[0] == f"SavedModel {tf2_model}  (TF2, saved by TensorFlow {tf.__version__})"
    start = lines.index('signature "another"')
    block = lines[start:start + 7]
    tensor_column = [line[len("    anything  float32  [-1, 3]  "):] for line in block
                     if line.startswith("    ")]
    assert [line[:len("    anything  float32  [-1, 3]  ")] for line in block] == [
        'signature "another"',
        "  inputs",
        "    anything  int8     [?]      ",
        "    values    float32  [-1, 3]  ",
        "  outputs",
        "    rank      int32    []       ",
        "    total     float32  []       ",
    ]
    assert tensor_column[:2] == ["another_anything:0", "another_values:0"]


# --- hand-built protos: several MetaGraphs, odd tensors --------------------------


def _write_proto(directory: Path, meta_graphs: list[tuple[tuple[str, ...], dict]]) -> Path:
    """A saved_model.pb whose MetaGraphs have the given tags and signatures
    ({key: (method, {alias: TensorInfo proto}, {alias: TensorInfo proto})})."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    for tags, signatures in meta_graphs:
        mg = proto.meta_graphs.add()
        mg.meta_info_def.tags.extend(tags)
        for key, (method, inputs, outputs) in signatures.items():
            sig = mg.signature_def[key]
            sig.method_name = method
            for alias, tensor in inputs.items():
                sig.inputs[alias].CopyFrom(tensor)
            for alias, tensor in outputs.items():
                sig.outputs[alias].CopyFrom(tensor)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def _dense(name: str, dtype: int, dims: list[int] | None):
    from tensorflow.core.framework import tensor_shape_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    shape = (tensor_shape_pb2.TensorShapeProto(unknown_rank=True) if dims is None else
             tensor_shape_pb2.TensorShapeProto(
                 dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))
    return meta_graph_pb2.TensorInfo(name=name, dtype=dtype, tensor_shape=shape)


def test_serve_meta_graph_is_chosen_among_several(tmp_path):
    from tensorflow.core.framework import types_pb2

    x = _dense("x:0", types_pb2.DT_FLOAT, [-1])
    path = _write_proto(tmp_path, [
        (("train",), {"train_sig": ("", {"x": x}, {})}),
        (("serve", "gpu"), {"gpu_sig": ("tensorflow/serving/predict", {"x": x}, {})}),
        (("serve",), {"cpu_sig": ("tensorflow/serving/predict", {"x": x}, {"x": x})}),
    ])
    info = describe(path)
    assert info.tags == (("train",), ("serve", "gpu"), ("serve",))
    assert info.signature_tags == ("serve",)
    assert [s.key for s in info.signatures] == ["cpu_sig"]
    lines = format_info(info).splitlines()
    assert lines[:3] == [
        f"SavedModel {path}  (TF1)",
        "MetaGraph tags: train; serve, gpu; serve",
        "signatures of the MetaGraph tagged: serve",
    ]

    path = _write_proto(tmp_path / "no_plain_serve", [
        (("train",), {"train_sig": ("", {"x": x}, {})}),
        (("serve", "tpu"), {"tpu_sig": ("tensorflow/serving/predict", {"x": x}, {})}),
    ])
    assert [s.key for s in describe(path).signatures] == ["tpu_sig"]

    path = _write_proto(tmp_path / "untagged", [((), {"only": ("", {"x": x}, {})})])
    info = describe(path)
    assert [s.key for s in info.signatures] == ["only"]
    assert format_info(info).splitlines()[1] == "MetaGraph tags: (none)"


def test_odd_signatures(tmp_path):
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    sparse = meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_INT64)
    sparse.coo_sparse.values_tensor_name = "ids/values:0"
    sparse.coo_sparse.indices_tensor_name = "ids/indices:0"
    sparse.coo_sparse.dense_shape_tensor_name = "ids/shape:0"
    sparse.tensor_shape.dim.add(size=-1)
    sparse.tensor_shape.dim.add(size=-1)
    ragged = meta_graph_pb2.TensorInfo(dtype=types_pb2.DT_INVALID)
    ragged.composite_tensor.components.add(name="r/values:0")
    ragged.composite_tensor.components.add(name="r/splits:0")
    half = _dense("h:0", types_pb2.DT_HALF, [])
    path = _write_proto(tmp_path, [(("serve",), {
        "zeta": ("custom/method", {"ids": sparse}, {"h": half}),
        "alpha": ("", {}, {"r": ragged}),
        "beta": ("tensorflow/serving/predict", {}, {}),
    })])
    info = describe(path)
    zeta = _by_key(info)["zeta"]
    assert zeta.inputs == (TensorInfo(
        "ids", "int64", (-1, -1),
        "SparseTensor(indices=ids/indices:0, values=ids/values:0, dense_shape=ids/shape:0)"),)
    assert zeta.outputs == (TensorInfo("h", "float16", (), "h:0"),)
    assert _by_key(info)["alpha"].outputs == (
        TensorInfo("r", "invalid", None, "CompositeTensor(r/values:0, r/splits:0)"),)

    text = format_info(info)
    assert "\n\n".join(text.split("\n\n")[1:]) == "\n".join([
        'signature "alpha"  (no method)',
        "  inputs: none",
        "  outputs",
        "    r  invalid  [?]  CompositeTensor(r/values:0, r/splits:0)",
        "",
        'signature "beta"',
        "  inputs: none",
        "  outputs: none",
        "",
        'signature "zeta"  (custom/method)',
        "  inputs",
        "    ids  int64    [-1, -1]  SparseTensor(indices=ids/indices:0, values=ids/values:0, "
        "dense_shape=ids/shape:0)",
        "  outputs",
        "    h    float16  []        h:0",
    ])


def test_no_signatures(tmp_path):
    path = _write_proto(tmp_path, [(("serve",), {})])
    info = describe(path)
    assert info.signatures == ()
    assert format_info(info).splitlines()[2:] == [
        "", "no signatures: TF Serving cannot call this model"]


def test_dtype_names_are_tensorflows():
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    checked = 0
    for value in types_pb2.DataType.values():
        try:
            expected = tf.as_dtype(value).name
        except TypeError:          # DT_INVALID and enum values TF has no DType for
            continue
        assert dtype_name(value) == expected, types_pb2.DataType.Name(value)
        checked += 1
    assert checked > 30
    assert dtype_name(types_pb2.DT_INVALID) == "invalid"
    assert dtype_name(9999) == "dtype9999"


# --- metadata --------------------------------------------------------------------


def _metadata(**overrides) -> modelmeta.ModelMetadata:
    fields = dict(
        name="half_plus_two",
        inputs=(modelmeta.InputSpec("x", "tensor", "float32", (-1, 1)),),
        outputs=(modelmeta.OutputSpec("y", "scores", "float32", (-1, 1)),),
        labels=("zero", "one", "two", "three", "four", "five", "six"),
    )
    fields.update(overrides)
    return modelmeta.ModelMetadata(**fields)


@needs_fixtures
def test_metadata_section(tmp_path):
    model = _copy_pb(HALF_PLUS_TWO, tmp_path / "model")
    meta = _metadata()
    meta.save(model)
    info = describe(model)
    assert info.metadata == json.loads(meta.to_json())
    lines = format_info(info).splitlines()
    start = lines.index("metadata (assets.extra/model_metadata.json, schema 1)")
    assert lines[start - 1] == ""
    assert lines[start:] == [
        "metadata (assets.extra/model_metadata.json, schema 1)",
        "  name       half_plus_two",
        "  signature  serving_default",
        "  inputs",
        "    x  tensor, float32 [-1, 1]",
        "  outputs",
        "    y  scores, float32 [-1, 1]",
        "  labels     7  (zero, one, two, three, four, ...)",
    ]


@needs_fixtures
def test_metadata_section_images_quantization_and_mismatches(tmp_path):
    model = _copy_pb(HALF_PLUS_TWO, tmp_path / "model")
    image = modelmeta.ImageSpec(
        28, 28, 3, modelmeta.Normalization("meanstd", (123.675, 116.28, 103.53),
                                           (58.395, 57.12, 57.375), invert=True),
        resize="pad")
    _metadata(
        inputs=(modelmeta.InputSpec("images", "image_bytes", "string", (-1,), image=image),
                modelmeta.InputSpec("x", "quantized_pixels", "uint8", (-1, 28, 28, 1),
                                    image=modelmeta.ImageSpec(28, 28, 1, layout="flat"),
                                    quantization=modelmeta.Quantization("uint8", 1 / 255))),
        outputs=(modelmeta.OutputSpec("y", "image", "string", (-1,), encoding="png"),
                 modelmeta.OutputSpec("probs", "probabilities", "int8", (-1, 10),
                                      quantization=modelmeta.Quantization("int8", 0.5, -3))),
        labels=("a", "b"),
    ).save(model)
    lines = format_info(describe(model)).splitlines()
    start = lines.index("metadata (assets.extra/model_metadata.json, schema 1)")
    assert lines[start + 3:] == [
        "  inputs",
        "    images  image_bytes, 28x28x3, normalize meanstd mean=123.675/116.28/103.53 "
        "std=58.395/57.12/57.375, inverted, resize pad",
        "    x       quantized_pixels, 28x28x1, normalize unit, resize stretch, layout flat, "
        "quantized uint8 scale=0.00392157 zero_point=0",
        "  outputs",
        "    y       image, string [-1], png-encoded",
        "    probs   probabilities, int8 [-1, 10], quantized int8 scale=0.5 zero_point=-3",
        "  labels     2  (a, b)",
        '  warning: the metadata input "images" is not in signature "serving_default"',
        '  warning: the metadata output "probs" is not in signature "serving_default"',
    ]


@needs_fixtures
def test_metadata_naming_a_missing_signature(tmp_path):
    model = _copy_pb(HALF_PLUS_TWO, tmp_path / "model")
    _metadata(signature="wrapped", labels=None).save(model)
    lines = format_info(describe(model)).splitlines()
    assert lines[-1] == '  warning: the metadata names signature "wrapped", which the model lacks'
    assert not any(line.startswith("  labels") for line in lines)


@needs_fixtures
def test_metadata_that_breaks_the_schema_is_shown_as_invalid(tmp_path):
    model = _copy_pb(HALF_PLUS_TWO, tmp_path / "model")
    (model / "assets.extra").mkdir()
    (model / "assets.extra" / "model_metadata.json").write_text('{"schema_version": 1}')
    info = describe(model)
    assert info.metadata == {"schema_version": 1}
    assert format_info(info).splitlines()[-2:] == [
        "metadata (assets.extra/model_metadata.json, schema 1)",
        "  invalid: metadata is missing 'name'",
    ]


@needs_fixtures
@pytest.mark.parametrize(("text", "problem"), [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1))"),
    ("[1, 2]", "must hold a JSON object, not list"),
])
def test_unreadable_metadata(tmp_path, text, problem):
    model = _copy_pb(HALF_PLUS_TWO, tmp_path / "model")
    (model / "assets.extra").mkdir()
    meta_file = model / "assets.extra" / "model_metadata.json"
    meta_file.write_text(text)
    with pytest.raises(InspectError) as excinfo:
        describe(model)
    assert str(excinfo.value) == f"{meta_file}: {problem}"


# --- errors ----------------------------------------------------------------------


def test_inspect_error_is_a_source_error():
    # so the CLI prints one line and exits 2 instead of a traceback
    assert issubclass(InspectError, SourceError)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InspectError) as excinfo:
        describe(missing)
    assert str(excinfo.value) == f"{missing}: no such file or directory"
    with pytest.raises(InspectError) as excinfo:
        describe("relative/nope")
    assert str(excinfo.value) == "relative/nope: no such file or directory"


def test_directory_without_saved_model(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.json").write_text("{}")
    with pytest.raises(InspectError) as excinfo:
        describe(tmp_path)
    assert str(excinfo.value) == (f"{tmp_path}: no saved_model.pb or saved_model.pbtxt here, "
                                  "and no numeric version folders of a TF Serving model base")


def test_chunked_saved_model_is_refused_by_name(tmp_path):
    (tmp_path / "saved_model.cpb").write_bytes(b"\0")
    with pytest.raises(InspectError) as excinfo:
        describe(tmp_path)
    assert str(excinfo.value) == (f"{tmp_path}: has only saved_model.cpb (a chunked SavedModel "
                                  "over 2 GB), which inspect cannot read")


@pytest.mark.parametrize("content", [
    b"not a protobuf",
    pytest.param("truncated", marks=needs_fixtures),
])
def test_corrupt_saved_model_pb(tmp_path, content):
    if content == "truncated":
        data = (HALF_PLUS_TWO / "saved_model.pb").read_bytes()
        content = data[: len(data) // 2]
    pb = tmp_path / "saved_model.pb"
    pb.write_bytes(content)
    with pytest.raises(InspectError) as excinfo:
        describe(tmp_path)
    assert str(excinfo.value) == (f"{pb}: cannot parse as a SavedModel protocol buffer "
                                  "(corrupt, truncated, or not a SavedModel)")


def test_empty_saved_model_pb(tmp_path):
    # An empty file is a valid, empty proto: no MetaGraphs.
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(InspectError) as excinfo:
        describe(tmp_path)
    assert str(excinfo.value) == (f"{tmp_path / 'saved_model.pb'}: has no MetaGraphs "
                                  "(corrupt, or not a SavedModel)")


def test_corrupt_pbtxt(tmp_path):
    pbtxt = tmp_path / "saved_model.pbtxt"
    pbtxt.write_text("meta_graphs { no_such_field: 1 }\n")
    with pytest.raises(InspectError) as excinfo:
        describe(tmp_path)
    message = str(excinfo.value)
    assert message.startswith(f"{pbtxt}: not a valid SavedModel in text format (")
    assert "no_such_field" in message


# --- import cost -----------------------------------------------------------------


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, modelprep.inspect; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], check=True)
    assert result.stdout.strip() == "False"
