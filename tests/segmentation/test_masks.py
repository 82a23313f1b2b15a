"""functions.masks without TensorFlow: dequantization, unmolding and the four encodings,
each checked against a plain reference written the obvious way (loops, scipy, COCO's
algorithm, matterport's formulas)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from scipy import ndimage

from bench.maskdecode import decode_mask, rasterize
from functions.answers import masks as M
from functions.answers.masks import unmolding as unmold_module
from functions.answers.masks.encode import float_steps, png_1bit
from functions.errors import BadGateway, PayloadTooLarge
from functions.quantization import dequantize_reply, quantize
from modelmeta import Quantization

U8 = Quantization("uint8", 1 / 255, 0)
JSON = {"separators": (",", ":"), "ensure_ascii": False}


# --- references ---------------------------------------------------------------------------


def coco_rle(full: np.ndarray) -> list[int]:
    """pycocotools' rleEncode, as written there: runs over the column-major pixels."""
    counts, previous, run = [], 0, 0
    for value in full.flatten(order="F").tolist():
        if value != previous:
            counts.append(run)
            run, previous = 0, value
        run += 1
    counts.append(run)
    return counts


def matterport_boxes(normalised, original, molded, window):
    """matterport's unmold_detections box arithmetic (utils.norm_boxes / denorm_boxes)."""
    def norm(boxes, shape):
        h, w = shape
        return (np.asarray(boxes, np.float64) - [0, 0, 1, 1]) / [h - 1, w - 1, h - 1, w - 1]

    wy1, wx1, wy2, wx2 = norm(window, molded)
    wh, ww = wy2 - wy1, wx2 - wx1
    boxes = (normalised - [wy1, wx1, wy1, wx1]) / [wh, ww, wh, ww]
    h, w = original
    return np.around(boxes * [h - 1, w - 1, h - 1, w - 1] + [0, 0, 1, 1]).astype(np.int64)


def reference_resize(mask28: np.ndarray, height: int, width: int) -> np.ndarray:
    """One mask at a time with scipy: bilinear at pixel centres, edges clamped."""
    ys = np.clip((np.arange(height) + 0.5) * mask28.shape[0] / height - 0.5, 0, None)
    xs = np.clip((np.arange(width) + 0.5) * mask28.shape[1] / width - 0.5, 0, None)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return ndimage.map_coordinates(mask28.astype(np.float64), [yy, xx], order=1,
                                   mode="nearest")


def band(mask: np.ndarray) -> np.ndarray:
    """Pixels with an 8-neighbour of the other value (outside the image counts as outside)."""
    padded = np.pad(mask, 1)
    any_in = np.zeros_like(mask)
    any_out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            view = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            any_in |= view
            any_out |= ~view
    return (mask & any_out) | (~mask & any_in)


def detections_for(boxes_px, classes, height, width, scores=None):
    """Detections whose boxes come back exactly, for an image served at its own size."""
    boxes = np.asarray(boxes_px, np.float64)
    norm = (boxes - [0, 0, 1, 1]) / [height - 1, width - 1, height - 1, width - 1]
    scores = np.linspace(0.99, 0.6, len(boxes)) if scores is None else scores
    return np.column_stack([norm, classes, scores])


def identity_geometry(height, width):
    return M.Geometry(height, width, height, width, (0.0, 0.0, float(height), float(width)))


def random_instances(rng, height=61, width=47, count=6, classes=4):
    boxes = []
    for _ in range(count):
        y1, x1 = rng.integers(0, height - 1), rng.integers(0, width - 1)
        boxes.append([y1, x1, rng.integers(y1 + 1, height + 1), rng.integers(x1 + 1, width + 1)])
    cls = rng.integers(1, classes, count)
    det = detections_for(boxes, cls, height, width)
    masks = rng.random((count, 28, 28, classes)).astype(np.float32)
    return det, masks, M.unmold(det, masks, identity_geometry(height, width))


