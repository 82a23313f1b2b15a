"""The instance-segmentation demo: Mask R-CNN's serving contract on generated shapes.

Mask R-CNN is where a function's payloads explode, so the project needs a model with
its exact wire contract that builds offline in seconds and whose answers can be checked
against ground truth. This module makes both halves:

* **Scenes** (numpy only): circles, squares and triangles of several sizes and colours
  on a noisy background, each with its drawn mask, so tests and the bench can score
  returned masks against the truth (`random_scene`, `grid_scene`).
* **The model** (TensorFlow, deterministic graph, no training): the matterport Mask
  R-CNN signature at a documented smaller size, 512x512 instead of 1024x1024:

  ======================  ===========================  ================================
  input_image             float32 [B, 512, 512, 3]      0..255 pixels, image padded to a
                                                        square ("molded"), padding black
  input_image_meta        float32 [B, 16]               matterport's compose_image_meta:
                                                        id, original shape (3), molded
                                                        shape (3), window y1 x1 y2 x2,
                                                        scale, active class ids (4)
  input_anchors           float32 [B, 65472, 4]         matterport's pyramid anchors for
                                                        512x512, normalised
  detections              float32 [B, 100, 6]           y1, x1, y2, x2 normalised as
                                                        matterport's norm_boxes, class
                                                        id, score; zero rows pad
  masks                   float32 [B, 100, 28, 28, 4]   per-detection mask probabilities
                                                        for every class
  ======================  ===========================  ================================

  It does real work on the pixels: blur, take the background colour from a thin ring
  just inside the window (its per-channel median), mark pixels far from it, label connected
  components by iterated max-pooling, turn each component into a soft probability
  (a sigmoid of its colour distance against half its own contrast, so the 0.5 level
  sits on the edge), classify it by how much of its box it fills (square 1, circle
  pi/4, triangle 1/2) and sample its 28x28 mask over the box the way ROIAlign does.
  Only the detected class's channel of ``masks`` holds the mask; the others are zero,
  so picking the wrong channel shows. The detector is not anchor based: it checks the
  anchors' count, so a caller that builds them wrong fails loudly, and ignores them.
  Mask R-CNN feeds ``pixel - MEAN_PIXEL``; the demo takes the pixels themselves, so
  the quantized input below is exact. Every op is one LiteRT has built in (ROIAlign's
  ``crop_and_resize`` is written as gathers, bit for bit), so ``modelprep litert``
  converts the served model for a function without TensorFlow.

``build/models/segmentation/original`` is that float model; ``served`` is the model the
function serves, prepared as `modelprep wrap` lays models out: ``input_image`` is int8
with zero point -128 (``pixel = q + 128``, exact, instead of the wrapping
``(image - MEAN_PIXEL).astype(int8)``), ``masks`` is uint8 with scale 1/255 (clipped,
never wrapped), and its `modelmeta` file says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelmeta import (
    ImageSpec,
    InputSpec,
    ModelMetadata,
    Normalization,
    OutputSpec,
    Quantization,
)
from modelprep.buildcache import cached_build

RECIPE_VERSION = 4
"""Bump when the graph, its constants or the served layers change."""

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "build" / "models" / "segmentation"

IMAGE_SIZE = 512
"""Side of the molded (square, padded) image the model takes."""
MASK_SIZE = 28
MAX_INSTANCES = 100
"""matterport's DETECTION_MAX_INSTANCES: rows of ``detections``, zero-padded."""
CLASS_NAMES = ("BG", "circle", "square", "triangle")
"""Labels in class-id order; 0 is the background, as in Mask R-CNN."""
SHAPE_KINDS = CLASS_NAMES[1:]
NUM_CLASSES = len(CLASS_NAMES)
META_SIZE = 12 + NUM_CLASSES
"""Length of matterport's image meta: 1 + 3 + 3 + 4 + 1 + NUM_CLASSES."""
WINDOW = slice(7, 11)
"""Where the window (y1, x1, y2, x2 in molded pixels) sits in the image meta."""

ANCHOR_SCALES = (32, 64, 128, 256, 512)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
BACKBONE_STRIDES = (4, 8, 16, 32, 64)
"""matterport's defaults, which decide how many anchors the model expects."""

INPUT_QUANTIZATION = Quantization("int8", 1.0, -128)
"""``pixel = 1.0 * (q - (-128))``: every 0..255 pixel exactly, in int8."""
MASK_QUANTIZATION = Quantization("uint8", 1 / 255, 0)
"""Probabilities 0..1 in 255 steps; the error bound is half a step."""

