"""Conservative EMA/ATR/RSI trend following (seed 003 §3, ``ConservativeStrategy``), on perpetuals.

Seed rules, evaluated on the strategy's timeframe (``timeframe``; the seed runs on 60-minute
candles, so the default is "1h") with the 1m close as the current price:

- Long entry, all of: ① fast EMA > slow EMA; ② price > slow EMA; ③ ATR / price < 3%;
  ④ 30 ≤ RSI ≤ 65; ⑤ volume > 50% of its average.
- Long exit, any of: ① fast EMA < slow EMA; ② RSI > 75.

The seed also asks for "confidence ≥ 0.6" without defining it; since all five conditions are
already required, we add no score (any confidence reading that needs all five is at least as
strict). The seed trades spot and cannot short; on perpetuals ``allow_short`` (default on) adds the
mirror image: fast < slow, price < slow, ATR / price < 3%, 35 ≤ RSI ≤ 70 (= 100 − 65 … 100 − 30),
volume as above; short exit fast > slow or RSI < 25. ``allow_short=False`` is the seed exactly.

Conditions are states, as in the seed (which re-evaluates them every tick): the entry intent holds
on every 1m bar where they do, and the book enters when flat. The EMA periods are not in the seed;
20/50 is our choice (the seed keeps 200 hourly candles, enough for both). Indicator bars: EMA
(TA-Lib seed), Wilder ATR and RSI of the strategy's timeframe; "volume" is the last closed bar's
volume against the mean of the last ``volume_window`` bars including it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field, model_validator

from core.config import LabelSpec, PolicyConfig
from core.signals import BarSignals
from core.strategies.base import StrategyConfig, Timeframe, build_signals, check_candles, coarse_view
from core.ta import atr_wilder, ema, rsi_wilder, sma


class TrendConfig(StrategyConfig):
    """Parameters of ``ema_atr_rsi_trend``; defaults follow seed 003 §3 where it gives numbers."""

    timeframe: Timeframe = Field("1h", description="bars of the indicators (seed: 60-minute candles)")
    ema_fast: int = Field(20, ge=2, le=1000, description="fast EMA period, bars")
    ema_slow: int = Field(50, ge=3, le=2000, description="slow EMA period, bars")
    atr_period: int = Field(14, ge=2, le=500, description="Wilder ATR period of the volatility filter, bars")
    max_atr_pct: float = Field(0.03, gt=0, le=1, description="ATR / price must be below this (seed: 3%)")
    rsi_period: int = Field(14, ge=2, le=500, description="Wilder RSI period, bars")
    rsi_entry_min: float = Field(30.0, ge=0, le=100, description="long entry needs RSI ≥ this (seed: 30)")
    rsi_entry_max: float = Field(65.0, ge=0, le=100, description="long entry needs RSI ≤ this (seed: 65)")
    rsi_exit: float = Field(75.0, ge=0, le=100, description="long exit when RSI > this (seed: 75)")
    volume_window: int = Field(20, ge=1, le=1000, description="bars in the volume average")
    volume_min_ratio: float = Field(
        0.5, ge=0, description="volume must exceed this × its average (seed: 50%)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrendConfig:
        if self.ema_fast >= self.ema_slow:
            raise ValueError(f"ema_fast ({self.ema_fast}) must be below ema_slow ({self.ema_slow})")
        if not self.rsi_entry_min < self.rsi_entry_max < self.rsi_exit:
            raise ValueError("need rsi_entry_min < rsi_entry_max < rsi_exit")
        return self


def ema_atr_rsi_trend(
    candles: Mapping[str, np.ndarray],
    cfg: TrendConfig | None = None,
    *,
    policy: PolicyConfig | None = None,
    label_spec: LabelSpec | None = None,
    atr: np.ndarray | None = None,
) -> BarSignals:
    """Return the seed 003 trend strategy's intents per 1m bar (module doc). Uses bars up to and
    including each bar; ``atr``: the label ATR per 1m bar for SL/TP (default ``core.labels.label_atr``)."""
    cfg = cfg if cfg is not None else TrendConfig()
    c = check_candles(candles)
    view = coarse_view(c, cfg.timeframe)
    b = view.bars
    fast = view.take(ema(b["close"], cfg.ema_fast))
    slow = view.take(ema(b["close"], cfg.ema_slow))
    vol_atr = view.take(atr_wilder(b["high"], b["low"], b["close"], cfg.atr_period))
    rsi = view.take(rsi_wilder(b["close"], cfg.rsi_period))
    with np.errstate(invalid="ignore"):
        volume_ok = view.take_mask(b["volume"] > cfg.volume_min_ratio * sma(b["volume"], cfg.volume_window))
    price = c["close"]
    with np.errstate(invalid="ignore", divide="ignore"):
        calm = vol_atr / price < cfg.max_atr_pct
    lo, hi, ex = cfg.rsi_entry_min, cfg.rsi_entry_max, cfg.rsi_exit
    long_entry = (fast > slow) & (price > slow) & calm & (rsi >= lo) & (rsi <= hi) & volume_ok
    short_entry = (fast < slow) & (price < slow) & calm & (rsi >= 100 - hi) & (rsi <= 100 - lo) & volume_ok
    exit_long = (fast < slow) | (rsi > ex)
    exit_short = (fast > slow) | (rsi < 100 - ex)
    return build_signals(c, long_entry, short_entry, exit_long, exit_short, cfg, policy, label_spec, atr)