# --- dequantize ---------------------------------------------------------------------------


def test_every_wire_form_dequantizes_to_the_same_floats():
    rng = np.random.default_rng(0)
    real = rng.random((2, 3, 28, 28, 4)).astype(np.float32)
    q = quantize(real, U8)
    assert q.dtype == np.uint8
    forms = {
        "in-process uint8 array": dequantize_reply(q, U8),
        "REST JSON integers": dequantize_reply(json.loads(json.dumps(q.tolist())), U8),
        "gRPC int_val": dequantize_reply(q.ravel().tolist(), U8, shape=q.shape),
        "gRPC tensor_content": dequantize_reply(q.tobytes(), U8, shape=q.shape),
        "int32 from a proto reader": dequantize_reply(q.astype(np.int32), U8),
    }
    first = forms["in-process uint8 array"]
    assert first.dtype == np.float32 and first.shape == real.shape
    for name, value in forms.items():
        assert np.array_equal(value, first), name
    assert np.abs(first - real).max() <= 0.5 / 255 + 1e-7  # half a step


def test_int8_with_a_zero_point_is_undone_too():
    quant = Quantization.for_range("int8", 0.0, 1.0)
    assert (quant.zero_point, round(quant.scale * 255, 9)) == (-128, 1.0)
    real = np.linspace(0, 1, 1001, dtype=np.float32)
    q = quantize(real, quant)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127
    back = dequantize_reply(q.tobytes(), quant, shape=q.shape)
    assert np.abs(back - real).max() <= quant.scale / 2 + 1e-7


def test_values_above_one_half_survive_where_the_naive_cast_wraps():
    probs = np.array([0.3, 0.5, 0.6, 0.98, 1.0], np.float32)
    naive = (probs * 255).astype(np.int32).astype(np.int8)  # cast(mask * 255, int8)
    assert naive.tolist() == [76, 127, -103, -7, -1]
    ours = dequantize_reply(quantize(probs, U8), U8)
    assert np.round(ours * 255).tolist() == [77, 128, 153, 250, 255]
    assert np.all(np.abs(ours - probs) <= 0.5 / 255 + 1e-7)
    assert np.all((ours >= M.THRESHOLD) == (probs >= M.THRESHOLD))


@pytest.mark.parametrize(("value", "shape", "phrase"), [
    ([[0, 255, 300]], None, "outside uint8's 0..255"),
    ([[-1, 3]], None, "outside uint8's 0..255"),
    ([0.5, 1.0], None, "has fractions"),
    (list(range(10)), (3, 4), "has 10 values, not the 12 of shape [3, 4]"),
    (b"\x00" * 7, (2, 4), "has 7 values, not the 8"),
])
def test_dequantize_refuses_what_the_dtype_cannot_hold(value, shape, phrase):
    with pytest.raises(BadGateway) as info:
        dequantize_reply(value, U8, shape=shape)
    assert phrase in info.value.message
    assert info.value.status == 502


def test_unquantized_masks_pass_as_floats():
    value = [[0.25, 0.75]]
    out = dequantize_reply(value, None)
    assert out.dtype == np.float32 and out.tolist() == [[0.25, 0.75]]


# --- unmold -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_boxes_are_matterports_unmolded_boxes(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(50, 900)), int(rng.integers(50, 900))
    molded = 512
    scale = min(molded / height, molded / width)
    new_h, new_w = round(height * scale), round(width * scale)
    top, left = (molded - new_h) // 2, (molded - new_w) // 2
    window = (top, left, top + new_h, left + new_w)
    geometry = M.Geometry(height, width, molded, molded, tuple(map(float, window)))
    y1 = rng.uniform(top, top + new_h - 2, 20)
    x1 = rng.uniform(left, left + new_w - 2, 20)
    y2 = np.minimum(y1 + rng.uniform(1, 200, 20), top + new_h - 1)
    x2 = np.minimum(x1 + rng.uniform(1, 200, 20), left + new_w - 1)
    normalised = np.column_stack([y1, x1, y2, x2]) / (molded - 1)
    det = np.column_stack([normalised, np.ones(20), np.full(20, 0.9)])
    inst = M.unmold(det, np.zeros((20, 28, 28, 2), np.float32), geometry)
    expected = matterport_boxes(normalised, (height, width), (molded, molded), window)
    expected[:, [0, 2]] = np.clip(expected[:, [0, 2]], 0, height)
    expected[:, [1, 3]] = np.clip(expected[:, [1, 3]], 0, width)
    keep = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
    assert np.array_equal(inst.boxes, expected[keep])