# The graph's constants.
FOREGROUND_DISTANCE = 30.0
"""Colour distance (RGB, after the blur) above which a pixel belongs to some shape."""
CORE_FRACTION = 0.8
"""A component's contrast is the mean distance of its pixels above this share of its max."""
EDGE_GAIN = 8.0
"""Steepness of the probability across an edge: p = sigmoid(GAIN * (d / contrast - 1/2))."""
MIN_AREA = 24
"""Components smaller than this (molded pixels) are specks, not detections."""
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
"""The share of its box each shape fills; the nearest decides the class."""
SCORE_SPAN = 0.3
"""A fill this far from the class's own gives the lowest score."""
MIN_SCORE = 0.05
SAMPLES = 4
"""Bilinear samples per mask cell along each axis, averaged (ROIAlign's sampling ratio)."""
BLUR = (1.0, 4.0, 6.0, 4.0, 1.0)
BLUR_RADIUS = len(BLUR) // 2
BORDER = 4
"""Width in pixels of the ring inside the window whose median colour is the background."""


def anchor_count(height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> int:
    """How many anchors matterport generates for a molded image of this size."""
    cells = sum(math.ceil(height / s) * math.ceil(width / s) for s in BACKBONE_STRIDES)
    return cells * len(ANCHOR_RATIOS)


# --- scenes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its kind, its box in image pixels and its mask inside the box."""

    kind: str
    box: tuple[int, int, int, int]
    """y1, x1, y2, x2 with y2 and x2 exclusive, in image pixels."""
    mask: np.ndarray
    """bool ``[y2 - y1, x2 - x1]``: the pixels whose centres lie inside the shape."""
    colour: tuple[int, int, int]

    @property
    def class_id(self) -> int:
        return CLASS_NAMES.index(self.kind)


@dataclass(frozen=True)
class Scene:
    """A generated image and the shapes drawn on it, for scoring a model's masks."""

    image: np.ndarray
    """uint8 ``[height, width, 3]``."""
    shapes: tuple[Shape, ...]
    background: tuple[int, int, int]

    def full_mask(self, index: int) -> np.ndarray:
        """Shape ``index``'s mask pasted into an image-sized bool array."""
        shape = self.shapes[index]
        y1, x1, y2, x2 = shape.box
        full = np.zeros(self.image.shape[:2], bool)
        full[y1:y2, x1:x2] = shape.mask
        return full


def shape_mask(kind: str, size: int, *, flip: bool = False) -> np.ndarray:
    """The ``size`` x ``size`` mask of a shape filling its box; pixel centres decide.

    Circles touch all four sides; squares fill the box; triangles stand on the bottom
    side with their apex at the top centre (at the bottom when ``flip``).
    """
    centre = (np.arange(size) + 0.5)
    if kind == "square":
        return np.ones((size, size), bool)
    if kind == "circle":
        r = size / 2
        return (centre[:, None] - r) ** 2 + (centre[None, :] - r) ** 2 <= r * r
    if kind == "triangle":
        mask = np.abs(centre[None, :] - size / 2) <= centre[:, None] / 2
        return mask[::-1] if flip else mask
    raise ValueError(f"unknown shape kind {kind!r}; use one of {SHAPE_KINDS}")


def random_scene(seed: int, height: int = 480, width: int = 640, *,
                 count: tuple[int, int] = (3, 7), sizes: tuple[int, int] = (48, 160),
                 gap: int = 24, noise: float = 10.0, min_contrast: float = 110.0,
                 kinds: tuple[str, ...] = SHAPE_KINDS) -> Scene:
    """Non-overlapping shapes at random places, at least ``gap`` pixels apart.

    A pure function of its arguments. Fewer than asked are drawn when the image has no
    room left (at most 200 placement tries per shape).
    """
    rng = np.random.default_rng(seed)
    wanted = int(rng.integers(count[0], count[1] + 1))
    boxes: list[tuple[int, int, int, int]] = []
    margin = max(8, gap // 2)
    largest = min(sizes[1], height - 2 * margin, width - 2 * margin)
    if largest < 1:
        raise ValueError(f"a {height}x{width} image has no room for shapes with a "
                         f"{margin}-pixel margin")
    for _ in range(wanted):
        size = int(rng.integers(min(sizes[0], largest), largest + 1))
        for _try in range(200):
            y = int(rng.integers(margin, height - margin - size + 1))
            x = int(rng.integers(margin, width - margin - size + 1))
            box = (y, x, y + size, x + size)
            if all(_apart(box, other, gap) for other in boxes):
                boxes.append(box)
                break
    return _paint(rng, height, width, boxes, noise, min_contrast, kinds)


def grid_scene(seed: int, height: int = 1024, width: int = 1024, *, rows: int = 10,
               cols: int = 10, sizes: tuple[int, int] = (44, 72), noise: float = 10.0,
               min_contrast: float = 110.0) -> Scene:
    """``rows * cols`` shapes, one per grid cell at a random place inside it."""
    rng = np.random.default_rng(seed)
    cell_h, cell_w = height // rows, width // cols
    boxes = []
    for r in range(rows):
        for c in range(cols):
            size = int(rng.integers(sizes[0], min(sizes[1], cell_h - 16, cell_w - 16) + 1))
            y = r * cell_h + int(rng.integers(8, cell_h - size - 8 + 1))
            x = c * cell_w + int(rng.integers(8, cell_w - size - 8 + 1))
            boxes.append((y, x, y + size, x + size))
    return _paint(rng, height, width, boxes, noise, min_contrast, SHAPE_KINDS)


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1]
            or b[3] + gap <= a[1])


