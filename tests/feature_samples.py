"""Shared inputs and drivers of the feature tests: synthetic groups, an incremental replay, HTF bars."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import talib

from core.features import INPUT_COLUMNS, FeatureEngine, SymbolInputs, build_inputs
from core.features_kernel import CROSS_TF_LEN, N_MERGED, N_TF_FEATURES, new_tf_state, run_bars
from core.resample import resample_candles
from core.synthetic import generate_market
from core.time import MINUTE_MS, parse_utc

START_MS = parse_utc("2024-06-03")  # a Monday
_COL = {name: i for i, name in enumerate(INPUT_COLUMNS)}
GROUP = ("BTCUSDT", "ETHUSDT", "ENAUSDT", "DOGEUSDT")


@lru_cache(maxsize=4)
def synthetic_group(
    days: int = 25, seed: int = 7, symbols: tuple[str, ...] = GROUP
) -> dict[str, SymbolInputs]:
    """Synthetic inputs with every dataset (taker, mark, premium, funding) for a group including BTC."""
    m = generate_market(symbols, START_MS, days * 1440, seed=seed)
    return {s: build_inputs(m.candles_1m[s], m.mark_1m[s], m.premium_1m[s], m.funding[s]) for s in symbols}


def with_gaps(inputs: SymbolInputs, fraction: float, seed: int) -> SymbolInputs:
    """Drop a random ``fraction`` of the bars (never the first)."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(inputs)) >= fraction
    keep[0] = True
    return SymbolInputs(inputs.ts_ms[keep], np.ascontiguousarray(inputs.values[keep]))


def replay(inputs: Mapping[str, SymbolInputs], engine: FeatureEngine | None = None) -> dict[str, np.ndarray]:
    """Feed every bar through ``FeatureEngine.update``, one call per 1m ts with all symbols that have
    a bar then; return each symbol's rows aligned with its own ts."""
    engine = engine or FeatureEngine(list(inputs))
    syms = engine.symbols
    all_ts = np.unique(np.concatenate([inputs[s].ts_ms for s in syms if s in inputs]))
    n_sym = len(syms)
    x = np.zeros((len(all_ts), n_sym, len(INPUT_COLUMNS)))
    closed = np.zeros((len(all_ts), n_sym), bool)
    rows = {s: np.empty((len(inputs[s]), N_MERGED)) for s in syms if s in inputs}
    where = {}
    for k, s in enumerate(syms):
        if s not in inputs:
            continue
        pos = np.searchsorted(all_ts, inputs[s].ts_ms)
        x[pos, k] = inputs[s].values
        closed[pos, k] = True
        where[s] = pos
    out = np.empty((len(all_ts), n_sym, N_MERGED))
    for i, t in enumerate(all_ts):
        _, status = engine.update(int(t), x[i], closed[i], out=out[i])
        assert np.all(status[closed[i]] == 0), status
    for k, s in enumerate(syms):
        if s in inputs:
            rows[s][:] = out[where[s], k]
    return rows


def higher_timeframe_inputs(inputs: SymbolInputs, interval_ms: int) -> SymbolInputs:
    """Build complete 15m/1h bars with ``core.resample`` (independently of the kernel's accumulator)."""
    col = {name: inputs.values[:, k] for k, name in enumerate(INPUT_COLUMNS)}
    candles = {"ts": inputs.ts_ms, **{k: col[k] for k in ("open", "high", "low", "close", "volume")},
               "taker_buy_volume": col["taker_buy_volume"]}  # fmt: skip
    bars = resample_candles(candles, MINUTE_MS, interval_ms)
    mark = resample_candles({"ts": inputs.ts_ms, "high": col["mark_high"], "low": col["mark_low"],
                             "close": col["mark_close"]}, MINUTE_MS, interval_ms)  # fmt: skip
    prem = resample_candles({"ts": inputs.ts_ms, "close": col["premium_close"]}, MINUTE_MS, interval_ms)
    x = np.full((len(bars["ts"]), len(INPUT_COLUMNS)), np.nan)
    for k, name in enumerate(INPUT_COLUMNS[:6]):
        x[:, k] = bars[name]
    x[:, 6], x[:, 7], x[:, 8] = mark["high"], mark["low"], mark["close"]
    x[:, 9] = prem["close"]
    # funding in force at the coarse bar's close = at the close of its last 1m bar
    last_1m = np.searchsorted(inputs.ts_ms, bars["ts"] + interval_ms - MINUTE_MS)
    x[:, 10] = col["funding_rate"][last_1m]
    x[:, 11] = col["funding_time_ms"][last_1m]
    return SymbolInputs(bars["ts"], x)


def run_timeframe(
    bars: SymbolInputs, btc_context: np.ndarray | None = None, is_btc: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Run one timeframe's kernel over ``bars``; return (features (n, 44), BTC context per bar)."""
    n = len(bars)
    cross = np.full((n, CROSS_TF_LEN), np.nan) if btc_context is None else np.ascontiguousarray(btc_context)
    out = np.empty((n, N_TF_FEATURES))
    run_bars(bars.ts_ms, bars.values, new_tf_state(), cross, is_btc, out)
    return out, cross


def talib_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """TA-Lib's value of each classic feature for bars ``x`` (INPUT_COLUMNS), last-price ATR."""
    h, lo, c, v = (x[:, _COL[k]] for k in ("high", "low", "close", "volume"))
    atr = talib.ATR(h, lo, c, 14)
    _, _, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, _ = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    r = np.concatenate(([np.nan], np.diff(np.log(c))))
    return {
        "rsi": talib.RSI(c, 14),
        "atr": atr,
        "natr": talib.NATR(h, lo, c, 14),
        "adx": talib.ADX(h, lo, c, 14),
        "di_diff": talib.PLUS_DI(h, lo, c, 14) - talib.MINUS_DI(h, lo, c, 14),
        "willr": talib.WILLR(h, lo, c, 14),
        "mfi": talib.MFI(h, lo, c, v, 14),
        "macd_z": hist / atr,
        "ema_dist_atr": (c - talib.EMA(c, 50)) / atr,
        "bb_z": (c - middle) / ((upper - middle) / 2.0),
        "vol_60": talib.STDDEV(r, 60, 1.0),
        "range_atr": (h - lo) / atr,
        "dist_high_60": c / talib.MAX(h, 60) - 1.0,
        "dist_low_60": c / talib.MIN(lo, 60) - 1.0,
    }


def assert_matches(got: np.ndarray, ref: np.ndarray, name: str, atol: float) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (
        f"{name}: warm-up/NaN differs (first {np.argmax(~np.isnan(got))} vs {np.argmax(~np.isnan(ref))})"
    )
    ok = ~np.isnan(ref)
    assert ok.sum() > 100, name
    err = np.abs(got[ok] - ref[ok]) - 1e-9 * np.abs(ref[ok])
    assert err.max() <= atol, f"{name}: max error {err.max()} at {np.flatnonzero(ok)[np.argmax(err)]}"


# absolute tolerance beyond 1e-9 relative (default 1e-9; small-valued features tighter)
ATOL = {"vol_60": 1e-15, "dist_high_60": 1e-15, "dist_low_60": 1e-15}
