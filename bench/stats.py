"""The arithmetic of the bench: percentiles, medians and paired ratios.

Pure functions on plain lists, so they are unit-tested without timing anything.

Every figure in the table is the median over repeated rounds of a statistic
taken within one round, and every ratio is the median of the per-round ratios
of two figures measured back to back in the same round. Pairing matters on a
shared 2-core machine: when something else steals the CPU for a while, both
sides of a pair slow down together and their ratio barely moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


class StatsError(ValueError):
    """A statistic was asked of data that cannot give it (no samples, a zero baseline)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linearly interpolated between order statistics.

    The same definition as numpy's default (``method="linear"``): p50 of an even
    count is the mean of the two middle values, p100 is the maximum.
    """
    if not values:
        raise StatsError("percentile of no values")
    if not 0 <= q <= 100:
        raise StatsError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Latency:
    """One round of sequential request timings, in seconds."""

    p50: float
    p99: float
    mean: float
    count: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            raise StatsError("latency of no requests")
        return cls(p50=percentile(seconds, 50), p99=percentile(seconds, 99),
                   mean=sum(seconds) / len(seconds), count=len(seconds))


def ratio(value: float, baseline: float) -> float:
    if baseline <= 0:
        raise StatsError(f"ratio against a baseline of {baseline}")
    return value / baseline


@dataclass(frozen=True)
class Paired:
    """A figure and its baseline over several rounds, summarised as the table shows them."""

    value: float
    """Median over rounds of the measured figure."""
    baseline: float
    """Median over rounds of the baseline figure."""
    ratio: float
    """Median over rounds of value / baseline within each round."""
    ratio_min: float
    ratio_max: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float], baselines: Sequence[float]) -> Paired:
        if len(values) != len(baselines):
            raise StatsError(f"{len(values)} values but {len(baselines)} baselines")
        if not values:
            raise StatsError("no rounds to pair")
        ratios = [ratio(v, b) for v, b in zip(values, baselines, strict=True)]
        return cls(value=median(values), baseline=median(baselines), ratio=median(ratios),
                   ratio_min=min(ratios), ratio_max=max(ratios), rounds=len(ratios))


def throughput(requests: int, seconds: float) -> float:
    """Requests per second; ``seconds`` is the wall time from first send to last answer."""
    if requests < 1 or seconds <= 0:
        raise StatsError(f"throughput of {requests} requests in {seconds} s")
    return requests / seconds
