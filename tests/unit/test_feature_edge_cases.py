"""Feature edge cases on real bars (issue #13 §2): flat funding, a halted market, a long flat stretch.

Real 1m candles and funding of ../shared/data/binance_um. ENAUSDT and LAYERUSDT settled 21 equal
rates (5e-5) in a row several times, as recorded. The halt is spliced into real ENAUSDT candles:
``HALT_MINUTES`` minutes at the last real close, with zero volume, then the real market again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from feature_samples import replay

from core.config import LabelSpec
from core.features import FeatureFrame, build_inputs, compute_features
from core.features_kernel import ATR_FLOOR_REL, W_FUNDING
from core.labels import LabelStatus, label_atr, label_bars
from core.resample import resample_candles
from core.ta import atr_wilder
from core.time import HOUR_MS, MINUTE_MS

SYMBOL = "ENAUSDT"
HALT_START = 20_000  # row of the first halted minute
HALT_MINUTES = 6_000  # long enough for the 1m and 15m ATR to decay below the floor (not the 1h one)
HALT_END = HALT_START + HALT_MINUTES
TIMEFRAMES = {"1m": MINUTE_MS, "15m": 15 * MINUTE_MS, "1h": HOUR_MS}
NO_FUNDING = {"ts": np.empty(0, np.int64), "funding_rate": np.empty(0)}


def _load(shared_data: Path, symbol: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    root = shared_data / "binance_um"
    k = pd.read_parquet(root / "klines_1m" / f"{symbol}.parquet")
    f = pd.read_parquet(root / "funding" / f"{symbol}.parquet")
    candles = {"ts": k["open_time"].to_numpy(np.int64), **{c: k[c].to_numpy(np.float64) for c in
               ("open", "high", "low", "close", "volume")}}  # fmt: skip
    funding = {
        "ts": f["funding_time"].to_numpy(np.int64),
        "funding_rate": f["funding_rate"].to_numpy(np.float64),
    }
    assert np.all(np.diff(candles["ts"]) == MINUTE_MS), f"{symbol}: the set has no missing bars"
    return candles, funding


@pytest.fixture(scope="module")
def halted(shared_data: Path) -> dict[str, np.ndarray]:
    """Real ENAUSDT candles with a halt spliced in: constant price, zero volume."""
    candles, _ = _load(shared_data, SYMBOL)
    out = {k: v.copy() for k, v in candles.items()}
    price = candles["close"][HALT_START - 1]
    for name in ("open", "high", "low", "close"):
        out[name][HALT_START:HALT_END] = price
    out["volume"][HALT_START:HALT_END] = 0.0
    return out


@pytest.fixture(scope="module")
def halted_frame(halted: dict[str, np.ndarray]) -> FeatureFrame:
    return compute_features({SYMBOL: build_inputs(halted)})[SYMBOL]


def _bars(candles: dict[str, np.ndarray], interval_ms: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The complete bars of a timeframe and, per bar, the merged row that carries its features (the
    row of its last 1m bar: the set has no gaps)."""
    bars = candles if interval_ms == MINUTE_MS else resample_candles(candles, MINUTE_MS, interval_ms)
    rows = np.searchsorted(candles["ts"], bars["ts"] + interval_ms - MINUTE_MS)
    return bars, rows


@pytest.mark.parametrize("symbol", ["ENAUSDT", "LAYERUSDT"])
def test_funding_z_is_zero_when_the_last_21_real_settled_rates_are_equal(shared_data, symbol):
    candles, funding = _load(shared_data, symbol)
    frame = compute_features({symbol: build_inputs(candles, funding=funding)})[symbol]
    ts, f_ts, f_rate = candles["ts"], funding["ts"], funding["funding_rate"]
    for tf, interval_ms in TIMEFRAMES.items():
        # funding in force at the close of the bar behind each row; the events that timeframe has seen
        close = (ts + MINUTE_MS) // interval_ms * interval_ms
        seen = f_ts >= f_ts[np.searchsorted(f_ts, close[close - interval_ms >= ts[0]][0], "right") - 1]
        ev_ts, ev_rate = f_ts[seen], f_rate[seen]
        j = np.searchsorted(ev_ts, close, "right") - 1
        has_z = (close - interval_ms >= ts[0]) & (j >= W_FUNDING - 1)
        window = np.lib.stride_tricks.sliding_window_view(ev_rate, W_FUNDING)[j[has_z] - (W_FUNDING - 1)]
        flat = (window == window[:, :1]).all(axis=1)
        z = frame.column(f"f_{tf}_funding_z")[has_z]
        assert flat.sum() >= 1000 // (interval_ms // MINUTE_MS), (symbol, tf, "expected flat funding windows")
        # was -1: the two-pass sd of 21 equal rates is a rounding residue, not 0
        assert (z[flat] == 0.0).all(), (symbol, tf, np.unique(z[flat]))
        w = window[~flat]
        expected = (ev_rate[j[has_z][~flat]] - w.mean(axis=1)) / w.std(axis=1)
        np.testing.assert_allclose(z[~flat], expected, rtol=1e-9, atol=1e-12, err_msg=f"{symbol} {tf}")


