"""The models the bench measures, built once and cached under ``build/bench/``.

Two models: the project's demo digits classifier (tiny, so every millisecond
the adapter adds shows) and a Keras MobileNetV2 at 224x224 with random
weights (``weights=None``: nothing is downloaded, and only the compute matters
for timing). Each exists twice: the original SavedModel, which takes a float
tensor, and the wrapped one `modelprep.wrap` makes, which takes encoded images.

Building imports TensorFlow and Keras, so the runner calls ``python -m
bench.models`` in a child process and stays light itself: its only work while
measuring is being the client.

    python -m bench.models            # build what is missing, print the paths as JSON
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_BUILD = ROOT / "build" / "bench"
MOBILENET_DIR = BENCH_BUILD / "models" / "mobilenet_v2"

MOBILENET_RECIPE = 2
"""Bump when the MobileNetV2 build or wrapping changes, so caches rebuild."""
MOBILENET_SIZE = 224
MOBILENET_INPUT = "images"
MOBILENET_OUTPUT = "probabilities"
MOBILENET_SEED = 0


@dataclass(frozen=True)
class BenchModel:
    """One measured model: where both forms live and how to feed the original."""

    name: str
    original: str
    """SavedModel taking the decoded, normalised float tensor."""
    served: str
    """The wrapped SavedModel the function serves (input: encoded image bytes)."""
    input_name: str
    input_shape: tuple[int, ...]
    """Shape of one decoded batch of size 1, as the original signature wants it."""
    normalization: str
    """How 0..255 pixels become model values (`modelmeta` conventions)."""
    channels: int
    height: int
    width: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchModel:
        return cls(**{**data, "input_shape": tuple(data["input_shape"])})


def build_all(force: bool = False) -> dict[str, BenchModel]:
    """Both bench models, built if missing. Imports TensorFlow only when building."""
    return {"digits": digits_model(), "mobilenet_v2": mobilenet_model(force=force)}


def digits_model() -> BenchModel:
    from modelprep.demo import build_demo
    from modelprep.digits import IMAGE_SIZE, INPUT_NAME

    demo = build_demo()
    return BenchModel(name="digits", original=str(demo.original), served=str(demo.served),
                      input_name=INPUT_NAME, input_shape=(1, IMAGE_SIZE * IMAGE_SIZE),
                      normalization="unit", channels=1, height=IMAGE_SIZE, width=IMAGE_SIZE)


def mobilenet_model(base: Path = MOBILENET_DIR, force: bool = False) -> BenchModel:
    """MobileNetV2 224x224, random weights, seeded; cached with a recipe stamp and a lock."""
    base.mkdir(parents=True, exist_ok=True)
    original, served = base / "original", base / "served"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _read_stamp(base) or {}
        wrap_code = wrap_fingerprint()
        if (force or stamp.get("recipe") != MOBILENET_RECIPE
                or not (original / "saved_model.pb").is_file()):
            _build_mobilenet(base, original, served)
        elif stamp.get("wrap") != wrap_code or not (served / "saved_model.pb").is_file():
            _wrap_mobilenet(base, original, served)  # the wrapping code changed: re-wrap
    size = MOBILENET_SIZE
    return BenchModel(name="mobilenet_v2", original=str(original), served=str(served),
                      input_name=MOBILENET_INPUT, input_shape=(1, size, size, 3),
                      normalization="symmetric", channels=3, height=size, width=size)


def _build_mobilenet(base: Path, original: Path, served: Path) -> None:
    started = time.monotonic()
    import keras
    import tensorflow as tf

    (base / "stamp.json").unlink(missing_ok=True)
    shutil.rmtree(original, ignore_errors=True)
    keras.utils.set_random_seed(MOBILENET_SEED)
    net = keras.applications.MobileNetV2(input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3),
                                         weights=None)
    _calibrate_batch_norm(keras, net)

    class Serving(tf.Module):
        """Holds the network so its variables are saved with the signature."""

        def __init__(self, model) -> None:
            super().__init__()
            self.net = model

        @tf.function(input_signature=[tf.TensorSpec(
            [None, MOBILENET_SIZE, MOBILENET_SIZE, 3], tf.float32, name=MOBILENET_INPUT)])
        def serve(self, images):
            return {MOBILENET_OUTPUT: self.net(images, training=False)}

    module = Serving(net)
    tf.saved_model.save(module, str(original), signatures={"serving_default": module.serve})
    _wrap_mobilenet(base, original, served, started)


def _wrap_mobilenet(base: Path, original: Path, served: Path,
                    started: float | None = None) -> None:
    started = time.monotonic() if started is None else started
    from modelmeta import Normalization
    from modelprep.wrap import WrapOptions, wrap

    (base / "stamp.json").unlink(missing_ok=True)
    # MobileNetV2 was trained on pixels scaled to [-1, 1]: `symmetric` normalisation.
    wrap(original, served, WrapOptions(
        name="mobilenet_v2", normalization=Normalization("symmetric"), resize="stretch",
        output_roles={MOBILENET_OUTPUT: "probabilities"}, overwrite=True))
    stamp = {"recipe": MOBILENET_RECIPE, "wrap": wrap_fingerprint(),
             "seconds": round(time.monotonic() - started, 1)}
    (base / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")


WRAP_CODE = ("modelmeta.py", "modelprep/wrap.py", "modelprep/input_ops.py",
             "modelprep/sources.py")
"""The code that makes the wrapped model: when it changes, the bench re-wraps, so it
always measures the wrapping the project has now."""


def wrap_fingerprint(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for name in WRAP_CODE:
        path = root / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(missing)")
    return digest.hexdigest()


def _calibrate_batch_norm(keras, net) -> None:
    """Give the random network batch-norm statistics from real photos.

    Freshly initialised, every batch norm divides by a unit variance its input
    does not have, activations shrink about tenfold per block and all 1000
    outputs end up at exactly 0.001: any image gives the same answer, so a
    check that the function and the direct call agree would prove nothing.
    One forward pass in training mode with momentum 0 sets each layer's moving
    mean and variance to those of 16 crops of scikit-learn's two sample photos;
    the compute, which is what the bench measures, is unchanged.
    """
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(MOBILENET_SEED)
    size = MOBILENET_SIZE
    crops = []
    for i in range(16):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - size))
        left = int(rng.integers(0, photo.shape[1] - size))
        crops.append(photo[top:top + size, left:left + size])
    batch = np.stack(crops).astype(np.float32) / 127.5 - 1.0
    norms = [layer for layer in net.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    net(batch, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _read_stamp(base: Path) -> dict | None:
    try:
        return json.loads((base / "stamp.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    models = build_all(force="--force" in args)
    print(json.dumps({name: m.to_dict() for name, m in models.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
