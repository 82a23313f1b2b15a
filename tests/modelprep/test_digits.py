"""Fast checks of the demo digits data: no TensorFlow, no training."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelprep.digits import (
    DigitData,
    augment_digits,
    digit_images,
    to_model_input,
    training_set,
)

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 1797  # load_digits ships exactly this many samples
TEST_SIZE = 360  # ceil(0.2 * 1797), what train_test_split holds out
MARGIN = 4  # (28 - 20) / 2: the black frame around the 20x20 digit box


@pytest.fixture(scope="module")
def data() -> DigitData:
    return digit_images(0)


@pytest.fixture(scope="module")
def augmented(data: DigitData) -> tuple[np.ndarray, np.ndarray]:
    return augment_digits(data.x_train, data.y_train, copies=2, seed=0)


def _rows(images: np.ndarray) -> list[bytes]:
    return [image.tobytes() for image in images]


def test_shapes_and_dtypes(data: DigitData) -> None:
    assert data.x_train.shape == (TOTAL - TEST_SIZE, 28, 28)
    assert data.x_test.shape == (TEST_SIZE, 28, 28)
    assert data.y_train.shape == (TOTAL - TEST_SIZE,)
    assert data.y_test.shape == (TEST_SIZE,)
    assert data.x_train.dtype == np.uint8 and data.x_test.dtype == np.uint8
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    labels = np.concatenate([data.y_train, data.y_test])
    assert labels.min() == 0 and labels.max() == 9


def test_pixels_use_the_full_range(data: DigitData) -> None:
    images = np.concatenate([data.x_train, data.x_test])
    assert images.min() == 0
    assert images.max() == 255  # a 16 in load_digits is full ink


def test_white_ink_on_black(data: DigitData) -> None:
    images = np.concatenate([data.x_train, data.x_test])
    inner = slice(MARGIN, 28 - MARGIN)
    frame = images.copy()
    frame[:, inner, inner] = 0
    assert not frame.any(), "the 4-pixel frame around the digit box must be black"
    per_image_max = images.reshape(len(images), -1).max(axis=1)
    assert per_image_max.min() >= 200, "every digit has some bright ink"
    background = (images == 0).mean(axis=(1, 2))
    assert background.min() > 0.5, "most of each canvas is black background"
    # Ink is in the box: its centre row and column hold bright pixels, the corners never do.
    assert (images[:, 8:20, 8:20].max(axis=(1, 2)) >= 128).all()
    assert not images[:, :MARGIN, :MARGIN].any()


def test_split_is_stratified_80_20(data: DigitData) -> None:
    everything = np.bincount(np.concatenate([data.y_train, data.y_test]), minlength=10)
    held_out = np.bincount(data.y_test, minlength=10)
    assert held_out.sum() == TEST_SIZE
    assert (np.abs(held_out - 0.2 * everything) <= 1).all(), (held_out, everything)
    assert (held_out >= 34).all()


def test_split_is_a_disjoint_partition(data: DigitData) -> None:
    train, test = _rows(data.x_train), _rows(data.x_test)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert set(train).isdisjoint(test)
    assert len(train) + len(test) == TOTAL


def test_arrays_are_read_only(data: DigitData) -> None:
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        with pytest.raises(ValueError):
            array[0] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.x_test = data.x_train  # type: ignore[misc]


def test_same_seed_same_data(data: DigitData) -> None:
    again = digit_images(0)
    for field in dataclasses.fields(DigitData):
        assert np.array_equal(getattr(data, field.name), getattr(again, field.name)), field.name


def test_other_seed_other_split(data: DigitData) -> None:
    other = digit_images(1)
    assert other.x_test.shape == data.x_test.shape
    assert not np.array_equal(other.x_test, data.x_test)
    assert set(_rows(other.x_train)) | set(_rows(other.x_test)) == set(_rows(data.x_train)) | set(
        _rows(data.x_test)
    )


def test_augmentation_shapes_and_labels(data: DigitData, augmented) -> None:
    x, y = augmented
    n = len(data.x_train)
    assert x.shape == (2 * n, 28, 28) and x.dtype == np.uint8
    assert y.dtype == np.int64
    assert np.array_equal(y, np.concatenate([data.y_train, data.y_train]))
    assert (x.reshape(len(x), -1).max(axis=1) >= 100).all(), "no copy lost its digit"


def test_augmentation_changes_every_image(data: DigitData, augmented) -> None:
    x, _ = augmented
    n = len(data.x_train)
    for k in range(2):
        copy = x[k * n : (k + 1) * n]
        same = (copy == data.x_train).all(axis=(1, 2))
        assert not same.any()
    assert not np.array_equal(x[:n], x[n:]), "the two copies are distorted differently"


def test_augmentation_is_deterministic(data: DigitData, augmented) -> None:
    x, y = augmented
    x2, y2 = augment_digits(data.x_train, data.y_train, copies=2, seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = augment_digits(data.x_train, data.y_train, copies=2, seed=1)
    assert not np.array_equal(x, x3)


def test_augmentation_leaves_inputs_alone() -> None:
    images = digit_images(0).x_train[:20].copy()
    labels = np.arange(20, dtype=np.int64) % 10
    before = images.copy()
    augment_digits(images, labels, copies=3, seed=0)
    assert np.array_equal(images, before)


def test_augmentation_rejects_bad_input(data: DigitData) -> None:
    with pytest.raises(ValueError):
        augment_digits(data.x_train[:, :20, :20], data.y_train)
    with pytest.raises(ValueError):
        augment_digits(data.x_train, data.y_train[:-1])
    with pytest.raises(ValueError):
        augment_digits(data.x_train, data.y_train, copies=-1)


def test_training_set_never_sees_the_test_split(data: DigitData) -> None:
    x, y = training_set(data, copies=1, seed=0)
    n = len(data.x_train)
    assert x.shape == (2 * n, 28, 28)
    assert np.array_equal(x[:n], data.x_train) and np.array_equal(y[:n], data.y_train)
    assert set(_rows(x)).isdisjoint(_rows(data.x_test))
    # Replacing the test split by something else entirely must change nothing.
    poisoned = dataclasses.replace(
        data,
        x_test=np.full_like(data.x_test, 255),
        y_test=np.zeros_like(data.y_test),
    )
    x2, y2 = training_set(poisoned, copies=1, seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    # And the held-out arrays themselves are untouched.
    assert np.array_equal(data.x_test, digit_images(0).x_test)


def test_model_input_is_flat_unit_float(data: DigitData) -> None:
    flat = to_model_input(data.x_test[:5])
    assert flat.shape == (5, 784) and flat.dtype == np.float32
    assert flat.min() == 0.0 and flat.max() == 1.0
    assert np.array_equal(flat[0].reshape(28, 28), data.x_test[0] / np.float32(255))


def test_data_helpers_do_not_import_tensorflow() -> None:
    code = (
        "import sys; import modelprep.digits as d; d.digit_images(0); "
        "d.augment_digits(d.digit_images(0).x_train[:4], d.digit_images(0).y_train[:4]); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False False"
