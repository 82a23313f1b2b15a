"""What a wrapped SavedModel carries of its source: its weights as constants when they are
small, else its variables only, unless the source holds state of another kind (lookup
tables, assets), which is then kept whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelmeta import Normalization
from modelprep import wrap as wrap_module
from modelprep.errors import ModelprepError
from modelprep.wrap import WrapOptions, wrap
from tests.conftest import encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def _saved_objects(model_dir: Path) -> int:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model_dir / "saved_model.pb").read_bytes())
    return len(saved.meta_graphs[0].object_graph_def.nodes)


def _layered_source(tf, out: Path, with_table: bool = False, with_asset: bool = False
                    ) -> Path:
    """A TF2 SavedModel of eight small layers, each its own object with its variables,
    as Keras and tf.Module models are saved: 8x8 gray pixels in, two scores out."""

    class Layer(tf.Module):
        def __init__(self, n_in: int, n_out: int, seed: int) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            self.w = tf.Variable(rng.normal(0, 0.3, (n_in, n_out)).astype(np.float32))
            self.b = tf.Variable(np.zeros(n_out, np.float32))

        @tf.function
        def __call__(self, x):
            return tf.nn.relu(x @ self.w + self.b)

    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [Layer(64 if i == 0 else 16, 16, i) for i in range(7)]
            self.head = Layer(16, 2, 99)
            self.unused = tf.Variable(np.ones((100, 100), np.float32))  # e.g. a slot
            if with_table:
                self.table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer([0, 1], [10.0, 20.0]), -1.0)
            if with_asset:
                path = out.parent / f"{out.name}-scale.txt"
                path.write_text("3.0\n")
                self.asset = tf.saved_model.Asset(str(path))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def serve(self, images):
            x = tf.reshape(images, [-1, 64])
            for layer in self.layers:
                x = layer(x)
            scores = tf.nn.softmax(self.head(x))
            if with_table:
                scores = scores * self.table.lookup(tf.constant([0, 1]))
            if with_asset:
                scores = scores * tf.strings.to_number(
                    tf.strings.strip(tf.io.read_file(self.asset.asset_path)))
            return {"scores": scores}

    model = Model()
    tf.saved_model.save(model, str(out), signatures={"serving_default": model.serve})
    return out


def _wrapped(tf, src: Path, out: Path, freeze: bool | None = False,
             progress=lambda _msg: None, **options) -> Path:
    wrap(src, out, WrapOptions(normalization=Normalization("unit"),
                               output_roles={"scores": "probabilities"}, freeze=freeze,
                               **options), progress=progress)
    return out


def _metadata_source(out: Path) -> dict:
    from modelmeta import ModelMetadata

    return dict(ModelMetadata.load(out).source)


def _images() -> list[bytes]:
    rng = np.random.default_rng(3)
    return [encode(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(4)]


def _same_answers(tf, src: Path, wrapped: Path) -> None:
    """The wrapped model on PNG bytes answers what the source answers on the pixels."""
    import io

    from PIL import Image

    images = _images()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)), np.float32)[..., None] / 255.0
                       for b in images])
    expected = tf.saved_model.load(str(src)).signatures["serving_default"](
        images=tf.constant(pixels))["scores"].numpy()
    served = tf.saved_model.load(str(wrapped)).signatures["serving_default"]
    got = served(image_bytes=tf.constant(images))["scores"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_a_source_of_variables_and_functions_is_saved_as_its_variables_only(tf, tmp_path):
    src = _layered_source(tf, tmp_path / "src")
    out = _wrapped(tf, src, tmp_path / "wrapped")
    _same_answers(tf, src, out)
    # The source's 9 layer objects, their functions and the unused variable are not
    # written again: the wrapped model holds its signature and the 16 variables it reads.
    loaded = tf.saved_model.load(str(out))
    assert len(loaded.source_variables) == 16
    assert not hasattr(loaded, "original")
    assert _saved_objects(out) < _saved_objects(src)
    assert not any(v.shape == (100, 100) for v in loaded.source_variables)


@pytest.mark.parametrize("kind", ["table", "asset"])
@pytest.mark.parametrize("freeze", [None, False])
def test_a_source_with_other_state_is_kept_whole(tf, tmp_path, kind, freeze):
    src = _layered_source(tf, tmp_path / "src", with_table=kind == "table",
                          with_asset=kind == "asset")
    said: list[str] = []
    out = _wrapped(tf, src, tmp_path / "wrapped", freeze=freeze, progress=said.append)
    if freeze is None:
        assert "keeping the weights as variables: the source holds state other than " \
            "variables" in said
        assert "weights" not in _metadata_source(out)
    loaded = tf.saved_model.load(str(out))
    assert hasattr(loaded, "original")
    _same_answers(tf, src, out)
    if kind == "asset":  # the asset travels with the wrapped model, not left behind
        assert any(p.name.endswith("scale.txt") for p in (out / "assets").iterdir())


@pytest.mark.parametrize("freeze", [None, False])
def test_a_lean_wrapped_model_answers_in_a_fresh_process(tf, tmp_path, freeze):
    src = _layered_source(tf, tmp_path / "src")
    out = _wrapped(tf, src, tmp_path / "wrapped", freeze=freeze)
    image = _images()[0]
    (tmp_path / "x.png").write_bytes(image)
    code = ("import tensorflow as tf\n"
            f"m = tf.saved_model.load({str(out)!r})\n"
            f"x = tf.constant([open({str(tmp_path / 'x.png')!r}, 'rb').read()])\n"
            "print(m.signatures['serving_default'](image_bytes=x)['scores'].numpy()"
            ".round(6).tolist())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd="/", check=True)
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    here = served(image_bytes=tf.constant([image]))["scores"].numpy().round(6).tolist()
    assert done.stdout.strip().splitlines()[-1] == str(here)


def _variables_in(model_dir: Path) -> int:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))  # held: its variables die with it
    return len(loaded.signatures["serving_default"].variables)


def test_small_weights_are_frozen_into_the_graph_by_default(tf, tmp_path):
    src = _layered_source(tf, tmp_path / "src")
    said: list[str] = []
    out = _wrapped(tf, src, tmp_path / "wrapped", freeze=None, progress=said.append)
    _same_answers(tf, src, out)
    assert _variables_in(out) == 0
    assert not hasattr(tf.saved_model.load(str(out)), "source_variables")
    assert _metadata_source(out)["weights"] == "constants"
    # 16 variables read by the signature; the unused 100x100 one is not written.
    size = (64 * 16 + 16) * 4 + 6 * (16 * 16 + 16) * 4 + (16 * 2 + 2) * 4
    assert f"froze 16 variables ({size / 2**20:.1f} MiB) into the graph" in said
    ones = np.ones(100, np.float32).tobytes()  # a row of the unused variable
    assert ones not in (out / "saved_model.pb").read_bytes()
    assert ones in b"".join(p.read_bytes() for p in (src / "variables").iterdir())


def test_weights_above_the_limit_stay_variables_unless_freeze_is_asked(tf, tmp_path,
                                                                      monkeypatch):
    src = _layered_source(tf, tmp_path / "src")
    monkeypatch.setattr(wrap_module, "FREEZE_AUTO_LIMIT", 4096)
    said: list[str] = []
    out = _wrapped(tf, src, tmp_path / "auto", freeze=None, progress=said.append)
    assert _variables_in(out) == 16
    assert "weights" not in _metadata_source(out)
    assert any(m.startswith("keeping the weights as variables: 0 MiB of weights, above the "
                            "0 MiB") for m in said), said
    asked = _wrapped(tf, src, tmp_path / "asked", freeze=True)
    assert _variables_in(asked) == 0
    _same_answers(tf, src, asked)


def test_kept_signatures_keep_the_variables(tf, tmp_path):
    src = _layered_source(tf, tmp_path / "src")
    model = tf.saved_model.load(str(src))
    tf.saved_model.save(model, str(tmp_path / "two"), signatures={
        "serving_default": model.signatures["serving_default"],
        "other": model.signatures["serving_default"]})
    said: list[str] = []
    out = _wrapped(tf, tmp_path / "two", tmp_path / "auto", freeze=None, progress=said.append,
                   keep_signatures=True)
    assert "keeping the weights as variables: kept signatures read the variables too" in said
    assert _variables_in(out) == 16
    with pytest.raises(ModelprepError, match="^cannot freeze the weights: kept signatures "
                       "read the variables too$"):
        _wrapped(tf, tmp_path / "two", tmp_path / "asked", freeze=True, keep_signatures=True)
    assert not (tmp_path / "asked").exists()


def test_freeze_asked_of_a_source_with_a_table_is_refused(tf, tmp_path):
    src = _layered_source(tf, tmp_path / "src", with_table=True)
    with pytest.raises(ModelprepError, match="^cannot freeze the weights: the source holds "
                       "state other than variables$"):
        _wrapped(tf, src, tmp_path / "wrapped", freeze=True)
    assert not (tmp_path / "wrapped").exists()