def test_each_detection_gets_its_own_class_mask_and_padding_rows_go():
    height, width = 40, 30
    det = detections_for([[0, 0, 10, 10], [5, 5, 25, 20], [0, 0, 0, 0], [2, 2, 8, 8]],
                         [2, 1, 0, 3], height, width)
    det[2] = 0  # a padding row, as Mask R-CNN pads to DETECTION_MAX_INSTANCES
    masks = np.zeros((4, 28, 28, 4), np.float32)
    for i in range(4):
        masks[i, :, :, :] = 0.1 * np.arange(4)  # class c's channel holds 0.1 * c
    inst = M.unmold(det, masks, identity_geometry(height, width))
    assert inst.class_ids.tolist() == [2, 1, 3]
    assert inst.boxes.tolist() == [[0, 0, 10, 10], [5, 5, 25, 20], [2, 2, 8, 8]]
    for i, cls in enumerate([2, 1, 3]):
        assert np.allclose(inst.probabilities(i), 0.1 * cls)
    assert np.allclose(inst.scores, det[[0, 1, 3], 5])


def test_a_class_beyond_the_masks_is_the_model_servers_fault():
    det = detections_for([[0, 0, 5, 5]], [4], 10, 10)
    with pytest.raises(BadGateway, match="class 4 but masks have 4 classes"):
        M.unmold(det, np.zeros((1, 28, 28, 4), np.float32), identity_geometry(10, 10))


@pytest.mark.parametrize("chunk", [M.CHUNK_ELEMENTS, 1])
def test_vectorised_resize_equals_a_per_instance_reference(monkeypatch, chunk):
    monkeypatch.setattr(unmold_module, "CHUNK_ELEMENTS", chunk)  # 1: every detection its own block
    rng = np.random.default_rng(3)
    det, masks, inst = random_instances(rng, 120, 90, count=12)
    assert len(inst.blocks) == (12 if chunk == 1 else 1)
    for i in range(len(inst)):
        y1, x1, y2, x2 = inst.boxes[i]
        expected = reference_resize(masks[i, :, :, inst.class_ids[i]], y2 - y1, x2 - x1)
        assert np.allclose(inst.probabilities(i), expected, atol=1e-5)


# --- encodings ----------------------------------------------------------------------------


def thresholded(inst: M.Instances, i: int) -> np.ndarray:
    y1, x1, y2, x2 = inst.boxes[i]
    full = np.zeros((inst.height, inst.width), bool)
    full[y1:y2, x1:x2] = inst.probabilities(i) >= M.THRESHOLD
    return full


@pytest.mark.parametrize("seed", range(6))
def test_float_png_and_rle_decode_to_exactly_the_thresholded_mask(seed):
    rng = np.random.default_rng(seed)
    _, _, inst = random_instances(rng)
    for fmt in ("float", "png", "rle"):
        values = M.encode(inst, fmt)
        for i, value in enumerate(values):
            y1, x1, y2, x2 = inst.boxes[i].tolist()
            decoded = decode_mask(value, fmt, [x1, y1, x2, y2], inst.height, inst.width)
            assert np.array_equal(decoded, thresholded(inst, i)), (fmt, i)


