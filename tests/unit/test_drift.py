"""core.drift: PSI against an independent implementation, thresholds, ties, NaN, outliers, latency."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.drift import (
    PSI_EPSILON,
    decile_edges,
    feature_drift,
    message_latency_ms,
    missing_rate,
    outlier_rate,
    psi,
    psi_status,
    robust_range,
)


def reference_psi(current: np.ndarray, reference: np.ndarray) -> float:
    """PSI written independently: pandas.cut on the reference's percentiles, a plain loop for the sum."""
    ref = pd.Series(reference).dropna()
    cur = pd.Series(current).dropna()
    edges = sorted(set(np.percentile(ref, [10, 20, 30, 40, 50, 60, 70, 80, 90]).tolist()))
    bins = [-math.inf, *edges, math.inf]
    r = pd.cut(ref, bins, right=True).value_counts(sort=False) / len(ref)
    c = pd.cut(cur, bins, right=True).value_counts(sort=False) / len(cur)
    total = 0.0
    for ri, ci in zip(r.tolist(), c.tolist(), strict=True):
        ri, ci = max(ri, PSI_EPSILON), max(ci, PSI_EPSILON)
        total += (ci - ri) * math.log(ci / ri)
    return total


@pytest.mark.parametrize(
    ("shift", "scale", "seed"), [(0.0, 1.0, 1), (0.05, 1.0, 2), (0.3, 1.0, 3), (0.0, 2.0, 4), (1.5, 0.5, 5)]
)
def test_psi_equals_an_independent_implementation(shift: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=5000)
    current = rng.normal(shift, scale, size=700)
    assert psi(current, reference) == pytest.approx(reference_psi(current, reference), rel=1e-12, abs=1e-12)


def test_psi_equals_the_independent_implementation_with_ties_and_nans() -> None:
    rng = np.random.default_rng(7)
    reference = rng.poisson(1.5, size=3000).astype(float)  # many ties: deciles repeat
    reference[::50] = np.nan
    current = rng.poisson(2.0, size=400).astype(float)
    current[::9] = np.nan
    assert len(decile_edges(reference)) < 9
    assert psi(current, reference) == pytest.approx(reference_psi(current, reference), rel=1e-12)


def test_identical_distributions_give_psi_near_zero_and_ok() -> None:
    rng = np.random.default_rng(11)
    reference, current = rng.normal(size=20_000), rng.normal(size=5_000)
    value = psi(current, reference)
    assert 0 <= value < 0.01
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert psi_status(value) == "ok"


def test_shifted_distribution_gives_psi_above_alarm() -> None:
    rng = np.random.default_rng(12)
    reference, current = rng.normal(size=20_000), rng.normal(1.0, 1.0, size=2_000)
    value = psi(current, reference)
    assert value > 0.25
    assert psi_status(value) == "alarm"


def test_status_thresholds() -> None:
    assert [psi_status(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0, math.nan)] == [
        "ok", "ok", "warn", "warn", "alarm", "alarm", "unknown",
    ]  # fmt: skip


def test_constant_feature_same_constant_is_zero_and_a_move_is_an_alarm() -> None:
    reference = np.full(1000, 2.5)
    assert decile_edges(reference).tolist() == [2.5]
    assert psi(np.full(60, 2.5), reference) == 0.0
    moved = psi(np.full(60, 2.6), reference)
    # reference all in (-inf, 2.5], current all in (2.5, inf); each empty share raised to eps
    expected = 2 * (1 - PSI_EPSILON) * math.log(1 / PSI_EPSILON)
    assert moved == pytest.approx(expected)
    assert psi_status(moved) == "alarm"
    assert outlier_rate(np.array([2.5, 2.5, 2.6, 2.4]), reference) == 0.5


def test_nan_values_are_ignored_by_psi_and_counted_as_missing() -> None:
    rng = np.random.default_rng(13)
    reference, current = rng.normal(size=4000), rng.normal(size=1000)
    with_gaps = current.copy()
    with_gaps[:250] = np.nan
    assert psi(with_gaps, reference) == pytest.approx(psi(current[250:], reference))
    assert missing_rate(with_gaps) == 0.25
    assert missing_rate(current[250:], expected_count=1000) == 0.25  # absent rows are missing too
    assert missing_rate(np.array([1.0, np.inf, -np.inf, 2.0])) == 0.5
    assert math.isnan(psi(np.full(10, np.nan), reference))
    assert math.isnan(psi(current, np.array([np.nan])))
    assert math.isnan(missing_rate(np.array([])))


def test_outlier_rate_uses_median_and_mad_of_the_reference() -> None:
    reference = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])  # median 0, MAD 1 → σ̂ 1.4826, range ± 7.413
    lo, hi = robust_range(reference)
    assert (lo, hi) == pytest.approx((-5 * 1.4826, 5 * 1.4826))
    assert outlier_rate(np.array([0.0, 7.0, 7.5, -8.0, np.nan]), reference) == 0.5
    # MAD 0 (most values tied): the mean absolute deviation sets the scale instead
    tied = np.array([0.0] * 8 + [4.0, -4.0])
    assert robust_range(tied) == pytest.approx((-5 * 1.2533 * 0.8, 5 * 1.2533 * 0.8))


def test_message_latency_is_the_median_over_known_pairs() -> None:
    event = np.array([60_000, 120_000, 180_000, 240_000, 0])
    received = np.array([60_100, 120_300, 180_200, np.nan, 5])
    assert message_latency_ms(event, received) == 200.0
    assert math.isnan(message_latency_ms(np.array([1.0]), np.array([np.nan])))


def test_feature_drift_per_column() -> None:
    rng = np.random.default_rng(14)
    reference = rng.normal(size=(3000, 2))
    current = rng.normal(size=(500, 2))
    current[:, 1] += 2.0
    out = feature_drift(("a", "b"), current, reference, expected_rows=1000)
    assert [d.name for d in out] == ["a", "b"]
    assert [d.status for d in out] == ["ok", "alarm"]
    assert out[0].psi == pytest.approx(reference_psi(current[:, 0], reference[:, 0]))
    assert out[0].missing_rate == 0.5
    assert out[1].outlier_rate == 0.0 and out[0].outlier_rate == 0.0
