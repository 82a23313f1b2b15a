"""Decoding work bounded before any pixel is decoded: JPEG scans counted from the markers,
animated GIFs reduced to their first frame. Generated files of each class, real encoders
(Pillow) for the honest ones and hand-built bytes for the hostile ones.
"""

from __future__ import annotations

import io
import re
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from functions import pixels
from functions.errors import InvalidImage, PayloadTooLarge
from functions.request.decode_work import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    check_jpeg_scans,
    gif_is_single_frame,
)
from functions.request.images import inspect_image

LIMIT = 25_000_000


def fastest(call, tries: int = 3) -> float:
    """The best of a few timings of ``call()``: the work it does, not the shared machine's
    scheduling noise."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def jpeg(width: int, height: int, *, progressive: bool, mode: str = "RGB", seed: int = 0,
         flat: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    values = np.zeros((height, width, channels), np.uint8) if flat else \
        (rng.random((height, width, channels)) * 255).astype(np.uint8)
    image = Image.fromarray(values[..., 0] if channels == 1 else values, mode)
    buf = io.BytesIO()
    image.save(buf, "JPEG", progressive=progressive, quality=85)
    return buf.getvalue()


def scan_spans(data: bytes) -> list[tuple[int, int]]:
    """Where each scan (SOS header and its entropy-coded data) lies, by a plain walk."""
    spans, pos = [], 2
    while data[pos + 1] != 0xD9:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if data[pos + 1] == 0xDA:
            end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end).start()
            spans.append((pos, end))
        pos = end
    return spans


def repeated_scans(data: bytes, extra: int) -> bytes:
    """The attack: the file's smallest scan repeated ``extra`` times before EOI."""
    spans = scan_spans(data)
    start, end = min(spans[1:] or spans, key=lambda s: s[1] - s[0])
    last = spans[-1][1]
    return data[:last] + data[start:end] * extra + data[last:]


# -- JPEG scans --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300), progressive=st.booleans(),
       mode=st.sampled_from(["RGB", "L"]), seed=st.integers(0, 5))
def test_real_jpegs_are_counted_scan_for_scan(width, height, progressive, mode, seed):
    data = jpeg(width, height, progressive=progressive, mode=mode, seed=seed)
    assert check_jpeg_scans(data, "body", MAX_JPEG_SCANS) == len(scan_spans(data))
    assert data.count(b"\xff\xda") == len(scan_spans(data))
    assert inspect_image(data, "body", LIMIT).format == "jpeg"


@settings(max_examples=40, deadline=None)
@given(width=st.integers(8, 5000), height=st.integers(8, 5000),
       extra=st.integers(MAX_JPEG_SCANS - 5, 20_000), mode=st.sampled_from(["RGB", "L"]))
def test_repeated_scan_bombs_are_refused_in_milliseconds(width, height, extra, mode):
    data = repeated_scans(jpeg(width, height, progressive=True, mode=mode, flat=True), extra)
    total = len(scan_spans(data))

    def check() -> None:
        if total > MAX_JPEG_SCANS:
            with pytest.raises(PayloadTooLarge) as refused:
                inspect_image(data, "images[1]", LIMIT)
            assert refused.value.status == 413
            assert refused.value.message == (
                f"images[1] is a JPEG of more than {MAX_JPEG_SCANS} scans, each one a "
                f"decoding pass over the whole image; the limit is {MAX_JPEG_SCANS} scans "
                "(MAX_JPEG_SCANS); save it as a baseline JPEG or a PNG before sending")
        else:
            assert inspect_image(data, "images[1]", LIMIT).width == width

    assert fastest(check) < 0.1


def test_the_scan_limit_is_inclusive_and_configurable():
    data = repeated_scans(jpeg(64, 64, progressive=True, flat=True), 20)
    total = len(scan_spans(data))
    assert inspect_image(data, "body", LIMIT, max_jpeg_scans=total).format == "jpeg"
    with pytest.raises(PayloadTooLarge, match=f"more than {total - 1} scans"):
        inspect_image(data, "body", LIMIT, max_jpeg_scans=total - 1)


@pytest.mark.parametrize("segment", [b"\xff\xfe\x00\x02", b"\xff\xfe\x00\x03x",
                                     b"\xff\xe1\x00\x02"])
def test_a_jpeg_of_endless_segments_is_refused(segment):
    base = jpeg(16, 16, progressive=False)
    data = base[:-2] + segment * (MAX_JPEG_SEGMENTS + 5) + base[-2:]

    def check() -> None:
        with pytest.raises(PayloadTooLarge, match="more than 10,000 marker segments"):
            inspect_image(data, "body", LIMIT)

    assert fastest(check) < 0.1


@pytest.mark.parametrize("cut", [3, 10, 100, 600, -3, -1])
def test_truncated_jpegs_end_the_count_quietly(cut):
    data = jpeg(40, 30, progressive=True)[:cut]
    assert check_jpeg_scans(data, "body", MAX_JPEG_SCANS) <= 10