def test_rle_is_cocos_including_runs_across_columns_and_the_last_pixel():
    height, width = 6, 5
    det = detections_for([[0, 0, 6, 5], [3, 2, 6, 5], [0, 4, 6, 5]], [1, 1, 1], height, width)
    masks = np.ones((3, 28, 28, 2), np.float32)
    masks[0, 10:20, 10:20, 1] = 0.0  # a hole
    inst = M.unmold(det, masks, identity_geometry(height, width))
    for i, value in enumerate(M.encode(inst, "rle")):
        full = thresholded(inst, i)
        assert value == {"size": [height, width], "counts": coco_rle(full)}
        assert sum(value["counts"]) == height * width
    assert M.encode(inst, "rle")[2]["counts"] == [24, 6]  # ends on a 1: no trailing zero run
    assert M.encode(inst, "rle")[0]["counts"][0] == 0  # starts on a 1: a zero run of 0


@given(arrays(np.float32, (5, 28, 28, 2), elements=st.floats(0, 1, width=32)),
       st.integers(1, 40), st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_rle_matches_coco_on_any_masks(probs, height, width):
    boxes = [[0, 0, height, width], [0, 0, (height + 1) // 2, width],
             [height // 2, width // 3, height, width], [0, 0, 1, 1],
             [height - 1, width - 1, height, width]]
    det = detections_for(boxes, [1] * 5, max(height, 2), max(width, 2))
    inst = M.unmold(det, probs, identity_geometry(max(height, 2), max(width, 2)))
    for i, value in enumerate(M.encode(inst, "rle")):
        assert value["counts"] == coco_rle(thresholded(inst, i))


def test_float_rounding_never_moves_a_value_across_the_threshold():
    probs = np.array([[[0.4996, 0.49951, 0.5, 0.50049, 0.0004, 0.9996, 1.0]]], np.float32)
    steps = float_steps(probs)
    assert steps.tolist() == [[[499, 499, 500, 500, 0, 1000, 1000]]]


@given(arrays(np.float32, (3, 28, 28, 2), elements=st.floats(0, 1, width=32)),
       st.integers(2, 30), st.integers(2, 30))
@settings(max_examples=40, deadline=None)
def test_float_json_bytes_equal_the_json_written(probs, height, width):
    det = detections_for([[0, 0, height, width], [1, 0, height, width // 2 + 1],
                          [height - 1, 0, height, 1]], [1, 1, 1], height, width)
    inst = M.unmold(det, probs, identity_geometry(height, width))
    values = M.encode(inst, "float")
    assert M.float_json_bytes(inst).tolist() == [len(json.dumps(v, **JSON)) for v in values]
    for i, value in enumerate(values):
        assert np.array_equal(np.asarray(value) >= M.THRESHOLD,
                              inst.probabilities(i) >= M.THRESHOLD)


def test_png_is_a_one_bit_palette_png_transparent_outside():
    mask = np.zeros((9, 13), bool)
    mask[2:7, 3:11] = True
    png = png_1bit(mask, (10, 20, 30), alpha=160)
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "P", (13, 9))
        assert image.info["transparency"] == b"\x00\xa0"
        assert image.getpalette()[:6] == [0, 0, 0, 10, 20, 30]
        assert np.array_equal(np.asarray(image) == 1, mask)
        rgba = np.asarray(image.convert("RGBA"))
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]
    assert rgba[3, 4].tolist() == [10, 20, 30, 160]
    value = M.encode(M.unmold(detections_for([[0, 0, 4, 4]], [1], 4, 4),
                              np.ones((1, 28, 28, 2), np.float32), identity_geometry(4, 4)),
                     "png")[0]
    assert base64.b64decode(value, validate=True).startswith(b"\x89PNG")


# --- polygons -----------------------------------------------------------------------------

small_masks = arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 24),
                                         st.integers(1, 24)), elements=st.booleans())


