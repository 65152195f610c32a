"""The non-TA-Lib features equal straightforward numpy definitions; warm-ups are as documented."""

from __future__ import annotations

import numpy as np
import pytest
from feature_samples import higher_timeframe_inputs, run_timeframe, synthetic_group
from numpy.lib.stride_tricks import sliding_window_view as windows

from core.features import INPUT_COLUMNS, compute_features
from core.features_kernel import FEATURES, W_FUNDING, W_RV_REF, regime_code
from core.features_schema import DATA_DEPENDENT, FEATURE_TABLE
from core.time import DAY_MS, HOUR_MS, MINUTE_MS

COL = {name: i for i, name in enumerate(INPUT_COLUMNS)}


def rolling(x: np.ndarray, w: int, fn) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[w - 1 :] = fn(windows(x, w), axis=-1) if fn is not None else np.nan
    return out


def zscore(x: np.ndarray, w: int) -> np.ndarray:
    m, sd = rolling(x, w, np.mean), rolling(x, w, np.std)
    return (x - m) / sd


@pytest.fixture(scope="module")
def group():
    return synthetic_group(days=25)


@pytest.fixture(scope="module")
def frames(group):
    return compute_features(group)


def check(got: np.ndarray, ref: np.ndarray, name: str, rtol: float = 1e-7, atol: float = 1e-10) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (
        f"{name}: NaN differs, first {np.argmax(~np.isnan(got))} vs {np.argmax(~np.isnan(ref))}"
    )
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=name)


def test_return_distribution_and_range_features_equal_numpy(group, frames):
    x = group["ETHUSDT"].values
    f = frames["ETHUSDT"]
    o, h, lo, c, v = (x[:, COL[k]] for k in ("open", "high", "low", "close", "volume"))
    lc = np.log(c)
    r = np.concatenate(([np.nan], np.diff(lc)))
    for k in (1, 5, 15, 60):
        check(f.column(f"f_1m_ret_{k}"), np.concatenate((np.full(k, np.nan), lc[k:] - lc[:-k])), f"ret_{k}")
    vol = rolling(r, 60, np.std)
    check(f.column("f_1m_vol_60"), vol, "vol_60")
    check(
        f.column("f_1m_vol_ratio_15_60"),
        np.where(np.isnan(vol), np.nan, rolling(r, 15, np.std)) / vol,
        "vol_ratio",
    )
    dev = windows(r[1:], 60) - windows(r[1:], 60).mean(axis=-1, keepdims=True)
    m2, m3, m4 = ((dev**k).mean(axis=-1) for k in (2, 3, 4))
    pad = np.full(60, np.nan)
    check(f.column("f_1m_skew_60"), np.concatenate((pad, m3 / m2**1.5)), "skew", rtol=1e-6)
    check(f.column("f_1m_kurt_60"), np.concatenate((pad, m4 / m2**2 - 3)), "kurt", rtol=1e-6)
    w = windows(r[1:], 60)
    ac = np.array([np.corrcoef(row[:-1], row[1:])[0, 1] for row in w])
    check(f.column("f_1m_autocorr_60"), np.concatenate((pad, ac)), "autocorr", rtol=1e-6)
    hl = np.log(h / lo) ** 2
    check(f.column("f_1m_parkinson_60"), np.sqrt(rolling(hl, 60, np.mean) / (4 * np.log(2))), "parkinson")
    gk = 0.5 * hl - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    check(f.column("f_1m_garman_klass_60"), np.sqrt(rolling(gk, 60, np.mean)), "garman_klass")
    rng = h - lo
    check(f.column("f_1m_body_ratio"), np.where(rng > 0, (c - o) / np.where(rng > 0, rng, 1), 0), "body")
    check(f.column("f_1m_clv"), np.where(rng > 0, ((c - lo) - (h - c)) / np.where(rng > 0, rng, 1), 0), "clv")
    lv = np.log(np.maximum(vol, 1e-12))
    rv = np.full(len(c), np.nan)
    rv[60:] = zscore(lv[60:], W_RV_REF)
    check(f.column("f_1m_rv_z"), rv, "rv_z", rtol=1e-6, atol=1e-8)