def test_stuffing_restart_markers_and_fill_bytes_do_not_end_a_scan():
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
                    ).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    assert b"\xff\x00" in data
    scans = check_jpeg_scans(data, "body", MAX_JPEG_SCANS)
    filled = data[:-2] + b"\xff\xff\xff\xd9"  # fill bytes before EOI
    assert check_jpeg_scans(filled, "body", MAX_JPEG_SCANS) == scans


# -- GIF frames --------------------------------------------------------------------------


def gif(frames: list[np.ndarray], **save) -> bytes:
    images = [Image.fromarray(frame) for frame in frames]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=len(images) > 1, append_images=images[1:], **save)
    return buf.getvalue()


def image_block(data: bytes) -> tuple[int, int]:
    """Where the first frame's image block (descriptor to its terminator) lies."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[pos] == 0x21:
        pos += 2
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    start = pos
    local = data[pos + 9]
    pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
    while data[pos]:
        pos += 1 + data[pos]
    return start, pos + 1


def with_frames(data: bytes, copies: int, huge_later: tuple[int, int] | None = None) -> bytes:
    """The attack: the first frame's block copied ``copies`` times (hundreds of full
    frames in a small file), or a later frame that claims ``huge_later`` pixels."""
    start, end = image_block(data)
    block = data[start:end]
    extra = block * copies
    if huge_later is not None:
        w, h = huge_later
        extra += block[:5] + struct.pack("<HH", w, h) + block[9:]
    return data[:end] + extra + data[end:]


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width)) * 255).astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 200), height=st.integers(1, 200), seed=st.integers(0, 3),
       comment=st.booleans())
def test_single_frame_gifs_pass_untouched(width, height, seed, comment):
    data = gif([noise(width, height, seed)], **({"comment": b"hello"} if comment else {}))
    assert gif_is_single_frame(data)
    image = inspect_image(data, "body", LIMIT)
    assert (image.format, image.data, image.width, image.height) == ("gif", data, width, height)


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 400), height=st.integers(1, 400), copies=st.integers(1, 400),
       seed=st.integers(0, 3))
def test_gifs_of_many_frames_become_their_first_frame(width, height, copies, seed):
    first = noise(width, height, seed)
    data = with_frames(gif([first]), copies)
    assert fastest(lambda: inspect_image(data, "file", LIMIT)) < 0.1
    image = inspect_image(data, "file", LIMIT)
    assert (image.format, image.width, image.height) == ("png", width, height)
    with Image.open(io.BytesIO(image.data)) as png:
        got = np.asarray(png.convert("RGB"))
    assert np.array_equal(got, pixels.decode_image(data, 3).astype(np.uint8))
    assert np.array_equal(got[..., 0], first)  # a gray palette: the first frame, exactly


@pytest.mark.parametrize("huge", [(65535, 65535), (60000, 1), (1, 60000), (5000, 5000)])
def test_a_huge_later_frame_is_never_decoded(huge):
    data = with_frames(gif([noise(40, 30)]), 0, huge_later=huge)
    assert fastest(lambda: inspect_image(data, "image", LIMIT)) < 0.1
    image = inspect_image(data, "image", LIMIT)
    assert (image.format, image.width, image.height) == ("png", 40, 30)


def test_pillow_animations_with_disposal_transparency_and_offsets_use_frame_one():
    frames = [noise(30, 20, i) for i in range(5)]
    data = gif(frames, duration=50, loop=0, disposal=2, transparency=0)
    image = inspect_image(data, "body", LIMIT)
    assert image.format == "png"
    with Image.open(io.BytesIO(image.data)) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")),
                              pixels.decode_image(data, 3).astype(np.uint8))


@pytest.mark.parametrize("tail", [b"", b"\x00", b"\x99\x99", b",\x00\x00"])
def test_anything_but_a_trailer_after_frame_one_means_re_encoding(tail):
    single = gif([noise(12, 9)])
    start, end = image_block(single)
    data = single[:end] + tail  # cut: no trailer, stray bytes, a truncated descriptor
    assert gif_is_single_frame(data) == (tail == b"")
    assert inspect_image(data, "body", LIMIT).width == 12


def test_a_corrupt_first_frame_of_an_animation_is_a_400_naming_the_image():
    data = with_frames(gif([noise(20, 20)]), 2)
    lzw_size = image_block(data)[0] + 10  # no local colour table in these files
    for size in (13, 255):
        broken = data[:lzw_size] + bytes([size]) + data[lzw_size + 1:]
        with pytest.raises(InvalidImage) as refused:
            inspect_image(broken, "images[0]", LIMIT)
        assert refused.value.message == ("images[0]: the image data is corrupt or truncated "
                                         "and could not be decoded")
