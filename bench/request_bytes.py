"""Item 1: request bytes of one real photo, the naive float array against what we take.

Byte counts are exact and need no repetition. Each of our three bodies is also
sent to the running function (MobileNetV2) to show it is a request the function
really answers, and with the same class; the float array is what a naive
client sends a TF Serving model and is counted, not sent.
"""

from __future__ import annotations

import json

from bench import client, payloads
from bench.client import BenchError, Request
from bench.context import Context
from bench.report import Goal, Row

SIZE = (299, 299)
QUALITY_SWEEP = (75, 90, 95)
"""Other JPEG qualities clients use, for the detail: the ratio moves with the file size."""


def bodies(quality: int = payloads.JPEG_QUALITY) -> tuple[bytes, tuple[payloads.Payload, ...]]:
    """The 299x299 photo as a JPEG file, and the four request bodies that carry it."""
    pixels = payloads.photo_pixels(SIZE)
    data = payloads.encode_jpeg(pixels, quality)
    return data, payloads.all_shapes(pixels, data)


def rows_for(data: bytes, shapes: tuple[payloads.Payload, ...],
             sweep: dict[int, float] | None = None,
             accepted: dict[str, int] | None = None) -> list[Row]:
    """The table rows for one set of bodies (pure: tested without a server)."""
    naive, b64, form, raw = shapes
    file_size = len(data)
    float_size = len(naive.body)
    note_q = f"JPEG q{payloads.JPEG_QUALITY}, {SIZE[0]}x{SIZE[1]}"
    if sweep:
        note_q += "; at " + ", ".join(f"q{q}: 1/{1 / r:,.0f}" for q, r in sweep.items())

    def served(name: str) -> str:
        if accepted is None:
            return ""
        return f"; function answered class {accepted[name]}" if name in accepted else ""

    return [
        Row(1, "request bytes: float JSON array (naive, TF Serving rows)", float_size, "B",
            file_size, "JPEG file", float_size / file_size,
            note=f"[-1, 1] floats, shortest round-trip form, {SIZE[0] * SIZE[1] * 3:,} values"),
        Row(1, "request bytes: JSON base64 (wx.request)", len(b64.body), "B", float_size,
            "float JSON", len(b64.body) / float_size, Goal("<=", 1 / 150),
            note=note_q + served("base64 JSON"),
            detail={"ratio_by_quality": {str(q): r for q, r in (sweep or {}).items()}}),
        Row(1, "request bytes: multipart (wx.uploadFile)", len(form.body), "B", file_size,
            "JPEG file", len(form.body) / file_size, Goal("<=", 1.01),
            note=f"{len(form.body) - file_size} bytes of boundaries and part headers"
            + served("multipart")),
        Row(1, "request bytes: raw body (image/jpeg)", len(raw.body), "B", file_size,
            "JPEG file", len(raw.body) / file_size, note=served("raw").lstrip("; ")),
    ]


def run(ctx: Context) -> list[Row]:
    data, shapes = bodies()
    sweep = {}
    for quality in QUALITY_SWEEP:
        _, other = bodies(quality)
        sweep[quality] = len(other[1].body) / len(other[0].body)
    server = ctx.function_server("mobilenet_v2")
    accepted = {}
    for payload in shapes[1:]:
        body = client.post_once(server.port, Request("/", payload.body, payload.headers),
                                what=f"the function ({payload.name})")
        accepted[payload.name] = json.loads(body)["predictions"][0]["class_id"]
    if len(set(accepted.values())) != 1:
        raise BenchError(f"the same photo in three shapes got different classes: {accepted}")
    return rows_for(data, shapes, sweep, accepted)
