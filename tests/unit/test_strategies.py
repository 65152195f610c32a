"""Baseline strategies: indicators vs TA-Lib, no look-ahead, the seed rules on hand-built and reference
series, SL/TP and size in the policy's form, determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import LabelSpec, PolicyConfig
from core.errors import DataQualityError
from core.policy import BlockReason
from core.signals import SIGNAL_DTYPES, BarSignals, empty_signals, stack_signals
from core.strategies import (
    BASELINES,
    BollingerConfig,
    DonchianConfig,
    TrendConfig,
    bollinger_reversion,
    donchian_breakout,
    ema_atr_rsi_trend,
)
from core.synthetic import generate_market
from core.ta import ema, prior_max, prior_min, rolling_std, rsi_wilder, sma
from core.time import MINUTE_MS, interval_ms

START = 1_717_200_000_000  # 2024-06-01 00:00 UTC
FIELDS = tuple(SIGNAL_DTYPES)


@pytest.fixture(scope="module")
def candles() -> dict[str, np.ndarray]:
    m = generate_market(["ETHUSDT"], START, 6 * 1440, seed=7)
    return {k: np.asarray(v) for k, v in m.candles_1m["ETHUSDT"].items()}


@pytest.fixture(scope="module")
def gapped(candles) -> dict[str, np.ndarray]:
    keep = np.ones(len(candles["ts"]), bool)
    keep[3000:3011] = False
    keep[5000] = False
    return {k: v[keep] for k, v in candles.items()}


def _cut(c: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    return {k: v[: t + 1] for k, v in c.items()}


def _assert_equal_signals(a: BarSignals, b: BarSignals, upto: int | None = None) -> None:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if upto is not None:
            x, y = x[:upto], y[:upto]
        np.testing.assert_array_equal(x, y, err_msg=f)


def _from_closes(closes, volume=None, spread=0.25) -> dict[str, np.ndarray]:
    c = np.asarray(closes, float)
    o = np.concatenate(([c[0]], c[:-1]))
    return {
        "ts": START + np.arange(len(c), dtype=np.int64) * MINUTE_MS,
        "open": o,
        "high": np.maximum(o, c) + spread,
        "low": np.minimum(o, c) - spread,
        "close": c,
        "volume": np.full(len(c), 10.0) if volume is None else np.asarray(volume, float),
    }


# --- indicators ----------------------------------------------------------------------------------------


def test_indicators_match_talib():
    rng = np.random.default_rng(3)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    np.testing.assert_allclose(ema(x, 20), talib.EMA(x, 20), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(sma(x, 20), talib.SMA(x, 20), rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(rolling_std(x, 20), talib.STDDEV(x, 20, 1), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(rsi_wilder(x, 14), talib.RSI(x, 14), rtol=1e-10, equal_nan=True)
    shifted_max = np.concatenate(([np.nan], talib.MAX(x, 10)[:-1]))
    shifted_min = np.concatenate(([np.nan], talib.MIN(x, 10)[:-1]))
    np.testing.assert_array_equal(prior_max(x, 10), shifted_max)
    np.testing.assert_array_equal(prior_min(x, 10), shifted_min)


def test_rsi_of_a_flat_window_is_neutral():
    assert rsi_wilder(np.full(20, 5.0), 14)[-1] == 50.0


# --- no look-ahead -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("data", ["candles", "gapped"])
@settings(max_examples=8, deadline=None)
@given(frac=st.floats(0.05, 1.0))
def test_signals_on_truncated_history_equal_full_history(name, data, frac, request):
    c = request.getfixturevalue(data)
    fn, cfg = BASELINES[name]
    full = fn(c, cfg)
    t = min(len(c["ts"]) - 1, int(frac * len(c["ts"])))
    _assert_equal_signals(fn(_cut(c, t), cfg), full, upto=t + 1)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_trade_both_sides_on_a_synthetic_week_and_are_deterministic(name, candles):
    fn, cfg = BASELINES[name]
    a, b = fn(candles, cfg), fn(candles, cfg)
    _assert_equal_signals(a, b)
    assert (a.direction == 1).any() and (a.direction == -1).any()
    assert a.exit_long.any() and a.exit_short.any()


# --- the rules against a literal plain-Python reference (TA-Lib indicators, pandas bars) -------------


def _coarse_reference(c: dict[str, np.ndarray], timeframe: str):
    """Complete coarse bars via pandas, and per 1m bar (k, fresh, closes_now), written out bar by bar."""
    cm = interval_ms(timeframe)
    df = pd.DataFrame({k: c[k] for k in ("ts", "open", "high", "low", "close", "volume")})
    df["b"] = df["ts"] // cm * cm
    g = df.groupby("b").agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), n=("ts", "size"),
    )  # fmt: skip
    g = g[g["n"] == cm // MINUTE_MS]
    starts = g.index.to_numpy()
    per_bar = []
    for ts in c["ts"]:
        now = int(ts) + MINUTE_MS
        closed = np.flatnonzero(starts + cm <= now)
        if len(closed) == 0:
            per_bar.append((-1, False, False))
            continue
        k = int(closed[-1])
        fresh = starts[k] + 2 * cm > now
        per_bar.append((k, fresh, fresh and starts[k] + cm == now))
    return {col: g[col].to_numpy(float) for col in ("open", "high", "low", "close", "volume")}, per_bar


def _reference_trend(c, cfg: TrendConfig):
    bars, per_bar = _coarse_reference(c, cfg.timeframe)
    fast, slow = talib.EMA(bars["close"], cfg.ema_fast), talib.EMA(bars["close"], cfg.ema_slow)
    atr = talib.ATR(bars["high"], bars["low"], bars["close"], cfg.atr_period)
    rsi = talib.RSI(bars["close"], cfg.rsi_period)
    vol, w = bars["volume"], cfg.volume_window
    out = []
    for q, (k, fresh, _) in enumerate(per_bar):
        if not fresh:
            out.append((False, False, False, False))
            continue
        p = c["close"][q]
        vol_ok = k >= w - 1 and vol[k] > cfg.volume_min_ratio * vol[k - w + 1 : k + 1].mean()
        calm = atr[k] / p < cfg.max_atr_pct
        long_ = fast[k] > slow[k] and p > slow[k] and calm and 30 <= rsi[k] <= 65 and vol_ok
        short = fast[k] < slow[k] and p < slow[k] and calm and 35 <= rsi[k] <= 70 and vol_ok
        out.append((long_, short, fast[k] < slow[k] or rsi[k] > 75, fast[k] > slow[k] or rsi[k] < 25))
    return np.array(out, bool).T


def _reference_bollinger(c, cfg: BollingerConfig):
    bars, per_bar = _coarse_reference(c, cfg.timeframe)
    close = bars["close"]
    upper, mid, lower = talib.BBANDS(close, cfg.period, cfg.num_std, cfg.num_std)
    out = []
    for k, fresh, now in per_bar:
        if not fresh:
            out.append((False, False, False, False))
            continue
        long_ = now and k >= 1 and close[k - 1] < lower[k - 1] and close[k] > lower[k]
        short = now and k >= 1 and close[k - 1] > upper[k - 1] and close[k] < upper[k]
        out.append((long_, short, close[k] >= mid[k], close[k] <= mid[k]))
    return np.array(out, bool).T


def _reference_donchian(c, cfg: DonchianConfig):
    bars, per_bar = _coarse_reference(c, cfg.timeframe)
    h, lo, close = bars["high"], bars["low"], bars["close"]
    n, m = cfg.entry_window, cfg.exit_window
    out = []
    for k, fresh, now in per_bar:
        if not fresh:
            out.append((False, False, False, False))
            continue
        long_ = now and k >= n and close[k] > h[k - n : k].max()
        short = now and k >= n and close[k] < lo[k - n : k].min()
        out.append(
            (
                long_,
                short,
                k >= m and close[k] < lo[k - m : k].min(),
                k >= m and close[k] > h[k - m : k].max(),
            )
        )
    return np.array(out, bool).T


def _expected_direction(long_, short, exit_long, exit_short, atr):
    long_, short = long_ & ~exit_long, short & ~exit_short
    d = np.where(long_ & ~short, 1, np.where(short & ~long_, -1, 0))
    return np.where(np.isfinite(atr) & (atr > 0), d, 0)


@pytest.mark.parametrize(
    ("fn", "cfg", "reference"),
    [
        (ema_atr_rsi_trend, TrendConfig(), _reference_trend),
        (ema_atr_rsi_trend, TrendConfig(timeframe="15m", ema_fast=10, ema_slow=30), _reference_trend),
        (bollinger_reversion, BollingerConfig(), _reference_bollinger),
        (bollinger_reversion, BollingerConfig(timeframe="1m", period=30, num_std=2.5), _reference_bollinger),
        (donchian_breakout, DonchianConfig(), _reference_donchian),
        (
            donchian_breakout,
            DonchianConfig(timeframe="1h", entry_window=10, exit_window=5),
            _reference_donchian,
        ),
    ],
    ids=["trend-1h", "trend-15m", "bollinger-15m", "bollinger-1m", "donchian-15m", "donchian-1h"],
)
@pytest.mark.parametrize("data", ["candles", "gapped"])
def test_rules_match_plain_python_reference(fn, cfg, reference, data, request):
    c = request.getfixturevalue(data)
    atr = np.full(len(c["ts"]), 2.0)
    atr[:500] = np.nan  # label ATR warm-up: no entry without a stop
    s = fn(c, cfg, atr=atr)
    long_, short, exit_long, exit_short = reference(c, cfg)
    assert long_.any() and short.any()
    np.testing.assert_array_equal(s.exit_long, exit_long)
    np.testing.assert_array_equal(s.exit_short, exit_short)
    np.testing.assert_array_equal(s.direction, _expected_direction(long_, short, exit_long, exit_short, atr))


def test_event_entries_fire_only_when_the_coarse_bar_closes(candles):
    s = donchian_breakout(candles)
    at = candles["ts"][s.direction != 0] + MINUTE_MS
    assert len(at) and np.all(at % interval_ms("15m") == 0)


# --- hand-built series: the seed's rules one by one ----------------------------------------------------

SMALL_TREND = TrendConfig(timeframe="1m", ema_fast=3, ema_slow=6, atr_period=3, rsi_period=4, volume_window=3)
FLAT_ATR = 1.0


def _steps(pattern, n, start=1000.0):
    return start + np.cumsum(np.resize(np.asarray(pattern, float), n))


def test_trend_enters_long_in_an_orderly_uptrend():
    c = _from_closes(_steps([3.0, -2.0], 40))
    s = ema_atr_rsi_trend(c, SMALL_TREND, atr=np.full(40, FLAT_ATR))
    assert (s.direction[20:] == 1).sum() >= 5 and not (s.direction == -1).any()
    assert not s.exit_long[20:].any()


def test_trend_enters_short_in_an_orderly_downtrend_unless_short_is_off():
    c = _from_closes(_steps([-3.0, 2.0], 40))
    s = ema_atr_rsi_trend(c, SMALL_TREND, atr=np.full(40, FLAT_ATR))
    assert (s.direction[20:] == -1).sum() >= 5 and not (s.direction == 1).any()
    long_only = ema_atr_rsi_trend(
        c, TrendConfig(**{**SMALL_TREND.model_dump(), "allow_short": False}), atr=np.full(40, 1.0)
    )
    assert not long_only.direction.any() and not long_only.exit_short.any()


def test_trend_overbought_rsi_exits_and_blocks_entry():
    c = _from_closes(_steps([5.0, -0.5], 40))  # RSI far above 75
    s = ema_atr_rsi_trend(c, SMALL_TREND, atr=np.full(40, FLAT_ATR))
    assert not s.direction.any()
    assert s.exit_long[10:].all()


def test_trend_volatility_filter_blocks_entry():
    c = _from_closes(_steps([3.0, -2.0], 40))
    cfg = TrendConfig(**{**SMALL_TREND.model_dump(), "max_atr_pct": 0.001})  # ATR ≈ 3 on ≈ 1000: 0.3%
    assert not ema_atr_rsi_trend(c, cfg, atr=np.full(40, FLAT_ATR)).direction.any()


def test_trend_low_volume_bar_blocks_entry():
    closes = _steps([3.0, -2.0], 40)
    base = ema_atr_rsi_trend(_from_closes(closes), SMALL_TREND, atr=np.full(40, FLAT_ATR))
    q = int(np.flatnonzero(base.direction == 1)[-1])
    volume = np.full(40, 10.0)
    volume[q] = 1.0  # < 50% of the mean of the last 3 bars
    s = ema_atr_rsi_trend(_from_closes(closes, volume), SMALL_TREND, atr=np.full(40, FLAT_ATR))
    assert s.direction[q] == 0
    np.testing.assert_array_equal(s.direction[:q], base.direction[:q])


BB = BollingerConfig(timeframe="1m", period=5, num_std=1.5)


def test_bollinger_long_on_close_back_inside_lower_band_and_exit_at_middle():
    closes = [100.0, 101.0] * 4 + [90.0, 97.0, 99.0, 99.0]
    s = bollinger_reversion(_from_closes(closes), BB, atr=np.full(len(closes), FLAT_ATR))
    np.testing.assert_array_equal(np.flatnonzero(s.direction), [9])
    assert s.direction[9] == 1 and not s.exit_long[9] and s.exit_long[10]


def test_bollinger_short_on_close_back_inside_upper_band():
    closes = [100.0, 101.0] * 4 + [111.0, 104.0, 102.0]
    s = bollinger_reversion(_from_closes(closes), BB, atr=np.full(len(closes), FLAT_ATR))
    np.testing.assert_array_equal(np.flatnonzero(s.direction), [9])
    assert s.direction[9] == -1 and not s.exit_short[9] and s.exit_short[10]


def test_donchian_breakouts_and_exit_channel():
    closes = np.array([100.0, 100.2, 99.8, 100.1, 99.9, 100.0, 101.0, 100.8, 100.5, 99.0])
    c = {
        "ts": START + np.arange(len(closes), dtype=np.int64) * MINUTE_MS,
        "open": closes, "high": closes + 0.5, "low": closes - 0.5, "close": closes,
        "volume": np.ones(len(closes)),
    }  # fmt: skip
    cfg = DonchianConfig(timeframe="1m", entry_window=5, exit_window=3)
    s = donchian_breakout(c, cfg, atr=np.full(len(closes), FLAT_ATR))
    np.testing.assert_array_equal(s.direction, [0, 0, 0, 0, 0, 0, 1, 0, 0, -1])
    np.testing.assert_array_equal(np.flatnonzero(s.exit_long), [9])  # 99.0 < min low of bars 6..8 (100.0)
    np.testing.assert_array_equal(np.flatnonzero(s.exit_short), [6])  # 101.0 > max high of bars 3..5 (100.6)


# --- the policy's form: SL/TP from the close, size and leverage from the preset ------------------------


def test_sl_tp_size_leverage_follow_policy_form(candles):
    atr = np.full(len(candles["ts"]), 2.0)
    policy = PolicyConfig(position_notional_pct=0.1, leverage=2)
    s = donchian_breakout(candles, atr=atr, policy=policy, label_spec=LabelSpec(k_sl=1.0, k_tp=1.5))
    on = s.direction != 0
    d = s.direction[on].astype(float)
    close = candles["close"][on]
    np.testing.assert_array_equal(s.sl_price[on], close - d * 1.0 * 2.0)
    np.testing.assert_array_equal(s.tp_price[on], close + d * 1.5 * 2.0)
    assert np.all(s.size_fraction[on] == 0.1) and np.all(s.leverage[on] == 2)
    assert np.all(s.size_fraction[~on] == 0) and np.all(s.leverage[~on] == 0)
    assert np.isnan(s.sl_price[~on]).all() and np.isnan(s.tp_price[~on]).all()
    wide = donchian_breakout(candles, DonchianConfig(sl_atr=2.0, tp_atr=4.0), atr=atr)
    np.testing.assert_array_equal(wide.sl_price[on], close - d * 4.0)
    np.testing.assert_array_equal(wide.tp_price[on], close + d * 8.0)


def test_default_atr_is_the_label_atr(candles):
    from core.labels import label_atr

    c = candles
    atr = label_atr(c["ts"], c["high"], c["low"], c["close"], "15m", 14)
    _assert_equal_signals(bollinger_reversion(c), bollinger_reversion(c, atr=atr))


def test_entry_without_atr_is_dropped_with_no_atr_reason(candles):
    with_atr = donchian_breakout(candles, atr=np.full(len(candles["ts"]), 2.0))
    s = donchian_breakout(candles, atr=np.full(len(candles["ts"]), np.nan))
    assert not s.direction.any()
    np.testing.assert_array_equal(s.reasons != 0, with_atr.direction != 0)
    assert set(np.unique(s.reasons)) <= {0, int(BlockReason.NO_ATR)}


def test_bad_candles_raise(candles):
    c = dict(candles)
    c["ts"] = c["ts"][::-1].copy()
    with pytest.raises(DataQualityError, match="increasing"):
        ema_atr_rsi_trend(c)
    with pytest.raises(DataQualityError, match="volume"):
        donchian_breakout({k: v for k, v in candles.items() if k != "volume"})
    with pytest.raises(ValueError):
        TrendConfig(ema_fast=50, ema_slow=20)


def test_short_history_gives_no_signal():
    c = _from_closes(np.linspace(100, 101, 30))
    for fn, cfg in BASELINES.values():
        s = fn(c, cfg)
        assert len(s) == 30 and not s.direction.any()


# --- BarSignals ----------------------------------------------------------------------------------------


def test_stack_signals_builds_bars_by_symbols(candles):
    a = ema_atr_rsi_trend(candles)
    b = donchian_breakout(candles)
    s = stack_signals([a, b])
    assert s.shape == (len(candles["ts"]), 2)
    np.testing.assert_array_equal(s.direction[:, 1], b.direction)
    with pytest.raises(ValueError):
        stack_signals([a, empty_signals(3)])


def test_bar_signals_refuse_wrong_dtype():
    e = empty_signals(4)
    with pytest.raises(ValueError, match="direction"):
        BarSignals(**{**{f: getattr(e, f) for f in FIELDS}, "direction": np.zeros(4)})
    assert math.isnan(e.sl_price[0]) and e.shape == (4,)
