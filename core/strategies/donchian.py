"""Donchian channel breakout (seed 002's ``breakout_high`` / ``kosdaq_donchian``, which it names only;
rules of the classic Turtle system).

On complete ``timeframe`` bars (default 15m):

- Long entry when a bar closes above the highest high of the ``entry_window`` bars before it;
  short entry when it closes below their lowest low.
- Long exit while the last closed bar's close is below the lowest low of the ``exit_window`` bars
  before it; short exit above their highest high.

Entries are events (only on the 1m bar whose close is the coarse bar's close); exits are states.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field, model_validator

from core.config import LabelSpec, PolicyConfig
from core.signals import BarSignals
from core.strategies.base import StrategyConfig, Timeframe, build_signals, check_candles, coarse_view
from core.ta import prior_max, prior_min


class DonchianConfig(StrategyConfig):
    """Parameters of ``donchian_breakout`` (Turtle system 1: 20-bar entry, 10-bar exit)."""

    timeframe: Timeframe = Field("15m", description="bars of the channels")
    entry_window: int = Field(20, ge=1, le=5000, description="bars of the entry channel")
    exit_window: int = Field(10, ge=1, le=5000, description="bars of the exit channel")

    @model_validator(mode="after")
    def _exit_shorter(self) -> DonchianConfig:
        if self.exit_window > self.entry_window:
            raise ValueError(
                f"exit_window ({self.exit_window}) must not exceed entry_window ({self.entry_window})"
            )
        return self


def donchian_breakout(
    candles: Mapping[str, np.ndarray],
    cfg: DonchianConfig | None = None,
    *,
    policy: PolicyConfig | None = None,
    label_spec: LabelSpec | None = None,
    atr: np.ndarray | None = None,
) -> BarSignals:
    """Return the Donchian breakout intents per 1m bar (module doc). Uses bars up to and including
    each bar; ``atr``: the label ATR per 1m bar for SL/TP (default ``core.labels.label_atr``)."""
    cfg = cfg if cfg is not None else DonchianConfig()
    c = check_candles(candles)
    view = coarse_view(c, cfg.timeframe)
    b = view.bars
    close = b["close"]
    with np.errstate(invalid="ignore"):
        long_c = close > prior_max(b["high"], cfg.entry_window)
        short_c = close < prior_min(b["low"], cfg.entry_window)
        exit_long_c = close < prior_min(b["low"], cfg.exit_window)
        exit_short_c = close > prior_max(b["high"], cfg.exit_window)
    long_entry = view.take_mask(long_c) & view.closes_now
    short_entry = view.take_mask(short_c) & view.closes_now
    exit_long, exit_short = view.take_mask(exit_long_c), view.take_mask(exit_short_c)
    return build_signals(c, long_entry, short_entry, exit_long, exit_short, cfg, policy, label_spec, atr)
