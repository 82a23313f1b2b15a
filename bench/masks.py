"""Item 5: instance masks on the wire, measured as a mini-program would receive them.

One scene, the worst case a phone sees: 100 shapes on a 1024x1024 image, run through the
segmentation demo (int8 pixels in, uint8 masks out) in this process, then:

* **bytes**: the whole response the function sends in each ``mask_format`` against the
  raw outputs sent as JSON, float32 (what a float model's REST answer carries) and
  int8 (the int8-JSON way of the original cloud function). The raw outputs are
  ``detections`` and ``masks [1, 100, 28, 28, 4]``, written as TF Serving writes JSON
  (shortest float32 repr; integers as integers). Exact counts, no repetition.
* **dequantization error**: the served model's uint8 masks, dequantized, against the
  float model's masks on the same pixels, in quantization steps (goal: within one);
  and the original ``cast(mask * 255, int8)`` for contrast.
* **post-processing time**: `functions.answers.masks` (dequantize, unmold, threshold, encode,
  with the response-size check) against a straightforward per-instance loop, as in
  matterport's ``unmold_detections`` (Pillow resize per detection, paste into an
  image-sized array, encode that), in the same run, interleaved, median of rounds.

``python -m bench.masks [--quick]`` prints the table; the bench runner imports `run`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.maskdecode import decode_mask
from bench.report import Goal, Row, markdown_table
from functions.answers import masks as M
from functions.feed import image_geometry, model_inputs
from functions.quantization import dequantize_reply
from functions.request.images import ImageInput
from modelprep import segmentation as S

GROUP = 5
LAMBDA_LIMIT = 6_291_456
_JSON = {"separators": (",", ":")}


@dataclass(frozen=True)
class Outputs:
    """The scene and both models' answers on it."""

    scene: S.Scene
    geometry: M.Geometry
    quantized: dict[str, np.ndarray]
    floats: dict[str, np.ndarray]


def model_outputs(seed: int = 7, log: Callable[[str], None] = print) -> Outputs:
    """Run the float and the served demo on a 100-shape 1024x1024 scene."""
    import tensorflow as tf

    demo = S.build_segmentation_demo(progress=log)
    scene = S.grid_scene(seed)
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(scene.image).save(png, format="PNG")
    metadata = S.served_metadata()
    image = ImageInput(png.getvalue(), "png", 1024, 1024, "image")
    inputs = model_inputs(metadata, [image])
    served = tf.saved_model.load(str(demo.served)).signatures["serving_default"]
    original = tf.saved_model.load(str(demo.original)).signatures["serving_default"]
    quantized = {k: v.numpy() for k, v in served(
        **{k: tf.constant(v) for k, v in inputs.items()}).items()}
    pixels = inputs["input_image"].astype(np.float32) - S.INPUT_QUANTIZATION.zero_point
    floats = {k: v.numpy() for k, v in original(
        input_image=tf.constant(pixels), input_image_meta=tf.constant(
            inputs["input_image_meta"]), input_anchors=tf.constant(inputs["input_anchors"])
    ).items()}
    return Outputs(scene, image_geometry(image, metadata.image_input.image), quantized,
                   floats)


# --- bytes --------------------------------------------------------------------------------


def float32_json(array: np.ndarray) -> str:
    """JSON of a float32 tensor as TF Serving writes it: each value's shortest float32 repr."""
    values, inverse = np.unique(array.astype(np.float32), return_inverse=True)
    shortest = np.array([float(np.format_float_positional(v, unique=True, trim="0"))
                         for v in values], dtype=object)
    return json.dumps(shortest[inverse.reshape(array.shape)].tolist(), **_JSON)


def raw_response_bytes(detections: np.ndarray, masks: np.ndarray) -> int:
    """``{"detections": ..., "masks": ...}`` with both tensors as JSON."""
    det = float32_json(detections)
    mask = float32_json(masks) if masks.dtype.kind == "f" else json.dumps(masks.tolist(),
                                                                           **_JSON)
    return len(f'{{"detections":{det},"masks":{mask}}}')


def naive_int8(probabilities: np.ndarray) -> np.ndarray:
    """The original export's ``cast(mask * 255, int8)``, wrapping as C casts do."""
    return (probabilities * 255).astype(np.int32).astype(np.int8)


def response_bytes(out: Outputs) -> dict[str, int]:
    """The function's whole response body per format, exactly as the app writes it."""
    envelope = json.dumps({"predictions": [], "model": {"name": "shapes-maskrcnn",
                                                        "version": None}}, **_JSON)
    sizes = {}
    for fmt in M.MASK_FORMATS:
        entries = _ours(out, fmt)
        sizes[fmt] = len(envelope) - 2 + len(json.dumps(entries, ensure_ascii=False, **_JSON))
    return sizes