@pytest.mark.parametrize("tf", TIMEFRAMES)
def test_autocorr_is_nan_while_a_sub_window_holds_only_zero_returns_and_pearson_otherwise(
    halted, halted_frame, tf
):
    bars, rows = _bars(halted, TIMEFRAMES[tf])
    got = halted_frame.column(f"f_{tf}_autocorr_60")[rows]
    r = np.diff(np.log(bars["close"]))  # r[k] is the return of bar k + 1
    win = np.lib.stride_tricks.sliding_window_view(r, 60)  # win[k]: the 60 returns up to bar k + 60
    x, y = win[:, :-1], win[:, 1:]
    zero_sub = (x == 0.0).all(axis=1) | (y == 0.0).all(axis=1)
    got = got[60:]
    assert zero_sub.sum() > 30 and (~zero_sub[-100:]).all(), "the halt, then the real market again"
    # was 5.9e-10 (15m) where the running sums left a residue in an all-zero sub-window
    assert np.isnan(got[zero_sub]).all(), (tf, got[zero_sub][~np.isnan(got[zero_sub])][:5])
    xc = x[~zero_sub] - x[~zero_sub].mean(axis=1, keepdims=True)
    yc = y[~zero_sub] - y[~zero_sub].mean(axis=1, keepdims=True)
    pearson = (xc * yc).sum(axis=1) / np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    np.testing.assert_allclose(got[~zero_sub], pearson, rtol=0, atol=1e-8, err_msg=tf)


@pytest.mark.parametrize("tf", TIMEFRAMES)
def test_atr_below_its_floor_counts_as_zero_in_a_long_flat_stretch_and_is_talib_again_after(
    halted, halted_frame, tf
):
    bars, rows = _bars(halted, TIMEFRAMES[tf])
    h, lo, c = bars["high"], bars["low"], bars["close"]
    wilder = talib.ATR(h, lo, c, 14)
    floor = wilder < ATR_FLOOR_REL * c
    halt = (bars["ts"] >= halted["ts"][HALT_START]) & (bars["ts"] < halted["ts"][HALT_END])
    after = bars["ts"] >= halted["ts"][HALT_END]
    assert not floor[~halt].any(), "the floor never fires on the real market"
    if tf != "1h":  # 100 hourly bars of the halt leave the 1h ATR above the floor
        assert floor[halt].sum() > 50, tf
    ok = ~np.isnan(wilder) & ~floor
    atr = halted_frame.column(f"f_{tf}_atr")[rows]
    # was down to 1e-196 (1m) and 1e-15 (15m) of the price: Wilder's decay never reaches 0 by itself
    assert (atr[floor] == 0.0).all() and (halted_frame.column(f"f_{tf}_natr")[rows][floor] == 0.0).all()
    np.testing.assert_allclose(atr[ok], wilder[ok], rtol=1e-9, err_msg=tf)
    _, _, hist = talib.MACD(c, 12, 26, 9)
    for name, expected in (
        ("ema_dist_atr", (c - talib.EMA(c, 50)) / wilder),  # was up to 1e181 (1m), 1e6 (15m)
        ("macd_z", hist / wilder),
        ("range_atr", (h - lo) / wilder),
    ):
        got = halted_frame.column(f"f_{tf}_{name}")[rows]
        assert np.isnan(got[floor]).all(), (tf, name)
        both = ok & ~np.isnan(expected)
        np.testing.assert_allclose(got[both], expected[both], rtol=1e-9, atol=1e-9, err_msg=f"{tf} {name}")
        assert np.nanmax(np.abs(got)) < 1e4, (tf, name, np.nanmax(np.abs(got)))
        assert np.isfinite(got[after]).all(), (tf, name, "normal values after the halt")


def test_incremental_features_equal_batch_through_the_halt(halted, halted_frame):
    online = replay({SYMBOL: build_inputs(halted)})[SYMBOL]
    assert np.array_equal(online, halted_frame.values, equal_nan=True)


@pytest.mark.parametrize("tf", ["1m", "15m"])
def test_batch_atr_and_label_atr_count_an_atr_below_the_floor_as_zero_like_the_features(
    halted, halted_frame, tf
):
    bars, rows = _bars(halted, TIMEFRAMES[tf])
    atr = atr_wilder(bars["high"], bars["low"], bars["close"], 14)
    features_atr = halted_frame.column(f"f_{tf}_atr")[rows]
    np.testing.assert_allclose(atr, features_atr, rtol=1e-12, atol=0.0, err_msg=tf)
    assert (atr == 0.0).sum() > 50
    per_1m = label_atr(halted["ts"], halted["high"], halted["low"], halted["close"], tf, 14)
    np.testing.assert_array_equal(per_1m[rows], atr)


def test_labels_in_a_long_flat_stretch_have_no_atr_and_normal_labels_after_it(halted):
    spec = LabelSpec(atr_timeframe="15m", h_bars=60)
    labels = label_bars(halted, NO_FUNDING, spec)
    deep = np.arange(HALT_START + 2000, HALT_END - 100)  # the 15m ATR is below its floor there
    # was OK (y = 0) with barriers from an ATR of 2e-15 … 5e-7 of the price
    assert (labels.status[deep] == LabelStatus.ATR_UNAVAILABLE).all()
    after = np.arange(HALT_END + 3000, HALT_END + 4000)
    assert (labels.status[after] == LabelStatus.OK).all()
