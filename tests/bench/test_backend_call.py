"""The in-process backend's flat call: the same outputs as the keyword call it replaces.

`functions.backends.inprocess` calls a signature with its inputs flattened in sorted
name order to skip binding keyword arguments (a cut the bench's backend layer measures).
These tests load real SavedModels with real TensorFlow: one whose inputs are declared
out of alphabetical order, so a wrong order would swap them, and the demo-sized one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _save_three_input_model(path: Path) -> None:
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="zeta"),
                                      tf.TensorSpec([None], tf.int32, name="alpha"),
                                      tf.TensorSpec([None, 3], tf.float32, name="mid")])
        def serve(self, zeta, alpha, mid):
            total = (tf.reduce_sum(zeta, 1) * 10 + tf.cast(alpha, tf.float32) * 100
                     + tf.reduce_sum(mid, 1))
            return {"total": total, "doubled": alpha * 2}

    model = Model()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})


def test_flat_call_orders_inputs_by_name_and_matches_the_keyword_call(tmp_path):
    import tensorflow as tf

    from functions.backends.inprocess import _flat_input_names

    _save_three_input_model(tmp_path)
    fn = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    names = _flat_input_names(fn)
    assert names == ["alpha", "mid", "zeta"]
    tensors = {"zeta": tf.constant([[1.0, 2.0]]), "alpha": tf.constant([3]),
               "mid": tf.constant([[0.5, 0.25, 0.125]])}
    flat = fn._call_flat([tensors[n] for n in names], fn.captured_inputs)
    keyword = fn(**tensors)
    assert flat.keys() == keyword.keys() == {"total", "doubled"}
    assert flat["total"].numpy().tolist() == [330.875]  # 30 + 300 + 0.875: nothing swapped
    assert flat["doubled"].numpy().tolist() == keyword["doubled"].numpy().tolist() == [6]


def test_names_are_none_without_keyword_tensor_inputs():
    from functions.backends.inprocess import _flat_input_names

    class NoFlat:
        structured_input_signature = ((), {"x": object()})

    assert _flat_input_names(NoFlat()) is None
    assert _flat_input_names(object()) is None


def test_backend_predict_on_the_demo_model_gives_the_keyword_calls_scores():
    from functions.backends.inprocess import InProcessBackend

    root = Path(__file__).resolve().parents[2]
    served = root / "build" / "models" / "digits" / "served"
    if not (served / "saved_model.pb").is_file():
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "modelprep.cli", "demo"], cwd=root, check=True,
                       capture_output=True)
    from bench import payloads
    from modelprep.digits import digit_images

    backend = InProcessBackend(served)
    image = payloads.encode_png(digit_images().x_test[0])
    inputs = {name: np.array([image], dtype=object) for name in backend._flat_names or ()}
    assert backend._flat_names == ["image_bytes"]
    flat = backend.predict(inputs)
    import tensorflow as tf

    keyword = backend._fn(**{k: tf.constant(v) for k, v in inputs.items()})
    assert flat.keys() == keyword.keys()
    for name in flat:
        np.testing.assert_array_equal(flat[name], keyword[name].numpy())
    assert int(np.argmax(flat["scores"][0])) == 7