def byte_rows(out: Outputs) -> list[Row]:
    det = out.quantized["detections"]
    float_bytes = raw_response_bytes(det, out.floats["masks"])
    int8 = naive_int8(out.floats["masks"])
    int8_bytes = raw_response_bytes(det, int8)
    rows = [
        Row(GROUP, "masks: raw outputs as float32 JSON (100 x 28x28x4)", value=float_bytes,
            unit="B", note="what a float model's REST answer carries"),
        Row(GROUP, "masks: raw outputs as int8 JSON (the int8-JSON way)", value=int8_bytes,
            unit="B", baseline=float_bytes, baseline_label="float32 JSON",
            ratio=int8_bytes / float_bytes, note="and it wraps every value above 0.5"),
    ]
    sizes = response_bytes(out)
    for fmt in M.MASK_FORMATS:
        default = " (default)" if fmt == M.DEFAULT_MASK_FORMAT else ""
        rows.append(Row(
            GROUP, f"masks: response in mask_format {fmt}{default}", value=sizes[fmt],
            unit="B", baseline=int8_bytes, baseline_label="int8 JSON",
            ratio=sizes[fmt] / int8_bytes, goal=Goal("<", LAMBDA_LIMIT, "value"),
            note=f"1/{float_bytes / sizes[fmt]:,.0f} of float32 JSON" if sizes[fmt] < float_bytes
            else f"{sizes[fmt] / float_bytes:.1f}x float32 JSON",
            detail={"float32_json": float_bytes, "int8_json": int8_bytes,
                    "instances": 100, "image": "1024x1024"}))
    return rows


# --- dequantization -----------------------------------------------------------------------


def error_rows(out: Outputs) -> list[Row]:
    quant = S.MASK_QUANTIZATION
    floats = out.floats["masks"]
    ours = dequantize_reply(out.quantized["masks"], quant)
    naive = naive_int8(floats).astype(np.float32) / 255
    high = floats >= M.THRESHOLD
    lost_naive = float(((naive < M.THRESHOLD) & high).sum() / max(high.sum(), 1))
    lost_ours = float(((ours < M.THRESHOLD) & high).sum() / max(high.sum(), 1))
    ours_error = float(np.abs(ours - floats).max())
    naive_error = float(np.abs(naive - floats).max())
    return [
        Row(GROUP, "masks: dequantized uint8 vs float model, max |error|", value=ours_error,
            baseline=quant.scale, baseline_label="one quantization step (1/255)",
            ratio=ours_error / quant.scale, goal=Goal("<=", 1.0),
            note=f"{lost_ours:.0%} of the pixels at or above 0.5 fall below it",
            detail={"values": int(floats.size), "at_or_above_half": int(high.sum())}),
        Row(GROUP, "masks: naive cast(mask*255, int8)/255, max |error|", value=naive_error,
            baseline=quant.scale, baseline_label="one quantization step (1/255)",
            ratio=naive_error / quant.scale,
            note=f"wraps: {lost_naive:.0%} of the pixels at or above 0.5 fall below it"),
    ]


# --- post-processing time -----------------------------------------------------------------


def _ours(out: Outputs, fmt: str) -> list[dict[str, Any]]:
    det = out.quantized["detections"]
    masks = dequantize_reply(out.quantized["masks"], S.MASK_QUANTIZATION)
    return M.instance_predictions(det, masks, [out.geometry], S.CLASS_NAMES, fmt,
                                  max_bytes=LAMBDA_LIMIT)


