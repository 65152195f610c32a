"""Bollinger-band mean reversion (the ``bollinger_band`` baseline of seed 002, which names it only).

Reversion rather than breakout: the Donchian baseline already covers breakouts, so the three
baselines span trend following, breakout and mean reversion; and a band re-entry is the classic
Bollinger use on short bars. On complete ``timeframe`` bars (default 15m), SMA ``period`` ± ``num_std``
population std of closes (TA-Lib BBANDS):

- Long entry when a bar closes back inside from below: ``close[k−1] < lower[k−1]`` and
  ``close[k] > lower[k]``; short entry mirrored on the upper band.
- Long exit while the last closed bar is at or above the middle band (``close ≥ SMA``); short exit
  at or below it.

Entries are events: the intent is set only on the 1m bar whose close is the coarse bar's close,
so a stopped-out trade is not re-entered on the same band touch. Exits are states.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field

from core.config import LabelSpec, PolicyConfig
from core.signals import BarSignals
from core.strategies.base import StrategyConfig, Timeframe, build_signals, check_candles, coarse_view
from core.ta import rolling_std, sma


class BollingerConfig(StrategyConfig):
    """Parameters of ``bollinger_reversion``."""

    timeframe: Timeframe = Field("15m", description="bars of the bands")
    period: int = Field(20, ge=2, le=1000, description="SMA and std window, bars")
    num_std: float = Field(2.0, gt=0, le=10, description="band half-width, population std of closes")


def bollinger_reversion(
    candles: Mapping[str, np.ndarray],
    cfg: BollingerConfig | None = None,
    *,
    policy: PolicyConfig | None = None,
    label_spec: LabelSpec | None = None,
    atr: np.ndarray | None = None,
) -> BarSignals:
    """Return the Bollinger mean-reversion intents per 1m bar (module doc). Uses bars up to and
    including each bar; ``atr``: the label ATR per 1m bar for SL/TP (default ``core.labels.label_atr``)."""
    cfg = cfg if cfg is not None else BollingerConfig()
    c = check_candles(candles)
    view = coarse_view(c, cfg.timeframe)
    close = view.bars["close"]
    mid = sma(close, cfg.period)
    sd = rolling_std(close, cfg.period)
    lower, upper = mid - cfg.num_std * sd, mid + cfg.num_std * sd
    prev_close, prev_lower, prev_upper = (np.concatenate(([np.nan], x[:-1])) for x in (close, lower, upper))
    with np.errstate(invalid="ignore"):
        long_c = (prev_close < prev_lower) & (close > lower)
        short_c = (prev_close > prev_upper) & (close < upper)
        exit_long_c = close >= mid
        exit_short_c = close <= mid
    long_entry = view.take_mask(long_c) & view.closes_now
    short_entry = view.take_mask(short_c) & view.closes_now
    exit_long, exit_short = view.take_mask(exit_long_c), view.take_mask(exit_short_c)
    return build_signals(c, long_entry, short_entry, exit_long, exit_short, cfg, policy, label_spec, atr)