def _paint(rng: np.random.Generator, height: int, width: int, boxes, noise: float,
           min_contrast: float, kinds: tuple[str, ...]) -> Scene:
    background = rng.integers(0, 256, 3)
    canvas = np.empty((height, width, 3), np.float64)
    canvas[:] = background
    shapes = []
    for y1, x1, y2, x2 in boxes:
        kind = str(rng.choice(kinds))
        mask = shape_mask(kind, y2 - y1, flip=bool(rng.integers(2)))
        colour = _contrasting(rng, background, min_contrast)
        canvas[y1:y2, x1:x2][mask] = colour
        red, green, blue = (int(v) for v in colour)
        shapes.append(Shape(kind, (y1, x1, y2, x2), mask, (red, green, blue)))
    canvas += rng.normal(0.0, noise, canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    red, green, blue = (int(v) for v in background)
    return Scene(image, tuple(shapes), (red, green, blue))


def _contrasting(rng: np.random.Generator, background: np.ndarray,
                 min_contrast: float) -> np.ndarray:
    for _ in range(1000):
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - background) >= min_contrast:
            return colour
    # A background near mid-gray still has far corners of the colour cube.
    return np.where(background < 128, 255, 0)


# --- the model ----------------------------------------------------------------------------


def segment_batch(images, metas, anchors):
    """The demo's graph on a batch: raw pixels and image meta to detections and masks."""
    import tensorflow as tf

    check = tf.debugging.assert_equal(
        tf.shape(anchors)[1], anchor_count(), message=(
            f"input_anchors must hold matterport's {anchor_count()} pyramid anchors for a "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} image"))
    with tf.control_dependencies([check]):
        images = tf.identity(images)
    return tf.map_fn(lambda args: _segment_one(*args), (images, metas), fn_output_signature=(
        tf.TensorSpec([MAX_INSTANCES, 6], tf.float32),
        tf.TensorSpec([MAX_INSTANCES, MASK_SIZE, MASK_SIZE, NUM_CLASSES], tf.float32)))


def _segment_one(image, meta):
    import tensorflow as tf

    size = IMAGE_SIZE
    blurred = _blur(image)
    window = tf.cast(tf.round(meta[WINDOW]), tf.int32)
    index = tf.range(size)
    # The blur reads BLUR_RADIUS pixels of padding at the window's edge: not the image.
    rows = (index >= window[0] + BLUR_RADIUS) & (index < window[2] - BLUR_RADIUS)
    cols = (index >= window[1] + BLUR_RADIUS) & (index < window[3] - BLUR_RADIUS)
    valid = rows[:, None] & cols[None, :]

    inner = BLUR_RADIUS + BORDER
    core_rows = (index >= window[0] + inner) & (index < window[2] - inner)
    core_cols = (index >= window[1] + inner) & (index < window[3] - inner)
    ring = valid & ~(core_rows[:, None] & core_cols[None, :])
    border = tf.concat([tf.boolean_mask(blurred, ring), tf.zeros([1, 3])], axis=0)
    background = tf.sort(border, axis=0)[tf.shape(border)[0] // 2]  # per-channel median
    distance = tf.norm(blurred - background, axis=-1)
    foreground = (distance > FOREGROUND_DISTANCE) & valid

    labels = _labels(foreground)
    flat_labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    ids, segment = tf.unique(flat_labels)
    count = tf.size(ids)
    d = tf.reshape(distance, [-1])
    fg = tf.reshape(foreground, [-1])

    peak = tf.math.unsorted_segment_max(tf.where(fg, d, 0.0), segment, count)
    core = tf.cast(fg & (d >= CORE_FRACTION * tf.gather(peak, segment)), tf.float32)
    contrast = (tf.math.unsorted_segment_sum(d * core, segment, count)
                / tf.maximum(tf.math.unsorted_segment_sum(core, segment, count), 1.0))
    inside = (flat_labels > 0) & tf.reshape(valid, [-1])
    ratio = d / tf.maximum(tf.gather(contrast, segment), 1.0)
    prob = tf.where(inside, tf.sigmoid(EDGE_GAIN * (ratio - 0.5)), 0.0)
    member = prob > 0.5

    pixel = tf.range(size * size)
    ys, xs = pixel // size, pixel % size
    big = size * 2
    y1 = tf.math.unsorted_segment_min(tf.where(member, ys, big), segment, count)
    x1 = tf.math.unsorted_segment_min(tf.where(member, xs, big), segment, count)
    y2 = tf.math.unsorted_segment_max(tf.where(member, ys, -1), segment, count) + 1
    x2 = tf.math.unsorted_segment_max(tf.where(member, xs, -1), segment, count) + 1
    area = tf.math.unsorted_segment_sum(tf.cast(member, tf.float32), segment, count)

    keep = tf.where((ids > 0) & (area >= MIN_AREA))[:, 0]
    boxes = tf.cast(tf.stack([tf.gather(v, keep) for v in (y1, x1, y2, x2)], axis=1),
                    tf.float32)
    area = tf.gather(area, keep)
    label_ids = tf.cast(tf.gather(ids, keep), tf.float32)
    fill = area / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    protos = tf.constant([FILL[k] for k in SHAPE_KINDS], tf.float32)
    gaps = tf.abs(fill[:, None] - protos[None, :])
    classes = tf.argmin(gaps, axis=1, output_type=tf.int32) + 1
    scores = tf.clip_by_value(1.0 - tf.reduce_min(gaps, axis=1) / SCORE_SPAN, MIN_SCORE, 1.0)

    order = tf.argsort(scores, direction="DESCENDING", stable=True)[:MAX_INSTANCES]
    boxes, classes, scores, label_ids = (tf.gather(v, order)
                                         for v in (boxes, classes, scores, label_ids))
    found = tf.shape(order)[0]

    masks = _roi_masks(tf.reshape(prob, [size, size]), labels, boxes, label_ids)
    masks = masks[..., None] * tf.one_hot(classes, NUM_CLASSES)[:, None, None, :]
    scale = float(size - 1)
    normalised = (boxes - tf.constant([0.0, 0.0, 1.0, 1.0])) / scale  # matterport norm_boxes
    detections = tf.concat([normalised, tf.cast(classes, tf.float32)[:, None],
                            scores[:, None]], axis=1)
    pad = MAX_INSTANCES - found
    detections = tf.pad(detections, [[0, pad], [0, 0]])
    masks = tf.pad(masks, [[0, pad], [0, 0], [0, 0], [0, 0]])
    # reshape, not ensure_shape: the same static shape, and an op LiteRT has
    return (tf.reshape(detections, [MAX_INSTANCES, 6]),
            tf.reshape(masks, [MAX_INSTANCES, MASK_SIZE, MASK_SIZE, NUM_CLASSES]))


def _blur(image):
    """A separable binomial blur per channel: noise down by about 3.7x, edges kept centred."""
    import tensorflow as tf

    k = tf.constant(BLUR, tf.float32) / sum(BLUR)
    x = image[None]
    x = tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1]),
                               [1, 1, 1, 1], "SAME")
    x = tf.nn.depthwise_conv2d(x, tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1]),
                               [1, 1, 1, 1], "SAME")
    return x[0]


