"""The bench's arithmetic: percentiles as numpy defines them, paired ratios, throughput."""

from __future__ import annotations

import numpy as np
import pytest

from bench.stats import Latency, Paired, StatsError, median, percentile, ratio, throughput


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [4.0, 1.0, 3.0, 2.0],
                                    list(np.random.default_rng(0).exponential(size=101))])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(values, q):
    assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)


def test_percentile_examples():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99
    assert percentile([10.0, 0.0], 100) == 10.0
    assert median([7.0, 1.0, 3.0]) == 3.0


def test_percentile_refuses_no_values_and_bad_q():
    with pytest.raises(StatsError, match="no values"):
        percentile([], 50)
    with pytest.raises(StatsError, match="within 0..100, got 101"):
        percentile([1.0], 101)


def test_latency_summary():
    seconds = [0.010] * 98 + [0.050, 0.100]
    summary = Latency.of(seconds)
    assert summary.p50 == pytest.approx(0.010)
    assert summary.p99 == pytest.approx(0.050 + (0.100 - 0.050) * 0.01)
    assert summary.mean == pytest.approx(0.0113)
    assert summary.count == 100
    with pytest.raises(StatsError):
        Latency.of([])


def test_paired_takes_the_median_of_per_round_ratios_not_the_ratio_of_medians():
    # Round 2 ran while the machine was busy: both sides slowed, their ratio did not.
    paired = Paired.of([11.0, 22.0, 12.0], [10.0, 20.0, 10.0])
    assert paired.ratio == pytest.approx(1.1)
    assert paired.value == 12.0
    assert paired.baseline == 10.0
    assert paired.ratio_min == pytest.approx(1.1)
    assert paired.ratio_max == pytest.approx(1.2)
    assert paired.rounds == 3


def test_paired_refuses_mismatched_or_empty_rounds():
    with pytest.raises(StatsError, match="2 values but 1 baselines"):
        Paired.of([1.0, 2.0], [1.0])
    with pytest.raises(StatsError, match="no rounds"):
        Paired.of([], [])
    with pytest.raises(StatsError, match="baseline of 0"):
        Paired.of([1.0], [0.0])


def test_ratio_and_throughput():
    assert ratio(3.0, 2.0) == 1.5
    assert throughput(48, 2.0) == 24.0
    with pytest.raises(StatsError):
        throughput(0, 1.0)
    with pytest.raises(StatsError):
        throughput(10, 0.0)
