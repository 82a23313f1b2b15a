"""`modelprep export`: TF Serving's layout, real PredictionLog warmup records, models.config.

No TF Serving binary runs here, so the warmup records are replayed the way the server
replays them when it loads a version: each request's TensorProtos to arrays
(`tf.make_ndarray`), into the version's serving signature loaded with plain
`tf.saved_model.load`.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from modelmeta import METADATA_PATH, ModelMetadata
from modelprep.errors import ModelprepError, SourceError
from modelprep.export import (
    WARMUP_FILE,
    ExportOptions,
    export,
    read_models_config,
    versions,
)
from tests.conftest import ROOT, SHARED_FIXTURES, encode

pytestmark = pytest.mark.slow

HALF_PLUS_TWO = SHARED_FIXTURES / "tfserving" / "saved_model_half_plus_two_cpu" / "00000123"
needs_fixtures = pytest.mark.skipif(not (HALF_PLUS_TWO / "saved_model.pb").is_file(),
                                    reason=f"TF Serving test models not at {HALF_PLUS_TWO}")

OTHER_MODEL = """\
model_config_list {
  config {
    name: "resnet"
    base_path: "/models/resnet"
    model_platform: "tensorflow"
    model_version_policy {
      specific {
        versions: 1
        versions: 2
      }
    }
    version_labels {
      key: "stable"
      value: 1
    }
  }
}
"""


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def warmup_logs(tf, version_dir):
    """Every record of the warmup file, parsed as a PredictionLog."""
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(version_dir / WARMUP_FILE)))
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]


def replay(tf, version_dir, log):
    """Run one warmup request against the exported version, as TF Serving does."""
    model = tf.saved_model.load(str(version_dir))
    request = log.predict_log.request
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = model.signatures[request.model_spec.signature_name](**inputs)
    return {k: v.numpy() for k, v in outputs.items()}


def test_demo_export_layout_warmup_and_config(demo_model, digits, tf, tmp_path):
    base = tmp_path / "serving"
    result = export(demo_model.served, base)
    assert (result.name, result.version, result.warmup_records) == ("digits", 1, 3)
    assert result.path == base / "digits" / "1"
    assert result.base_path == str((base / "digits").resolve())
    for name in ("saved_model.pb", "variables/variables.index", METADATA_PATH, WARMUP_FILE):
        assert (result.path / name).is_file(), name
    assert ((result.path / METADATA_PATH).read_bytes()
            == (demo_model.served / METADATA_PATH).read_bytes())
    assert sorted(p.name for p in (base / "digits").iterdir()) == ["1"]  # no temporary left
    assert oct(result.path.stat().st_mode & 0o777) == "0o755"

    logs = warmup_logs(tf, result.path)
    assert len(logs) == 3
    original = tf.saved_model.load(str(demo_model.original)).signatures["serving_default"]
    for i, log in enumerate(logs):
        request = log.predict_log.request
        assert request.model_spec.name == "digits"
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["image_bytes"]
        (png,) = tf.make_ndarray(request.inputs["image_bytes"])
        pixels = np.asarray(Image.open(io.BytesIO(png)))
        assert np.array_equal(pixels, digits.x_test[i])  # the held-out digits, in order
        got = replay(tf, result.path, log)["scores"]
        want = original(images=tf.constant(pixels.reshape(1, 784).astype(np.float32) / 255))
        assert np.abs(got - want["scores"].numpy()).max() < 1e-5

    config = read_models_config(base / "models.config")
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "digits", result.base_path, "tensorflow")


def test_version_numbers_follow_tf_serving(demo_model, tmp_path):
    base = tmp_path / "serving"
    opts = ExportOptions(warmup=0)
    assert export(demo_model.served, base, opts).version == 1
    assert export(demo_model.served, base, opts).version == 2
    assert export(demo_model.served, base, ExportOptions(warmup=0, version=7)).version == 7
    assert export(demo_model.served, base, opts).version == 8
    (base / "digits" / "0010").mkdir()  # TF Serving reads "0010" as version 10
    assert export(demo_model.served, base, opts).version == 11
    with pytest.raises(ModelprepError, match=r"digits/7 already exists \(version 7\); versions "
                                             r"are never overwritten: export as version 12"):
        export(demo_model.served, base, ExportOptions(version=7))
    with pytest.raises(ModelprepError, match=r"digits/0010 already exists \(version 10\)"):
        export(demo_model.served, base, ExportOptions(version=10))
    assert sorted(versions(base / "digits")) == [1, 2, 7, 8, 10, 11]
    assert not (base / "digits" / "1" / WARMUP_FILE).exists()
    assert not any(p.name.startswith(".") for p in (base / "digits").iterdir())
    config = read_models_config(base / "models.config")
    assert [c.name for c in config.model_config_list.config] == ["digits"]


def test_models_config_keeps_other_models_and_their_policies(demo_model, tmp_path):
    base = tmp_path / "serving"
    base.mkdir()
    (base / "models.config").write_text(OTHER_MODEL)
    before = read_models_config(base / "models.config").model_config_list.config[0]

    export(demo_model.served, base, ExportOptions(warmup=0, serving_base="/models/"))
    export(demo_model.served, base, ExportOptions(warmup=0, name="digits-b",
                                                  serving_base="/models"))
    config = read_models_config(base / "models.config")
    entries = {c.name: c for c in config.model_config_list.config}
    assert list(entries) == ["resnet", "digits", "digits-b"]
    assert entries["resnet"] == before
    assert entries["digits"].base_path == "/models/digits"
    assert entries["digits-b"].base_path == "/models/digits-b"

    # an existing entry keeps its policy and labels; only where it lives changes
    entries["digits"].version_labels["stable"] = 1
    from modelprep.export import write_models_config

    write_models_config(base / "models.config", config)
    result = export(demo_model.served, base, ExportOptions(warmup=0))
    entries = {c.name: c for c in read_models_config(base / "models.config")
               .model_config_list.config}
    assert list(entries) == ["resnet", "digits", "digits-b"]
    assert entries["digits"].base_path == str((base / "digits").resolve())
    assert dict(entries["digits"].version_labels) == {"stable": 1}
    assert result.version == 2


def test_nothing_is_written_when_a_step_fails(demo_model, digits, tmp_path):
    base = tmp_path / "serving"
    base.mkdir()
    (base / "models.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ModelprepError, match="models.config is not a text-format "
                                             "ModelServerConfig"):
        export(demo_model.served, base)
    assert not (base / "digits").exists() or not versions(base / "digits")

    (base / "models.config").write_text(OTHER_MODEL)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(encode(digits.x_test[0])[:60])  # the header, no pixels
    with pytest.raises(ModelprepError, match=r"warmup record 0 \(inputs \['image_bytes'\]\) "
                                             "fails against the model"):
        export(demo_model.served, base, ExportOptions(images=photos))
    assert list((base / "digits").iterdir()) == []  # no version, no temporary folder
    assert (base / "models.config").read_text() == OTHER_MODEL


def test_option_and_source_errors(demo_model, tmp_path):
    base = tmp_path / "serving"
    for options, message in (
            (ExportOptions(name="a/b"), "model name 'a/b' cannot be a TF Serving model name"),
            (ExportOptions(version=-1), "version must be a non-negative integer, got -1"),
            (ExportOptions(warmup=1001), r"warmup must be 0..1000 records \(TF Serving reads "
                                         "at most 1000\\), got 1001"),
            (ExportOptions(samples="cats"), "samples must be one of auto, digits, synthetic")):
        with pytest.raises(ModelprepError, match=message):
            export(demo_model.served, base, options)
    with pytest.raises(SourceError, match="no saved_model.pb"):
        export(tmp_path, base)
    with pytest.raises(SourceError, match="no metadata at"):
        export(demo_model.original, base)
    with pytest.raises(SourceError, match="does not exist"):
        export(tmp_path / "missing", base)


def test_quantized_pixel_model_warmup_carries_uint8_tensors(demo_model, tf, tmp_path):
    from tests.modelprep.handmade import save_quantized_pixels_digits

    prepared = tmp_path / "q"
    save_quantized_pixels_digits(demo_model.original, prepared, "uint8")
    result = export(prepared, tmp_path / "serving", ExportOptions(warmup=2))
    logs = warmup_logs(tf, result.path)
    assert len(logs) == 2
    for log in logs:
        tensor = log.predict_log.request.inputs["pixels"]
        assert tf.as_dtype(tensor.dtype) == tf.uint8
        assert [d.size for d in tensor.tensor_shape.dim] == [1, 28, 28, 1]
        assert replay(tf, result.path, log)["scores"].shape == (1, 10)


@needs_fixtures
def test_tf1_model_with_a_tensor_input(tf, tmp_path):
    from tests.modelprep.handmade import save_prepared_half_plus_two

    prepared = tmp_path / "hp2"
    meta = save_prepared_half_plus_two(HALF_PLUS_TWO, prepared)
    result = export(prepared, tmp_path / "serving", ExportOptions(warmup=4))
    assert result.name == "half_plus_two"
    assert ModelMetadata.load(result.path) == meta
    q = meta.outputs[0].quantization
    for log in warmup_logs(tf, result.path):
        x = tf.make_ndarray(log.predict_log.request.inputs["x"])
        assert x.shape == (1, 1) and x.dtype == np.float32
        y = replay(tf, result.path, log)["y"]
        assert y.dtype == np.int8
        assert abs(q.scale * (int(y[0, 0]) - q.zero_point) - (x[0, 0] / 2 + 2)) <= q.scale / 2


def test_cli_export_then_inspect_the_model_base(demo_model, tmp_path, capsys):
    base = tmp_path / "serving"
    shutil.copytree(demo_model.served, tmp_path / "prepared")
    result = subprocess.run(
        [sys.executable, "-m", "modelprep.cli", "export", str(tmp_path / "prepared"), str(base),
         "--name", "mnist", "--version", "3", "--warmup", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"exported mnist version 3 to {base / 'mnist' / '3'} (1 warmup "
                             f"record); {base / 'models.config'}: base_path "
                             f"{(base / 'mnist').resolve()}\n")
    assert "replaying the warmup requests" in result.stderr

    from modelprep.inspect import describe

    info = describe(base / "mnist")
    assert (info.model_base, info.versions) == (str(base / "mnist"), (3,))
    # the name the function asks TF Serving for is the one it is served under
    assert info.metadata["name"] == "mnist"
    assert [s.key for s in info.signatures] == ["serving_default"]
    assert ModelMetadata.load(tmp_path / "prepared").name == "digits"  # the source untouched
    shown = subprocess.run([sys.executable, "-m", "modelprep.cli", "inspect", str(base / "mnist")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "  name       mnist" in shown.stdout.splitlines()
    assert "warning" not in shown.stdout

    from modelprep.cli import main

    code = main(["export", str(tmp_path / "prepared"), str(base), "--name", "mnist",
                 "--version", "3"])
    assert code == 1
    assert "already exists (version 3)" in capsys.readouterr().err


def test_export_name_reaches_the_litert_flavours_and_inspect_warns_on_a_mismatch(
        demo_model, tmp_path):
    """A model base whose folder differs from its metadata's name: the function would ask
    the server for a model that does not exist, and inspect says so."""
    from modelprep.inspect import describe, format_info

    prepared = tmp_path / "prepared"
    shutil.copytree(demo_model.served, prepared)
    (prepared / "litert").mkdir()
    flavour = ModelMetadata.load(demo_model.served)
    (prepared / "litert" / "model_float.json").write_text(flavour.to_json())
    result = export(prepared, tmp_path / "serving", ExportOptions(name="fer", warmup=0))
    assert ModelMetadata.load(result.path).name == "fer"
    assert ModelMetadata.from_json(
        (result.path / "litert" / "model_float.json").read_text()).name == "fer"

    shutil.copytree(result.path, tmp_path / "serving" / "emotions" / "1")
    text = format_info(describe(tmp_path / "serving" / "emotions"))
    assert ('  warning: the metadata names the model "fer" but it is served as "emotions" '
            '(its folder): the function asks the server for "fer"; export it again with '
            '--name emotions') in text.splitlines()
