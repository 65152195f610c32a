"""Overfitting statistics for promotion gates: PBO by CSCV, probabilistic and deflated Sharpe ratios.

- Bailey, Borwein, López de Prado, Zhu (2015), "The probability of backtest overfitting" (CSCV).
- Bailey, López de Prado (2012), "The Sharpe ratio efficient frontier" (PSR).
- Bailey, López de Prado (2014), "The deflated Sharpe ratio" (DSR).

Sharpe ratios here are per observation (not annualised): mean / std of the period returns. Kurtosis
is the plain (Pearson) kurtosis, 3 for a normal distribution; skewness 0 for it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import kurtosis as _kurtosis
from scipy.stats import norm
from scipy.stats import skew as _skew

EULER_GAMMA = 0.5772156649015329

Metric = Literal["sharpe", "mean"] | Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class PBOResult:
    """CSCV outcome: PBO, and per combination the logit of the chosen configuration's out-of-sample rank
    and its in-sample and out-of-sample performance."""

    pbo: float
    logits: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray
    n_partitions: int

    @property
    def n_combinations(self) -> int:
        return len(self.logits)

    @property
    def probability_of_oos_loss(self) -> float:
        """Share of combinations whose chosen configuration performs below zero out of sample."""
        return float(np.mean(self.oos_performance < 0))


def _partition_stats(matrix: np.ndarray, n_partitions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = np.array_split(np.arange(matrix.shape[0]), n_partitions)
    sums = np.stack([matrix[p].sum(axis=0) for p in parts])
    squares = np.stack([(matrix[p] ** 2).sum(axis=0) for p in parts])
    counts = np.array([len(p) for p in parts], dtype=np.float64)
    return sums, squares, counts


def _sharpe_from_sums(total: np.ndarray, square: np.ndarray, n: float) -> np.ndarray:
    mean = total / n
    var = np.maximum(square - n * mean**2, 0.0) / (n - 1)
    std = np.sqrt(var)
    # flat returns (std within the rounding of the sums): a positive mean beats any risky one, 0 is neutral
    flat = std <= 1e-6 * np.abs(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flat, np.where(mean == 0, 0.0, np.sign(mean) * np.inf), mean / std)


def _relative_rank(values: np.ndarray, chosen: int) -> float:
    """Rank of values[chosen] among values, 1 = worst, ties averaged, divided by N + 1."""
    v = values[chosen]
    rank = np.sum(values < v) + (np.sum(values == v) + 1) / 2
    return float(rank / (len(values) + 1))


def probability_of_backtest_overfitting(
    performance_matrix: np.ndarray, n_partitions: int = 16, metric: Metric = "sharpe"
) -> PBOResult:
    """Return the probability of backtest overfitting by combinatorially symmetric cross-validation.

    ``performance_matrix`` is T periods × N configurations (e.g. daily returns of each trial). Rows are
    cut into ``n_partitions`` (even) contiguous blocks of nearly equal size; for each of the
    C(S, S/2) ways to pick half of them as in-sample, the configuration with the best in-sample
    ``metric`` is chosen, ω is the relative rank of its out-of-sample metric (rank / (N + 1), 1 =
    worst, ties averaged) and its logit λ = ln(ω / (1 − ω)). PBO is the share of combinations with
    λ ≤ 0 (the in-sample winner is at or below the out-of-sample median). ``metric``: "sharpe" (mean /
    std, ddof 1; a flat column is ±inf by the sign of its mean), "mean", or a function of a rows ×
    configurations block returning one value per configuration.
    """
    matrix = np.asarray(performance_matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(
            f"performance_matrix must be periods × configurations (≥ 2), got shape {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise ValueError("performance_matrix has non-finite values")
    if n_partitions < 2 or n_partitions % 2:
        raise ValueError(f"n_partitions must be even and ≥ 2, got {n_partitions}")
    if matrix.shape[0] < n_partitions or (
        metric == "sharpe" and matrix.shape[0] // n_partitions * n_partitions < 4
    ):
        raise ValueError(
            f"{matrix.shape[0]} periods are too few for {n_partitions} partitions (≥ 1 row each, "
            "≥ 2 rows per half for the Sharpe ratio)"
        )
    half = n_partitions // 2
    combos = list(itertools.combinations(range(n_partitions), half))
    logits = np.empty(len(combos))
    is_perf = np.empty(len(combos))
    oos_perf = np.empty(len(combos))
    if callable(metric):
        parts = np.array_split(np.arange(matrix.shape[0]), n_partitions)
    else:
        sums, squares, counts = _partition_stats(matrix, n_partitions)
        all_sum, all_sq, all_n = sums.sum(axis=0), squares.sum(axis=0), counts.sum()
    for c, chosen in enumerate(combos):
        if callable(metric):
            rows_in = np.concatenate([parts[p] for p in chosen])
            rows_out = np.concatenate([parts[p] for p in range(n_partitions) if p not in chosen])
            perf_in = np.asarray(metric(matrix[rows_in]), dtype=np.float64)
            perf_out = np.asarray(metric(matrix[rows_out]), dtype=np.float64)
        else:
            idx = list(chosen)
            s_in, q_in, n_in = sums[idx].sum(axis=0), squares[idx].sum(axis=0), counts[idx].sum()
            s_out, q_out, n_out = all_sum - s_in, all_sq - q_in, all_n - n_in
            if metric == "mean":
                perf_in, perf_out = s_in / n_in, s_out / n_out
            elif metric == "sharpe":
                perf_in, perf_out = (
                    _sharpe_from_sums(s_in, q_in, n_in),
                    _sharpe_from_sums(s_out, q_out, n_out),
                )
            else:
                raise ValueError(f"unknown metric {metric!r}; expected 'sharpe', 'mean' or a function")
        best = int(np.argmax(perf_in))
        omega = _relative_rank(perf_out, best)
        logits[c] = math.log(omega / (1 - omega))
        is_perf[c], oos_perf[c] = perf_in[best], perf_out[best]
    return PBOResult(float(np.mean(logits <= 0)), logits, is_perf, oos_perf, n_partitions)


def sharpe_moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    """Return (Sharpe ratio per observation (ddof 1), skewness, Pearson kurtosis, n) of a return series."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or len(r) < 3 or not np.isfinite(r).all():
        raise ValueError("returns must be a finite 1-D series of at least 3 observations")
    std = float(r.std(ddof=1))
    if std == 0:
        raise ValueError("returns are constant: the Sharpe ratio is undefined")
    return float(r.mean() / std), float(_skew(r)), float(_kurtosis(r, fisher=False)), len(r)


