"""PBO (CSCV), PSR and DSR against hand computations and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from tune.stats import (
    EULER_GAMMA,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_moments,
)

# --- PBO ----------------------------------------------------------------------------------------------


def test_pbo_is_one_when_the_in_sample_winner_is_always_the_out_of_sample_loser():
    # two partitions (rows 0-1, rows 2-3); configuration means (1, 2, 3) then (3, 2, 1)
    m = np.array([[1.0, 2, 3], [1, 2, 3], [3, 2, 1], [3, 2, 1]])
    r = probability_of_backtest_overfitting(m, n_partitions=2, metric="mean")
    # combination (0,): IS winner column 2, OOS value 1 = rank 1 of 3 → ω = 1/4, λ = ln(1/3); (1,): same
    np.testing.assert_allclose(r.logits, [math.log(1 / 3)] * 2)
    assert r.pbo == 1.0
    np.testing.assert_array_equal(r.is_performance, [3, 3])
    np.testing.assert_array_equal(r.oos_performance, [1, 1])


def test_pbo_hand_case_with_four_partitions():
    # 4 partitions of 1 row each, 3 configurations, metric = mean; C(4, 2) = 6 combinations
    m = np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 4], [2, 3, 0]])
    r = probability_of_backtest_overfitting(m, n_partitions=4, metric="mean")
    expected = []
    for c in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]:
        rest = [p for p in range(4) if p not in c]
        is_ = m[list(c)].mean(axis=0)
        oos = m[rest].mean(axis=0)
        best = int(np.argmax(is_))
        rank = (oos < oos[best]).sum() + ((oos == oos[best]).sum() + 1) / 2
        expected.append(math.log((rank / 4) / (1 - rank / 4)))
    # (0,1): IS (1.5, 1.5, .5) → col 0 (first); OOS (1.5, 1.5, 2) → rank 1.5 → λ < 0, etc.
    np.testing.assert_allclose(r.logits, expected)
    assert r.pbo == pytest.approx(np.mean(np.array(expected) <= 0))
    assert r.n_combinations == 6


def test_pbo_is_zero_and_logits_are_ln_n_when_one_configuration_dominates_every_period():
    rng = np.random.default_rng(3)
    m = rng.normal(0, 0.01, (400, 10))
    m[:, 4] += 0.05
    r = probability_of_backtest_overfitting(m, n_partitions=8)
    assert r.pbo == 0.0
    np.testing.assert_allclose(r.logits, math.log(10))
    assert r.probability_of_oos_loss == 0.0


def test_pbo_is_about_one_half_for_pure_noise_configurations():
    m = np.random.default_rng(7).normal(0, 0.01, (1000, 50))
    r = probability_of_backtest_overfitting(m, n_partitions=16)
    assert r.n_combinations == math.comb(16, 8)
    assert 0.3 < r.pbo < 0.7
    mean_pbo = np.mean(
        [
            probability_of_backtest_overfitting(np.random.default_rng(s).normal(0, 1, (240, 20)), 8).pbo
            for s in range(60)
        ]
    )
    assert mean_pbo == pytest.approx(0.5, abs=0.08)


def test_pbo_sharpe_from_partition_sums_equals_the_direct_sharpe():
    m = np.random.default_rng(11).normal(0.001, 0.02, (120, 7))
    fast = probability_of_backtest_overfitting(m, n_partitions=6)
    direct = probability_of_backtest_overfitting(
        m, n_partitions=6, metric=lambda block: block.mean(axis=0) / block.std(axis=0, ddof=1)
    )
    np.testing.assert_allclose(fast.logits, direct.logits)
    np.testing.assert_allclose(fast.oos_performance, direct.oos_performance, rtol=1e-9)
    assert fast.pbo == direct.pbo


def test_pbo_refuses_bad_input():
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(np.zeros((40, 3)), n_partitions=5)
    with pytest.raises(ValueError, match="too few"):
        probability_of_backtest_overfitting(np.zeros((10, 3)), n_partitions=16)
    with pytest.raises(ValueError, match="non-finite"):
        probability_of_backtest_overfitting(np.full((40, 3), np.nan), n_partitions=4)


# --- PSR / DSR ----------------------------------------------------------------------------------------


def test_psr_equals_the_closed_form_on_a_hand_example():
    sr, sr_star, n, g3, g4 = 0.1, 0.02, 101, -0.5, 6.0
    z = (0.1 - 0.02) * 10 / math.sqrt(1 + 0.5 * 0.1 + 5 / 4 * 0.01)  # √(n − 1) = 10
    assert probabilistic_sharpe_ratio(sr, sr_star, n, g3, g4) == pytest.approx(norm.cdf(z), rel=1e-12)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101) == pytest.approx(
        norm.cdf(1 / math.sqrt(1.005)), rel=1e-12
    )
    assert probabilistic_sharpe_ratio(0.0, 0.0, 50) == 0.5


def test_dsr_matches_the_published_example():
    # Bailey & López de Prado (2014), §4: 100 trials, best annualised SR 2.5, variance of the trials'
    # annualised SRs 0.5, 5 years of daily returns (1250), skew −3, kurtosis 10 → DSR ≈ 0.9004.
    sr = 2.5 / math.sqrt(250)
    assert expected_max_sharpe(100, 0.5 / 250) * math.sqrt(250) == pytest.approx(1.7894, abs=1e-4)
    assert deflated_sharpe_ratio(sr, 100, 0.5 / 250, 1250, skew=-3, kurtosis=10) == pytest.approx(
        0.9004, abs=1e-4
    )


def test_dsr_decreases_with_the_number_of_trials_and_equals_psr_at_zero_for_one():
    values = [deflated_sharpe_ratio(0.08, n, 0.002, 500) for n in (1, 2, 5, 10, 100, 1000, 10_000)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[0] == probabilistic_sharpe_ratio(0.08, 0.0, 500)


def test_expected_max_sharpe_closed_form():
    v, n = 0.04, 20
    z = (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n) + EULER_GAMMA * norm.ppf(1 - 1 / (n * math.e))
    assert expected_max_sharpe(n, v) == pytest.approx(0.2 * z, rel=1e-12)
    assert expected_max_sharpe(1, v) == 0.0
    assert expected_max_sharpe(10, 0.0) == 0.0


def test_sharpe_moments_of_a_hand_series():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.01])
    sr, skew, kurt, n = sharpe_moments(r)
    assert sr == pytest.approx(r.mean() / r.std(ddof=1))
    d = r - r.mean()
    assert skew == pytest.approx((d**3).mean() / (d**2).mean() ** 1.5)
    assert kurt == pytest.approx((d**4).mean() / (d**2).mean() ** 2)
    assert n == 5
    with pytest.raises(ValueError, match="constant"):
        sharpe_moments(np.ones(10))


def test_psr_refuses_impossible_moments():
    with pytest.raises(ValueError, match="kurtosis"):
        probabilistic_sharpe_ratio(2.0, 0.0, 100, skew=5.0, kurtosis=1.0)


def test_dsr_inputs_from_pooled_hourly_returns_and_trial_sharpes():
    from tune.trainable import HOURS_PER_YEAR, dsr_inputs

    rng = np.random.default_rng(0)
    r = 0.001 + 0.01 * rng.normal(size=500)
    out = dsr_inputs(r, [1.0, 2.0, 4.0])
    assert out["sharpe_per_obs"] == pytest.approx(r.mean() / r.std(ddof=1))
    assert out["n_obs"] == 500 and out["n_trials"] == 3
    assert out["trial_sharpe_variance"] == pytest.approx(np.var([1.0, 2.0, 4.0], ddof=1) / HOURS_PER_YEAR)
    assert out["kurtosis"] == pytest.approx(3.0, abs=0.5)
    flat = dsr_inputs(np.zeros(100), [1.0, float("nan")])
    assert flat["sharpe_per_obs"] is None and flat["trial_sharpe_variance"] is None and flat["n_trials"] == 2


def test_dsr_inputs_of_a_single_configuration_deflate_for_nothing():
    from tune.trainable import dsr_inputs

    out = dsr_inputs(0.01 * np.random.default_rng(1).normal(size=50), [])
    assert out["n_trials"] == 1 and out["trial_sharpe_variance"] == 0.0