def _labels(foreground):
    """Connected components (8-neighbour) at half resolution, grown by one cell, at full size.

    Every foreground cell starts with its own number and takes its neighbours' largest
    until nothing changes, so each component ends up with the number of its last cell.
    Half resolution quarters the cells and halves the steps; the labels are grown by a
    cell into the background so that they cover every full-resolution edge pixel.
    """
    import tensorflow as tf

    half = IMAGE_SIZE // 2
    cells = tf.nn.avg_pool2d(tf.cast(foreground, tf.float32)[None, :, :, None], 2, 2, "VALID")
    cells = tf.cast(cells[0, :, :, 0] >= 0.5, tf.float32)
    start = tf.reshape(tf.range(1, half * half + 1, dtype=tf.float32), [half, half])

    def step(i, labels, _changed):
        new = labels
        for _ in range(4):
            new = _max3x3(new) * cells
        return i + 1, new, tf.reduce_any(tf.not_equal(new, labels))

    _, labels, _ = tf.while_loop(lambda i, _labels, changed: changed & (i < half * half // 4),
                                 step, (tf.constant(0), start * cells, tf.constant(True)))
    grown = tf.where(labels > 0, labels, _max3x3(labels))
    return tf.repeat(tf.repeat(grown, 2, axis=0), 2, axis=1)


def _max3x3(x):
    """The largest value in each pixel's 3x3 neighbourhood (zero outside) of a 2-D tensor
    of non-negative values; shifted maxima, many times faster than a 1-channel max_pool."""
    import tensorflow as tf

    p = tf.pad(x, [[1, 1], [0, 0]])
    x = tf.maximum(tf.maximum(p[:-2], p[1:-1]), p[2:])
    p = tf.pad(x, [[0, 0], [1, 1]])
    return tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def _roi_masks(prob, labels, boxes, label_ids):
    """Each component's probabilities on a 28x28 grid over its box, as ROIAlign samples.

    Every cell averages SAMPLES x SAMPLES bilinear samples at the centres of its
    sub-cells, so a cell half covered reads about 0.5, and only the component's own
    pixels count (a neighbour reaching into the box does not).
    """
    import tensorflow as tf

    n = MASK_SIZE * SAMPLES
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    scale = float(IMAGE_SIZE - 1)
    crop = tf.stack([boxes[:, 0] + 0.5 * h / n - 0.5, boxes[:, 1] + 0.5 * w / n - 0.5,
                     boxes[:, 2] - 0.5 * h / n - 0.5, boxes[:, 3] - 0.5 * w / n - 0.5],
                    axis=1) / scale
    p = _crop_and_resize(prob, crop, n, "bilinear")
    owner = _crop_and_resize(labels, crop, n, "nearest")
    own = p * tf.cast(tf.equal(owner, label_ids[:, None, None]), tf.float32)
    return tf.nn.avg_pool2d(own[..., None], SAMPLES, SAMPLES, "VALID")[..., 0]


def _crop_and_resize(image, boxes, n, method):
    """``tf.image.crop_and_resize`` of one 2-D image to ``[N, n, n]``, bit for bit, in
    gathers and arithmetic: LiteRT has no CropAndResize among its built-in ops, and this
    keeps the model convertible without TensorFlow kernels (`modelprep.litert`).

    Sample ``i`` of a box sits at ``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (n - 1)``
    (boxes normalised); ``bilinear`` mixes the four pixels around it, ``nearest`` takes
    the closest (halves rounded up, as TensorFlow's kernel does); samples outside the
    image read 0.
    """
    import tensorflow as tf

    height, width = tf.shape(image)[0], tf.shape(image)[1]
    last_y, last_x = tf.cast(height - 1, tf.float32), tf.cast(width - 1, tf.float32)
    steps = tf.range(n, dtype=tf.float32)[None, :]
    in_y = boxes[:, 0:1] * last_y + steps * ((boxes[:, 2:3] - boxes[:, 0:1]) * last_y / (n - 1))
    in_x = boxes[:, 1:2] * last_x + steps * ((boxes[:, 3:4] - boxes[:, 1:2]) * last_x / (n - 1))
    inside = (((in_y >= 0) & (in_y <= last_y))[:, :, None]
              & ((in_x >= 0) & (in_x <= last_x))[:, None, :])
    flat = tf.reshape(image, [-1])

    def at(ys, xs):
        ys, xs = tf.clip_by_value(ys, 0, height - 1), tf.clip_by_value(xs, 0, width - 1)
        return tf.gather(flat, ys[:, :, None] * width + xs[:, None, :])

    if method == "nearest":
        values = at(tf.cast(tf.floor(in_y + 0.5), tf.int32),
                    tf.cast(tf.floor(in_x + 0.5), tf.int32))
    else:
        top, left = tf.floor(in_y), tf.floor(in_x)
        y0, y1 = tf.cast(top, tf.int32), tf.cast(tf.math.ceil(in_y), tf.int32)
        x0, x1 = tf.cast(left, tf.int32), tf.cast(tf.math.ceil(in_x), tf.int32)
        y_lerp, x_lerp = (in_y - top)[:, :, None], (in_x - left)[:, None, :]
        top_left, top_right = at(y0, x0), at(y0, x1)
        bottom_left, bottom_right = at(y1, x0), at(y1, x1)
        upper = top_left + (top_right - top_left) * x_lerp
        lower = bottom_left + (bottom_right - bottom_left) * x_lerp
        values = upper + (lower - upper) * y_lerp
    return tf.where(inside, values, 0.0)


def _float_specs(image_dtype):
    import tensorflow as tf

    return [tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], image_dtype, name="input_image"),
            tf.TensorSpec([None, META_SIZE], tf.float32, name="input_image_meta"),
            tf.TensorSpec([None, None, 4], tf.float32, name="input_anchors")]


