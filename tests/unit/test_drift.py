"""core.drift: PSI against an independent implementation, thresholds, ties, NaN, outliers, latency."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.drift import (
    CALENDAR_FEATURES,
    DRIFT_FEATURES,
    MAX_MESSAGE_LATENCY_MS,
    MIN_EFFECTIVE_SAMPLES,
    PSI_ALARM,
    PSI_EPSILON,
    FeatureDrift,
    autocorrelation_time,
    bar_close_rows,
    decile_edges,
    effective_samples,
    feature_drift,
    feature_timeframe_ms,
    message_latency_ms,
    missing_rate,
    outlier_rate,
    psi,
    psi_status,
    robust_range,
)
from core.features import compute_features_for_symbol
from core.features_schema import FEATURE_NAMES
from core.synthetic import SyntheticParams, generate_market
from core.time import parse_utc


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


DAY_MS = 86_400_000
STATIONARY = SyntheticParams(
    garch_alpha=0.0, garch_beta=0.0, vol_regime_sd_log=0.0, intraday_vol_log_amplitude=0.0,
    weekend_vol_multiplier=1.0,
)  # fmt: skip
START_MS = parse_utc("2026-03-01") - 8 * DAY_MS  # 7 days of reference, then the current day


def _features(
    params: SyntheticParams,
    seed: int,
    *,
    shocked_params: SyntheticParams | None = None,
    current_days: int = 1,
) -> pd.DataFrame:
    """7 days + ``current_days`` of BTCUSDT features of an i.i.d. market; the current days drawn from
    ``shocked_params`` when given."""
    days = 7 + current_days
    market = generate_market(["BTCUSDT"], START_MS, days * 1440, seed=seed, params=params)
    candles = {k: np.array(v) for k, v in market.candles_1m["BTCUSDT"].items()}
    if shocked_params is not None:  # the current day from another market, its prices continuing the first
        shocked = generate_market(["BTCUSDT"], START_MS, days * 1440, seed=seed + 1, params=shocked_params)
        day = slice(7 * 1440, None)
        ratio = candles["close"][7 * 1440 - 1] / shocked.candles_1m["BTCUSDT"]["open"][7 * 1440]
        for k in candles:
            new = np.array(shocked.candles_1m["BTCUSDT"][k][day])
            candles[k][day] = new * ratio if k in ("open", "high", "low", "close") else new
        return compute_features_for_symbol("BTCUSDT", candles).to_pandas()
    return compute_features_for_symbol(
        "BTCUSDT", candles, mark=market.mark_1m["BTCUSDT"], premium=market.premium_1m["BTCUSDT"],
        funding=market.funding["BTCUSDT"],
    ).to_pandas()  # fmt: skip


def _drift(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, FeatureDrift]:
    ts = frame["ts"].to_numpy(np.int64)
    current = ts >= START_MS + 7 * DAY_MS
    values = frame[list(names)].to_numpy(np.float64)
    out = feature_drift(
        names, values[current], values[~current], current_ts=ts[current], reference_ts=ts[~current]
    )
    return {d.name: d for d in out}


def test_calendar_features_are_not_drift_features() -> None:
    assert set(CALENDAR_FEATURES) == {
        f"f_{tf}_{k}_{f}" for tf in ("1m", "15m", "1h") for k in ("hour", "dow") for f in ("sin", "cos")
    }
    assert set(DRIFT_FEATURES) == set(FEATURE_NAMES) - set(CALENDAR_FEATURES)
    assert len(DRIFT_FEATURES) == len(FEATURE_NAMES) - 12


@pytest.mark.parametrize("seed", [3, 4])
def test_stationary_market_one_day_against_seven_raises_no_alarm(seed: int) -> None:
    """Same i.i.d. market in both windows: before the fix every calendar and slow feature alarmed."""
    drift = _drift(_features(STATIONARY, seed), DRIFT_FEATURES)
    alarms = {n: round(d.psi, 2) for n, d in drift.items() if d.status == "alarm"}
    assert alarms == {}
    scored = [d for d in drift.values() if d.status in ("ok", "warn")]
    assert len(scored) >= 6  # the short-memory features keep a status
    assert {"f_1m_ret_1", "f_1m_ret_5", "f_1m_body_ratio"} <= {d.name for d in scored}
    # what made them alarm: the calendar features differ by construction, a 60-hour volatility
    # over 24 h is one value, and both are far above alarm when scored anyway
    everything = _drift(_features(STATIONARY, seed), ("f_1m_dow_sin", "f_1h_vol_60"))
    assert all(d.psi > PSI_ALARM for d in everything.values())
    assert everything["f_1h_vol_60"].status == "insufficient"
    assert everything["f_1h_vol_60"].effective_samples < MIN_EFFECTIVE_SAMPLES


TRIPLED = STATIONARY.model_copy(update={"btc_vol_1m_bps": 3 * STATIONARY.btc_vol_1m_bps})


def test_volatility_tripled_in_the_current_day_alarms_on_the_1m_return_features() -> None:
    drift = _drift(_features(STATIONARY, 5, shocked_params=TRIPLED), DRIFT_FEATURES)
    for name in ("f_1m_ret_1", "f_1m_ret_5"):
        assert drift[name].status == "alarm" and drift[name].psi >= PSI_ALARM, (name, drift[name])
    # shape features do not scale with volatility and stay quiet
    assert drift["f_1m_body_ratio"].status in ("ok", "warn")
    assert drift["f_15m_ret_1"].status == "insufficient"  # 96 values in a day: too few to judge


def test_volatility_tripled_over_three_days_alarms_on_a_15m_feature_too() -> None:
    frame = _features(STATIONARY, 8, shocked_params=TRIPLED, current_days=3)
    drift = _drift(frame, ("f_15m_ret_1", "f_15m_body_ratio"))
    slow = drift["f_15m_ret_1"]  # one value per 15m bar: 288 in three days
    assert (
        slow.status == "alarm" and slow.psi >= PSI_ALARM and slow.effective_samples >= MIN_EFFECTIVE_SAMPLES
    )
    assert drift["f_15m_body_ratio"].status in ("ok", "warn")


def test_slow_features_are_sampled_at_their_own_bar_closes() -> None:
    ts = START_MS + 60_000 * np.arange(120)
    assert bar_close_rows(ts, 900_000).sum() == 8
    assert ((ts[bar_close_rows(ts, 900_000)] + 60_000) % 900_000 == 0).all()
    assert feature_timeframe_ms("f_15m_ret_1") == 900_000 and feature_timeframe_ms("f_1h_vol_60") == 3_600_000
    assert feature_timeframe_ms("f_1m_ret_1") == 60_000 and feature_timeframe_ms("b") == 60_000


def test_autocorrelation_time_of_white_noise_and_of_a_moving_sum() -> None:
    rng = np.random.default_rng(21)
    noise = rng.normal(size=20_000)
    assert autocorrelation_time(noise) == pytest.approx(1.0, abs=0.15)
    moving = np.convolve(noise, np.ones(20), mode="valid")  # a 20-bar window: τ = 20
    assert 15.0 < autocorrelation_time(moving) < 30.0  # estimated from data: within 50 %
    assert autocorrelation_time(np.full(100, 3.0)) == 1.0
    assert autocorrelation_time(np.arange(50.0)) == 50.0  # a trend: too persistent to tell
    assert effective_samples(1440, 20.0) == 72.0


def test_message_latency_ignores_receipts_that_are_not_live() -> None:
    close = parse_utc("2025-06-01")
    now = parse_utc("2026-12-03T09:00")
    # a replay session: 2025 bars received today; a backfilled bar an hour late; a receipt before the close
    replayed = message_latency_ms(np.array([close, close + 60_000]), np.array([now, now + 60_000]))
    assert math.isnan(replayed)
    event = np.array([close, close + 60_000, close + 120_000, close + 180_000])
    received = event + np.array([150, 250, 3_600_000, -5_000])
    assert message_latency_ms(event, received) == 200.0
    assert message_latency_ms(np.array([close]), np.array([close + MAX_MESSAGE_LATENCY_MS])) == 300_000.0
