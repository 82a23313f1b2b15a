"""Mask outlines as polygons: trace every ring of pixel edges, then simplify it.

Both steps are vectorised over a whole block of masks; nothing loops over pixels.
"""

from __future__ import annotations

import numpy as np

_STEPS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
"""(dy, dx) of the four directions, clockwise on screen: right, down, left, up."""


def trace_rings(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Every boundary ring of a batch of bool masks ``[k, h, w]``, as ``(mask index,
    points)`` pairs ordered by mask; see `trace`."""
    points, offsets, owner = trace(masks)
    return [(o, points[a:b]) for o, a, b in zip(owner.tolist(), offsets[:-1].tolist(),
                                                offsets[1:].tolist(), strict=True)]


def trace(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every boundary ring of a batch of bool masks ``[k, h, w]``, vectorised.

    Returns ``(points, offsets, owner)``: int64 ``[T, 2]`` (x, y) pixel corners of all
    rings one after another, with collinear points dropped; ring r is
    ``points[offsets[r]:offsets[r + 1]]`` and belongs to mask ``owner[r]``; rings are
    ordered by mask. Each pixel edge between inside and outside becomes a directed edge
    with the inside on its right; at a corner where two diagonal pixels meet, the ring
    turns right, so diagonal neighbours belong to separate rings (4-connectivity).
    Rings are found as cycles of the successor permutation by pointer jumping, so the
    cost is O(E log E) array work for E edges, with no loop per edge.
    """
    k, h, w = masks.shape
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    vw = w + 3  # vertices per row of the padded grid
    per_mask = (h + 3) * vw

    n, r, c = np.nonzero(padded[:, 1:, :] != padded[:, :-1, :])  # horizontal edges
    below = padded[n, r + 1, c]
    y = r + 1
    h_start = np.where(below, y * vw + c, y * vw + c + 1)
    h_dir = np.where(below, 0, 2)
    h_n = n
    n, r, c = np.nonzero(padded[:, :, 1:] != padded[:, :, :-1])  # vertical edges
    right = padded[n, r, c + 1]
    x = c + 1
    v_start = np.where(right, (r + 1) * vw + x, r * vw + x)
    v_dir = np.where(right, 3, 1)
    owner = np.concatenate([h_n, n])
    start = np.concatenate([h_start, v_start]) + owner * per_mask
    direction = np.concatenate([h_dir, v_dir])
    count = len(start)
    if count == 0:
        return np.zeros((0, 2), np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64)
    step = _STEPS[direction]
    end = start + step[:, 0] * vw + step[:, 1]

    by_start = np.argsort(start, kind="stable")
    sorted_start = start[by_start]
    first = np.searchsorted(sorted_start, end, "left")
    choices = np.searchsorted(sorted_start, end, "right") - first
    successor = by_start[first]
    saddle = np.flatnonzero(choices == 2)
    if saddle.size:
        other = by_start[first[saddle] + 1]
        right_turn = (direction[saddle] + 1) % 4
        successor[saddle] = np.where(direction[successor[saddle]] == right_turn,
                                     successor[saddle], other)

    ring = np.arange(count)
    jump = successor.copy()
    for _ in range(int(np.ceil(np.log2(count))) + 1):
        ring = np.minimum(ring, ring[jump])
        jump = jump[jump]
    last = successor == ring  # the edge before its ring's first (smallest) edge
    jump = np.where(last, np.arange(count), successor)
    to_last = (~last).astype(np.int64)
    for _ in range(int(np.ceil(np.log2(count))) + 1):
        to_last = to_last + to_last[jump]
        jump = jump[jump]
    length = np.bincount(ring, minlength=count)[ring]
    order = np.lexsort((length - 1 - to_last, ring, owner))

    ring, direction, start = ring[order], direction[order], start[order]
    first_of_ring = np.r_[True, ring[1:] != ring[:-1]]
    starts = np.flatnonzero(first_of_ring)
    previous = np.arange(count) - 1
    ends = np.r_[starts[1:], count] - 1
    previous[starts] = ends
    corner = direction != direction[previous]
    local = start % per_mask
    points = np.stack([local % vw - 1, local // vw - 1], axis=1)
    ring_of = np.cumsum(first_of_ring) - 1
    mask_of = owner[order][starts]
    keep = np.flatnonzero(corner)
    offsets = np.r_[np.searchsorted(ring_of[keep], np.arange(len(starts))), len(keep)]
    return points[keep], offsets, mask_of


def simplify_ring(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on one closed ring (see `simplify_rings`)."""
    return points[simplify_rings(points, np.array([0, len(points)]), tolerance)]


def simplify_rings(points: np.ndarray, offsets: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on many closed rings at once: which points to keep, as a bool mask.

    Each ring starts from its first point and the point farthest from it; then, level
    by level for all rings together, every stretch between kept points whose farthest
    point lies more than ``tolerance`` from the chord keeps that point. That is exactly
    the recursive algorithm's result (each stretch is decided by its own points), in a
    few array passes instead of a Python call per stretch. Every dropped point lies
    within ``tolerance`` of the kept outline, so the outline stays within ``tolerance``
    of the original everywhere. Rings of four points or fewer, and rings that would
    collapse below three points, are kept whole.
    """
    total = len(points)
    keep = np.zeros(total, bool)
    starts, ends = offsets[:-1], offsets[1:]
    sizes = ends - starts
    if total == 0 or tolerance <= 0:
        keep[:] = True
        return keep
    ring = np.repeat(np.arange(len(sizes)), sizes)
    keep[np.repeat(sizes <= 4, sizes)] = True
    xy = points.astype(np.float64)
    keep[starts] = True
    spread = np.hypot(*(xy - xy[starts][ring]).T)
    by_spread = np.lexsort((-spread, ring))
    keep[by_spread[starts]] = True  # sorted by ring first, so each ring's block starts there
    first, last = starts[ring], ends[ring]
    index = np.arange(total)
    for _ in range(int(sizes.max())):
        kept = np.flatnonzero(keep)
        after = np.searchsorted(kept, index, "right")
        before = kept[after - 1]
        following = kept[np.minimum(after, len(kept) - 1)]
        following = np.where((after >= len(kept)) | (following >= last), first, following)
        candidates = np.flatnonzero(~keep)
        if candidates.size == 0:
            break
        distance = _segment_distance(xy[candidates], xy[before[candidates]],
                                     xy[following[candidates]])
        stretch = before[candidates]
        runs = np.flatnonzero(np.r_[True, stretch[1:] != stretch[:-1]])
        largest = np.maximum.reduceat(distance, runs)
        run_of = np.repeat(np.arange(len(runs)), np.diff(np.r_[runs, len(candidates)]))
        hits = np.flatnonzero(distance == largest[run_of])
        first_hits = hits[np.r_[True, run_of[hits][1:] != run_of[hits][:-1]]]
        split = candidates[first_hits[largest[run_of[first_hits]] > tolerance]]
        if split.size == 0:
            break
        keep[split] = True
    collapsed = np.add.reduceat(keep, starts) < 3
    keep[np.repeat(collapsed, sizes)] = True
    return keep


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point to its own segment ``a``-``b`` (rows pair up)."""
    ab = b - a
    length = np.einsum("ij,ij->i", ab, ab)
    along = np.einsum("ij,ij->i", points - a, ab) / np.where(length > 0, length, 1)
    t = np.where(length > 0, np.clip(along, 0, 1), 0)
    return np.hypot(*(points - (a + t[:, None] * ab)).T)

