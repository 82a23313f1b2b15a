"""The project's demo model: an MNIST-shaped digit classifier built offline.

The demo has to be buildable on a machine with no network, in CI and in a
sandbox, and twice in a row with the same result.  MNIST itself would have to
be downloaded, so instead the data comes from scikit-learn's bundled
``load_digits`` (1797 8x8 digits that ship inside the wheel), reshaped to look
like MNIST: 28x28, white ink on black, the digit in a centred 20x20 box.  The
model keeps MNIST's classic serving contract (a flattened 784-float image in
0..1, ten probabilities out) so that anything written against an MNIST model
works against this one, and the project downloads nothing to build it.

Only :func:`train_digits_model` imports TensorFlow; the data helpers need just
numpy, scipy and scikit-learn, so code that wants sample digits (tests, the
benchmark, the HTTP examples) stays light.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

IMAGE_SIZE = 28
"""Side of the canvas, as in MNIST."""

BOX_SIZE = 20
"""Side of the box the digit is scaled into, as in MNIST; the rest is black margin."""

NUM_CLASSES = 10
TEST_FRACTION = 0.2

INPUT_NAME = "images"
"""The serving signature's only input: float32 ``[None, 784]``, pixel/255."""

OUTPUT_NAME = "scores"
"""The serving signature's only output: float32 ``[None, 10]`` softmax probabilities."""

DEFAULT_COPIES = 4
DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class DigitData:
    """A fixed train/test split of the digits.

    The arrays are made read-only so that a caller cannot quietly change the
    held-out set that accuracy is measured on (or the training set behind it).
    Images are uint8 ``[N, 28, 28]`` with 0 as background and 255 as full ink;
    labels are int64 ``[N]``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _to_mnist_frame(digit: np.ndarray) -> np.ndarray:
    """Scale one 8x8 digit (0..16) into the middle of a black 28x28 canvas.

    Linear interpolation keeps strokes smooth instead of blocky, and the 4-pixel
    black margin matches where MNIST puts its digits, so a model trained here
    sees its inputs framed the way a real MNIST client would frame them.
    """
    pixels = digit.astype(np.float64) * (255.0 / 16.0)
    box = ndimage.zoom(pixels, BOX_SIZE / digit.shape[0], order=1, mode="nearest", grid_mode=True)
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    start = (IMAGE_SIZE - BOX_SIZE) // 2
    canvas[start : start + BOX_SIZE, start : start + BOX_SIZE] = box
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def digit_images(seed: int = 0) -> DigitData:
    """Return the digits as MNIST-like images with a stratified 80/20 split.

    The split is stratified so every class is held out in proportion, and it is
    a pure function of ``seed`` so that accuracy figures from two builds are
    measured on the same images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.stack([_to_mnist_frame(d) for d in bunch.images])
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return DigitData(
        x_train=_read_only(images[train_idx]),
        y_train=_read_only(labels[train_idx]),
        x_test=_read_only(images[test_idx]),
        y_test=_read_only(labels[test_idx]),
    )


def _random_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one MNIST-style distortion: rotation, scale, shear and shift.

    Returns the ``(matrix, offset)`` that :func:`scipy.ndimage.affine_transform`
    wants, i.e. the map from an output pixel back to the input pixel, with the
    transform centred on the canvas so that rotating or scaling does not also
    move the digit.
    """
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    scale = rng.uniform(0.85, 1.15)
    shear = rng.uniform(-0.15, 0.15)
    shift = rng.uniform(-3.0, 3.0, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.array([[cos, -sin], [sin, cos]])
    shear_m = np.array([[1.0, 0.0], [shear, 1.0]])
    forward = rotate @ shear_m * scale
    inverse = np.linalg.inv(forward)
    centre = np.full(2, (IMAGE_SIZE - 1) / 2.0)
    offset = centre - inverse @ (centre + shift)
    return inverse, offset


def _vary_stroke(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sometimes thicken or thin the strokes, as different pens would."""
    draw = rng.uniform()
    if draw < 0.25:
        return ndimage.grey_dilation(image, size=(2, 2))
    if draw < 0.45:
        return ndimage.grey_erosion(image, size=(2, 2))
    return image