@given(small_masks)
@settings(max_examples=80, deadline=None)
def test_unsimplified_rings_fill_back_to_exactly_the_mask(batch):
    rings = M.trace_rings(batch)
    for i, mask in enumerate(batch):
        mine = [points.ravel().tolist() for j, points in rings if j == i]
        assert np.array_equal(rasterize(mine, *mask.shape), mask)
    assert [j for j, _ in rings] == sorted(j for j, _ in rings)


@given(small_masks)
@settings(max_examples=80, deadline=None)
def test_simplified_rings_differ_only_on_pixels_touching_the_edge(batch):
    for _, points in M.trace_rings(batch):
        assert len(points) >= 4
    for i, mask in enumerate(batch):
        rings = [M.simplify_ring(p, M.POLYGON_TOLERANCE).ravel().tolist()
                 for j, p in M.trace_rings(batch) if j == i]
        wrong = rasterize(rings, *mask.shape) ^ mask
        assert not np.any(wrong & ~band(mask))


def recursive_douglas_peucker(points: np.ndarray, tolerance: float) -> np.ndarray:
    """The textbook recursion on a closed ring: start, farthest point, split stretches."""
    count = len(points)
    if count <= 4:
        return points
    closed = np.vstack([points, points[:1]]).astype(np.float64)
    far = int(np.argmax(np.hypot(*(closed[:-1] - closed[0]).T)))
    keep = np.zeros(count + 1, bool)
    keep[[0, far, count]] = True

    def split(a: int, b: int) -> None:
        if b - a < 2:
            return
        best, at = -1.0, -1
        for i in range(a + 1, b):
            p, u, v = closed[i], closed[a], closed[b]
            uv = v - u
            t = 0.0 if not uv.any() else min(max((p - u) @ uv / (uv @ uv), 0.0), 1.0)
            d = float(np.hypot(*(p - (u + t * uv))))
            if d > best:
                best, at = d, i
        if best > tolerance:
            keep[at] = True
            split(a, at)
            split(at, b)

    split(0, far)
    split(far, count)
    kept = points[keep[:count]]
    return kept if len(kept) >= 3 else points


@given(small_masks, st.sampled_from([0.5, 1.0, 2.0]))
@settings(max_examples=60, deadline=None)
def test_vectorised_douglas_peucker_is_the_recursive_one(batch, tolerance):
    rings = [p for _, p in M.trace_rings(batch)]
    if not rings:
        return
    offsets = np.r_[0, np.cumsum([len(p) for p in rings])]
    keep = M.simplify_rings(np.concatenate(rings), offsets, tolerance)
    for r, points in enumerate(rings):
        mine = np.concatenate(rings)[offsets[r]:offsets[r + 1]][keep[offsets[r]:offsets[r + 1]]]
        assert np.array_equal(mine, recursive_douglas_peucker(points, tolerance))


def test_a_hole_is_a_second_ring_filled_even_odd():
    mask = np.zeros((12, 12), bool)
    mask[1:11, 1:11] = True
    mask[4:8, 4:8] = False
    rings = M.trace_rings(mask[None])
    assert len(rings) == 2
    assert sorted(len(p) for _, p in rings) == [4, 4]
    flat = [p.ravel().tolist() for _, p in rings]
    assert sorted(flat) == sorted([[1, 1, 11, 1, 11, 11, 1, 11], [4, 4, 4, 8, 8, 8, 8, 4]])
    assert np.array_equal(rasterize(flat, 12, 12), mask)


def test_diagonal_neighbours_are_separate_rings():
    mask = np.array([[1, 0], [0, 1]], bool)
    rings = M.trace_rings(mask[None])
    assert sorted(p.ravel().tolist() for _, p in rings) == [[0, 0, 1, 0, 1, 1, 0, 1],
                                                           [1, 1, 2, 1, 2, 2, 1, 2]]