def save_float_model(out: Path) -> None:
    """The float model: Mask R-CNN's three inputs, float detections and masks."""
    import tensorflow as tf

    class ShapesMaskRCNN(tf.Module):
        @tf.function(input_signature=_float_specs(tf.float32))
        def serve(self, input_image, input_image_meta, input_anchors):
            detections, masks = segment_batch(input_image, input_image_meta, input_anchors)
            return {"detections": detections, "masks": masks}

    module = ShapesMaskRCNN()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})


def save_served_model(original: Path, out: Path) -> ModelMetadata:
    """Wrap the float model with quantized input pixels and quantized masks, plus metadata."""
    import tensorflow as tf

    from modelprep.input_ops import dequantize
    from modelprep.output_ops import quantize

    class Served(tf.Module):
        def __init__(self, source) -> None:
            super().__init__()
            self.original = source
            self._fn = source.signatures["serving_default"]

        @tf.function(input_signature=_float_specs(tf.int8))
        def serve(self, input_image, input_image_meta, input_anchors):
            out = self._fn(input_image=dequantize(input_image, INPUT_QUANTIZATION),
                           input_image_meta=input_image_meta, input_anchors=input_anchors)
            return {"detections": out["detections"],
                    "masks": quantize(out["masks"], MASK_QUANTIZATION)}

    module = Served(tf.saved_model.load(str(original)))
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    metadata = served_metadata(original)
    metadata.save(out)
    return metadata