def probabilistic_sharpe_ratio(
    sharpe: float, benchmark_sharpe: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Return P(true Sharpe > ``benchmark_sharpe``) given an observed per-observation ``sharpe`` over
    ``n_obs`` returns with that skewness and Pearson kurtosis (Bailey & López de Prado 2012):
    Φ((SR − SR*)·√(n − 1) / √(1 − γ3·SR + (γ4 − 1)/4·SR²))."""
    if n_obs < 2:
        raise ValueError(f"n_obs must be ≥ 2, got {n_obs}")
    denominator = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if denominator <= 0:
        raise ValueError(
            f"1 − skew·SR + (kurtosis − 1)/4·SR² = {denominator:g} ≤ 0: check skew/kurtosis (Pearson, normal = 3)"
        )
    return float(norm.cdf((sharpe - benchmark_sharpe) * math.sqrt(n_obs - 1) / math.sqrt(denominator)))


def expected_max_sharpe(n_trials: int, variance_of_trial_sharpes: float) -> float:
    """Return the expected maximum Sharpe ratio of ``n_trials`` independent unskilled trials whose Sharpe
    ratios have that variance: √V·((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))), 0 for one trial."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be ≥ 1, got {n_trials}")
    if variance_of_trial_sharpes < 0:
        raise ValueError(f"variance_of_trial_sharpes must be ≥ 0, got {variance_of_trial_sharpes}")
    if n_trials == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(variance_of_trial_sharpes) * z)


def deflated_sharpe_ratio(
    sharpe: float,
    n_trials: int,
    variance_of_trial_sharpes: float,
    n_obs: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Return the deflated Sharpe ratio (Bailey & López de Prado 2014): the PSR of the selected
    ``sharpe`` against the expected maximum Sharpe of ``n_trials`` unskilled trials
    (``expected_max_sharpe``). All Sharpe ratios and their variance per observation, not annualised."""
    benchmark = expected_max_sharpe(n_trials, variance_of_trial_sharpes)
    return probabilistic_sharpe_ratio(sharpe, benchmark, n_obs, skew, kurtosis)