def test_volume_funding_basis_and_time_features_equal_numpy(group, frames):
    x = group["ETHUSDT"].values
    f = frames["ETHUSDT"]
    h, lo, c, v, tb = (x[:, COL[k]] for k in ("high", "low", "close", "volume", "taker_buy_volume"))
    check(f.column("f_1m_vol_z"), zscore(v, 60), "vol_z", rtol=1e-6, atol=1e-9)
    check(f.column("f_1m_taker_buy_ratio"), tb / v, "taker_buy_ratio")
    check(
        f.column("f_1m_taker_imbalance_15"),
        2 * rolling(tb, 15, np.sum) / rolling(v, 15, np.sum) - 1,
        "taker_imb",
    )
    tp = (h + lo + c) / 3
    check(
        f.column("f_1m_vwap_dist_60"),
        c / (rolling(tp * v, 60, np.sum) / rolling(v, 60, np.sum)) - 1,
        "vwap_dist",
    )
    r = np.abs(np.concatenate(([np.nan], np.diff(np.log(c)))))
    check(f.column("f_1m_amihud_60"), 1e6 * rolling(r, 60, np.sum) / rolling(c * v, 60, np.sum), "amihud")
    basis = x[:, COL["premium_close"]]
    check(f.column("f_1m_basis"), basis, "basis", rtol=0, atol=0)
    check(f.column("f_1m_basis_z"), zscore(basis, 60), "basis_z", rtol=1e-6, atol=1e-8)
    rate, when = x[:, COL["funding_rate"]], x[:, COL["funding_time_ms"]]
    check(f.column("f_1m_funding_rate"), rate, "funding_rate", rtol=0, atol=0)
    events = np.unique(when[~np.isnan(when)], return_index=True)[1]
    ev_rate = rate[~np.isnan(when)][events]
    ev_z = np.full(len(ev_rate), np.nan)
    ev_z[W_FUNDING - 1 :] = zscore(ev_rate, W_FUNDING)[W_FUNDING - 1 :]
    k = np.searchsorted(np.unique(when[~np.isnan(when)]), when)
    expected = np.where(np.isnan(when), np.nan, ev_z[np.minimum(k, len(ev_z) - 1)])
    check(f.column("f_1m_funding_z"), expected, "funding_z", rtol=1e-9, atol=1e-12)
    ts = group["ETHUSDT"].ts_ms
    minute = (ts % DAY_MS) / DAY_MS
    dow = (ts // DAY_MS + 3) % 7
    check(f.column("f_1m_hour_sin"), np.sin(2 * np.pi * minute), "hour_sin", rtol=0, atol=1e-15)
    check(f.column("f_1m_dow_cos"), np.cos(2 * np.pi * dow / 7), "dow_cos", rtol=0, atol=1e-15)
    assert f.column("f_1m_dow_sin")[0] == 0.0  # 2024-06-03 is a Monday


def test_btc_features_are_btcs_own_features_at_the_same_bar(group, frames):
    btc, eth = frames["BTCUSDT"], frames["ETHUSDT"]
    for tf in ("1m", "15m", "1h"):
        assert np.array_equal(eth.column(f"f_{tf}_btc_ret_60"), btc.column(f"f_{tf}_ret_60"), equal_nan=True)
        assert np.array_equal(eth.column(f"f_{tf}_btc_vol_60"), btc.column(f"f_{tf}_vol_60"), equal_nan=True)
        regime = np.array([regime_code(z) for z in btc.column(f"f_{tf}_rv_z")])
        assert np.array_equal(eth.column(f"f_{tf}_btc_regime"), regime, equal_nan=True)
        if tf == "1m":
            assert set(np.unique(regime[~np.isnan(regime)])) == {0.0, 1.0, 2.0}
    rb = np.diff(np.log(group["BTCUSDT"].values[:, COL["close"]]))
    re = np.diff(np.log(group["ETHUSDT"].values[:, COL["close"]]))
    corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(windows(re, 60), windows(rb, 60), strict=True)])
    check(eth.column("f_1m_btc_corr_60"), np.concatenate((np.full(60, np.nan), corr)), "btc_corr", rtol=1e-6)
    assert 0.2 < np.nanmean(corr) < 0.9


@pytest.mark.parametrize(("tf", "interval_ms"), [("1m", MINUTE_MS), ("15m", 15 * MINUTE_MS), ("1h", HOUR_MS)])
def test_first_value_of_each_feature_is_at_its_documented_warmup(group, tf, interval_ms):
    inputs = group["BTCUSDT"]
    bars = inputs if tf == "1m" else higher_timeframe_inputs(inputs, interval_ms)
    feats, _ = run_timeframe(bars, is_btc=True)
    for spec in FEATURE_TABLE:
        if spec.name in DATA_DEPENDENT:
            continue
        col = feats[:, FEATURES.index(spec.name)]
        assert np.isfinite(col).any(), (tf, spec.name)
        assert int(np.argmax(np.isfinite(col))) == spec.warmup_bars, (tf, spec.name)