def augment_digits(
    images: np.ndarray, labels: np.ndarray, *, copies: int = DEFAULT_COPIES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``copies`` randomly distorted versions of every image.

    The 1437 training digits are too few and too tidy for a CNN to generalise
    to hand-drawn input, so each is redrawn a few times slightly rotated,
    scaled, sheared, shifted and with thicker or thinner strokes.  A seeded
    generator makes the result a pure function of the arguments.  Pass only
    training images: distorting the held-out split would leak it into training.
    The inputs are not modified.  Output rows are grouped by copy: rows
    ``k*N:(k+1)*N`` are copy ``k`` of images ``0..N-1``.
    """
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}] images, got {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    rng = np.random.default_rng(seed)
    out = np.empty((copies * len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for k in range(copies):
        for i, image in enumerate(images):
            pixels = _vary_stroke(image.astype(np.float64), rng)
            matrix, offset = _random_affine(rng)
            moved = ndimage.affine_transform(
                pixels, matrix, offset=offset, order=1, mode="constant", cval=0.0
            )
            out[k * len(images) + i] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    return out, np.tile(np.asarray(labels, dtype=np.int64), copies)


def training_set(
    data: DigitData, *, copies: int = DEFAULT_COPIES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return the training images followed by their augmented copies.

    Reads only ``data.x_train``/``data.y_train``, so the held-out split cannot
    reach training through augmentation.  The originals come first, unchanged.
    """
    extra_x, extra_y = augment_digits(data.x_train, data.y_train, copies=copies, seed=seed)
    return (np.concatenate([data.x_train, extra_x]), np.concatenate([data.y_train, extra_y]))


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Turn uint8 ``[N, 28, 28]`` images into the model's float32 ``[N, 784]`` in 0..1."""
    return (np.asarray(images, dtype=np.float32) / 255.0).reshape(len(images), -1)


def train_digits_model(
    out_dir: Path,
    *,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    copies: int = DEFAULT_COPIES,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Train the demo CNN and save it as a TF2 SavedModel at ``out_dir``.

    The SavedModel carries only a ``serving_default`` signature with one input
    ``images`` (float32 ``[None, 784]``, pixel/255) and one output ``scores``
    (float32 ``[None, 10]``), the classic MNIST contract, so the serving side
    needs no Keras.  Seeds and op determinism are set so that the same seed
    gives the same model; accuracy is measured on the saved artifact, not the
    in-memory model, so the report describes what will actually be served.

    Returns a report with the held-out ``accuracy``, ``train_seconds`` (the
    ``fit`` call), ``build_seconds`` (data, augmentation, training and saving),
    ``train_samples``, ``test_samples``, ``epochs`` and ``seed``.
    """
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    data = digit_images(seed)
    x_train, y_train = training_set(data, copies=copies, seed=seed)
    # Keras shuffles every epoch anyway, but the first batches would otherwise
    # all be unaugmented originals; a seeded permutation keeps it reproducible.
    order = np.random.default_rng(seed).permutation(len(x_train))
    x_train, y_train = to_model_input(x_train[order]), y_train[order]

    model = keras.Sequential(
        [
            keras.Input(shape=(IMAGE_SIZE * IMAGE_SIZE,), dtype="float32", name=INPUT_NAME),
            keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="digits_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    fit_started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    train_seconds = time.perf_counter() - fit_started

    class _Serving(tf.Module):
        """Holds the Keras model so its variables are saved with the signature."""

        def __init__(self, net: keras.Model) -> None:
            super().__init__()
            self.net = net

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, IMAGE_SIZE * IMAGE_SIZE], tf.float32, name=INPUT_NAME)
            ]
        )
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUTPUT_NAME: self.net(images, training=False)}

    serving = _Serving(model)
    out_dir = Path(out_dir)
    tf.saved_model.save(serving, str(out_dir), signatures={"serving_default": serving.serve})
    build_seconds = time.perf_counter() - started

    loaded = tf.saved_model.load(str(out_dir)).signatures["serving_default"]
    scores = loaded(**{INPUT_NAME: tf.constant(to_model_input(data.x_test))})[OUTPUT_NAME]
    predicted = np.argmax(scores.numpy(), axis=1)
    accuracy = float(np.mean(predicted == data.y_test))

    return {
        "accuracy": accuracy,
        "train_seconds": round(train_seconds, 2),
        "build_seconds": round(build_seconds, 2),
        "train_samples": int(len(x_train)),
        "test_samples": int(len(data.x_test)),
        "epochs": epochs,
        "seed": seed,
    }