def reference(out: Outputs, fmt: str) -> list[dict[str, Any]]:
    """The straightforward way: one detection at a time, image-sized masks, as matterport."""
    from PIL import Image

    det = out.quantized["detections"][0]
    q = out.quantized["masks"][0]
    g = out.geometry
    window = (np.array(g.window) - [0, 0, 1, 1]) / [g.molded_height - 1, g.molded_width - 1,
                                                    g.molded_height - 1, g.molded_width - 1]
    instances = []
    for i in range(det.shape[0]):
        class_id = int(det[i, 4])
        if class_id == 0:
            break
        wh, ww = window[2] - window[0], window[3] - window[1]
        box = (det[i, :4] - window[[0, 1, 0, 1]]) / [wh, ww, wh, ww]
        y1, x1, y2, x2 = np.around(box * [g.height - 1, g.width - 1, g.height - 1, g.width - 1]
                                   + [0, 0, 1, 1]).astype(int)
        probs = (q[i, :, :, class_id].astype(np.float32) - S.MASK_QUANTIZATION.zero_point) \
            * np.float32(S.MASK_QUANTIZATION.scale)
        resized = np.asarray(Image.fromarray(probs, "F").resize((x2 - x1, y2 - y1),
                                                                Image.Resampling.BILINEAR))
        full = np.zeros((g.height, g.width), bool)
        full[y1:y2, x1:x2] = resized >= M.THRESHOLD
        if fmt == "rle":
            flat = full.flatten(order="F").astype(np.int8)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [0]))))
            counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
            mask: Any = {"size": [g.height, g.width], "counts": counts}
        elif fmt == "png":
            buf = io.BytesIO()
            Image.fromarray(full[y1:y2, x1:x2]).save(buf, format="PNG", optimize=True)
            mask = base64.b64encode(buf.getvalue()).decode("ascii")
        elif fmt == "float":
            mask = np.round(resized.astype(np.float64), 3).tolist()
        else:
            crop = full[y1:y2, x1:x2]
            mask = [(M.simplify_ring(p, M.POLYGON_TOLERANCE) + [x1, y1]).ravel().tolist()
                    for _, p in M.trace_rings(crop[None])]
        instances.append({"class_id": class_id, "label": S.CLASS_NAMES[class_id],
                          "score": round(float(det[i, 5]), 6), "box": [x1, y1, x2, y2],
                          "mask": mask})
    return [{"width": g.width, "height": g.height, "mask_format": fmt, "instances": instances}]


def time_rows(out: Outputs, rounds: int) -> list[Row]:
    rows = []
    for fmt in M.MASK_FORMATS:
        ours_ms, ref_ms = [], []
        for _ in range(rounds):
            for fn, sink in ((_ours, ours_ms), (reference, ref_ms)):
                start = time.perf_counter()
                fn(out, fmt)
                sink.append((time.perf_counter() - start) * 1000)
        ours, ref = statistics.median(ours_ms), statistics.median(ref_ms)
        agree = _agreement(_ours(out, fmt), reference(out, fmt), out)
        rows.append(Row(
            GROUP, f"masks: post-processing, {fmt}", value=ours, unit="ms", baseline=ref,
            baseline_label="per-instance loop", ratio=ours / ref, goal=Goal("<", 1.0),
            note=f"100 detections; same masks on {agree:.2%} of the pixels",
            detail={"ours_ms": ours_ms, "reference_ms": ref_ms, "rounds": rounds}))
    return rows


def _agreement(ours: list[dict], ref: list[dict], out: Outputs) -> float:
    """Share of image pixels on which both ways' decoded masks agree, over all instances."""
    g = out.geometry
    a, b = ours[0], ref[0]
    same = total = 0
    for x, y in zip(a["instances"], b["instances"], strict=True):
        mx = decode_mask(x["mask"], a["mask_format"], x["box"], g.height, g.width)
        my = decode_mask(y["mask"], b["mask_format"], y["box"], g.height, g.width)
        union = mx | my
        same += int((mx == my)[union].sum())
        total += int(union.sum())
    return same / max(total, 1)


def accuracy_row(out: Outputs) -> Row:
    """Mean IoU of the default format's masks against the drawn shapes (context only)."""
    entry = _ours(out, M.DEFAULT_MASK_FORMAT)[0]
    decoded = [decode_mask(i["mask"], entry["mask_format"], i["box"], entry["height"],
                             entry["width"]) for i in entry["instances"]]
    ious = []
    for k, shape in enumerate(out.scene.shapes):
        truth = out.scene.full_mask(k)
        y1, x1, y2, x2 = shape.box
        best = max(((truth & m).sum() / (truth | m).sum() for m in decoded
                    if m[y1:y2, x1:x2].any()), default=0.0)
        ious.append(float(best))
    return Row(GROUP, "masks: mean IoU vs the drawn shapes (polygon)",
               value=float(np.mean(ious)), goal=Goal(">=", 0.85, "value"),
               note=f"{len(decoded)} instances for {len(ious)} shapes, min IoU {min(ious):.3f}")


# --- entry points -------------------------------------------------------------------------


def measure(rounds: int = 5, log: Callable[[str], None] = print) -> list[Row]:
    log("masks: running the segmentation demo on 100 shapes at 1024x1024")
    out = model_outputs(log=log)
    return [*byte_rows(out), *error_rows(out), *time_rows(out, rounds), accuracy_row(out)]


def run(ctx) -> list[Row]:
    """The bench runner's entry: rows of item 5."""
    return measure(rounds=max(ctx.plan.rounds, 3) if ctx.plan.quick else 7, log=ctx.log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.masks", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 timing rounds instead of 7")
    args = parser.parse_args(argv)
    rows = measure(rounds=3 if args.quick else 7,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