def test_a_circle_polygon_is_a_few_dozen_points():
    size = 120
    yy, xx = np.mgrid[:size, :size] + 0.5
    disc = (yy - 60) ** 2 + (xx - 60) ** 2 <= 50 ** 2
    (_, exact), = M.trace_rings(disc[None])
    simple = M.simplify_ring(exact, M.POLYGON_TOLERANCE)
    assert len(exact) > 150 and 12 <= len(simple) <= 40, (len(exact), len(simple))
    wrong = rasterize([simple.ravel().tolist()], size, size) ^ disc
    assert not np.any(wrong & ~band(disc))


# --- the response -------------------------------------------------------------------------


def test_sizes_are_worked_out_exactly_and_413_lists_the_formats_that_fit():
    rng = np.random.default_rng(7)
    height, width = 300, 400
    boxes = [[y, x, y + 90, x + 110] for y in (10, 150) for x in (10, 140, 270)]
    det = detections_for(boxes, rng.integers(1, 4, len(boxes)), height, width)
    yy, xx = np.mgrid[:28, :28]
    disc = (((yy - 13.5) ** 2 + (xx - 13.5) ** 2) <= 12 ** 2).astype(np.float32)
    masks = np.repeat(disc[None, :, :, None], 4, axis=3).repeat(len(boxes), axis=0)
    geometry = [identity_geometry(height, width)]
    labels = ("BG", "circle", "square", "triangle")
    overhead = 123
    actual = {}
    for fmt in M.MASK_FORMATS:
        entries = M.instance_predictions(det[None], masks[None], geometry, labels, fmt)
        actual[fmt] = overhead + len(json.dumps(entries, **JSON))
        assert entries[0]["mask_format"] == fmt and len(entries[0]["instances"]) == 6
        same = M.instance_predictions(det[None], masks[None], geometry, labels, fmt,
                                      max_bytes=actual[fmt], overhead=overhead)
        assert same == entries  # exactly at the limit still fits
    assert actual["polygon"] < actual["png"] < actual["rle"] < actual["float"]

    limit = actual["float"] - 1
    with pytest.raises(PayloadTooLarge) as info:
        M.instance_predictions(det[None], masks[None], geometry, labels, "float",
                               max_bytes=limit, overhead=overhead)
    error = info.value
    assert error.status == 413
    assert error.details == {
        "response_bytes": actual["float"], "limit_bytes": limit, "mask_format": "float",
        "formats_that_fit": {"polygon": actual["polygon"], "png": actual["png"],
                             "rle": actual["rle"]}}
    assert list(error.details["formats_that_fit"]) == ["polygon", "png", "rle"]
    assert (f"the response would be {actual['float']:,} bytes with mask_format 'float', "
            f"over the limit of {limit:,} bytes (MAX_RESPONSE_BYTES); ask for mask_format "
            f"polygon ({actual['polygon']:,} bytes)") in error.message
    body = error.to_body()["error"]
    assert body["code"] == "payload_too_large" and body["formats_that_fit"]

    with pytest.raises(PayloadTooLarge) as info:
        M.instance_predictions(det[None], masks[None], geometry, labels, "polygon",
                               max_bytes=actual["polygon"] - 1, overhead=overhead)
    assert info.value.details["formats_that_fit"] == {}
    assert "no mask format fits" in info.value.message


def test_entries_name_labels_and_give_boxes_as_x1_y1_x2_y2():
    det = detections_for([[5, 7, 25, 30]], [3], 40, 50, scores=np.array([0.87654321]))
    masks = np.ones((1, 28, 28, 4), np.float32)
    entries = M.instance_predictions(det[None], masks[None], [identity_geometry(40, 50)],
                                     ("BG", "circle", "square", "triangle"), "polygon")
    assert entries == [{"width": 50, "height": 40, "mask_format": "polygon", "instances": [
        {"class_id": 3, "label": "triangle", "score": 0.876543, "box": [7, 5, 30, 25],
         "mask": [[7, 5, 30, 5, 30, 25, 7, 25]]}]}]
