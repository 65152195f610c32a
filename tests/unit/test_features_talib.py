"""Classic indicators agree with TA-Lib (warm-up included) on 1m and on 15m/1h bars."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from feature_samples import (
    ATOL,
    assert_matches,
    higher_timeframe_inputs,
    run_timeframe,
    synthetic_group,
    talib_reference,
)

from core.features import INPUT_COLUMNS, SymbolInputs, compute_features
from core.features_kernel import FEATURES
from core.features_schema import FEATURE_INDEX
from core.time import HOUR_MS, MINUTE_MS

F = {name: i for i, name in enumerate(FEATURES)}
COL = {name: i for i, name in enumerate(INPUT_COLUMNS)}


@pytest.fixture(scope="module")
def last_only():
    """ETH and BTC without mark data, so ATR is the last-price ATR TA-Lib computes."""
    group = synthetic_group(days=25)
    out = {}
    for s in ("BTCUSDT", "ETHUSDT"):
        v = group[s].values.copy()
        v[:, [COL["mark_high"], COL["mark_low"], COL["mark_close"]]] = np.nan
        out[s] = SymbolInputs(group[s].ts_ms, v)
    return out


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_1m_classic_indicators_equal_talib(last_only, symbol):
    frame = compute_features(last_only)[symbol]
    ref = talib_reference(last_only[symbol].values)
    for name, expected in ref.items():
        assert_matches(frame.column(f"f_1m_{name}"), expected, name, ATOL.get(name, 1e-9))


@pytest.mark.parametrize("interval_ms", [15 * MINUTE_MS, HOUR_MS])
def test_higher_timeframe_classic_indicators_equal_talib_on_their_own_bars(last_only, interval_ms):
    bars = higher_timeframe_inputs(last_only["ETHUSDT"], interval_ms)
    feats, _ = run_timeframe(bars)
    for name, expected in talib_reference(bars.values).items():
        assert_matches(feats[:, F[name]], expected, name, ATOL.get(name, 1e-9))


def test_atr_uses_the_mark_price_where_mark_data_exists():
    group = synthetic_group(days=25)
    x = group["ETHUSDT"].values
    frame = compute_features({"ETHUSDT": group["ETHUSDT"]})["ETHUSDT"]
    mark = talib.ATR(x[:, COL["mark_high"]], x[:, COL["mark_low"]], x[:, COL["mark_close"]], 14)
    assert_matches(frame.column("f_1m_atr"), mark, "mark atr", 1e-9)
    last = talib.ATR(x[:, COL["high"]], x[:, COL["low"]], x[:, COL["close"]], 14)
    assert not np.allclose(mark[14:], last[14:])
    # 15m: the kernel aggregates mark high/low/close of the 15 bars like the candles
    bars = higher_timeframe_inputs(group["ETHUSDT"], 15 * MINUTE_MS)
    feats, _ = run_timeframe(bars)
    b = bars.values
    ref = talib.ATR(b[:, COL["mark_high"]], b[:, COL["mark_low"]], b[:, COL["mark_close"]], 14)
    assert_matches(feats[:, F["atr"]], ref, "15m mark atr", 1e-9)


def test_flat_windows_give_neutral_oscillators_where_talib_gives_zero():
    """Deliberate difference: a flat market is neutral (RSI 50, MFI 50, WILLR -50), not 0."""
    n = 200
    x = np.zeros((n, len(INPUT_COLUMNS)))
    x[:, :4] = 100.0
    x[:, COL["volume"]] = 1.0
    x[:, 5:] = np.nan
    ts = np.arange(n, dtype=np.int64) * MINUTE_MS
    frame = compute_features({"ETHUSDT": SymbolInputs(ts, x)})["ETHUSDT"]
    row = frame.values[-1]
    assert row[FEATURE_INDEX["f_1m_rsi"]] == 50.0 and talib.RSI(x[:, 3], 14)[-1] == 0.0
    assert row[FEATURE_INDEX["f_1m_mfi"]] == 50.0
    assert row[FEATURE_INDEX["f_1m_willr"]] == -50.0
    assert row[FEATURE_INDEX["f_1m_adx"]] == 0.0 and row[FEATURE_INDEX["f_1m_di_diff"]] == 0.0
    assert row[FEATURE_INDEX["f_1m_bb_z"]] == 0.0 and row[FEATURE_INDEX["f_1m_vol_z"]] == 0.0
    assert row[FEATURE_INDEX["f_1m_vol_60"]] == 0.0
    for name in ("skew_60", "kurt_60", "autocorr_60", "range_atr", "macd_z", "ema_dist_atr"):
        assert np.isnan(row[FEATURE_INDEX[f"f_1m_{name}"]]), name