def served_metadata(original: Path | str = "") -> ModelMetadata:
    size = IMAGE_SIZE
    return ModelMetadata(
        name="shapes-maskrcnn",
        inputs=(
            InputSpec("input_image", "quantized_pixels", "int8", (-1, size, size, 3),
                      image=ImageSpec(size, size, 3, Normalization("raw"), resize="pad"),
                      quantization=INPUT_QUANTIZATION),
            InputSpec("input_image_meta", "tensor", "float32", (-1, META_SIZE)),
            InputSpec("input_anchors", "tensor", "float32", (-1, anchor_count(), 4)),
        ),
        outputs=(
            OutputSpec("detections", "detections", "float32", (-1, MAX_INSTANCES, 6)),
            OutputSpec("masks", "masks", "uint8",
                       (-1, MAX_INSTANCES, MASK_SIZE, MASK_SIZE, NUM_CLASSES),
                       quantization=MASK_QUANTIZATION),
        ),
        labels=CLASS_NAMES,
        source={"path": str(original), "format": "saved_model", "signature": "serving_default",
                "built_by": "modelprep.segmentation"},
    )


# --- build and cache ----------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationDemo:
    original: Path
    served: Path
    seconds: float
    cached: bool


def build_segmentation_demo(base: Path | None = None, *, force: bool = False,
                            progress: Callable[[str], None] = lambda _msg: None
                            ) -> SegmentationDemo:
    """Build (or reuse) ``original`` and ``served`` under ``base``; safe to call concurrently."""
    base = Path(base or DEFAULT_DIR)

    def build(original: Path, served: Path) -> dict:
        progress("building the float shapes model (deterministic graph, no training)")
        save_float_model(original)
        progress("adding int8 input pixels and uint8 masks")
        save_served_model(original, served)
        return {}

    stamp, cached = cached_build(base, RECIPE_VERSION, build, force=force)
    return SegmentationDemo(base / "original", base / "served", stamp["seconds"], cached)
