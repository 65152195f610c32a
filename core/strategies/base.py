"""What the baseline strategies share: candle checks, causal higher-timeframe bars, the signal form.

A strategy reads 1m candles (ts = bar open, epoch ms, strictly increasing on the 1m grid; gaps
allowed) and returns ``core.signals.BarSignals``: the intent of 1m bar t uses bars up to and
including t; the book enters at t + 1's open. Indicators of a coarser timeframe are computed on
complete coarse bars (``core.resample``, ``complete_only``) and a 1m bar sees the last coarse bar
closed by its own close (``core.ta.last_closed_index``), only while it is fresh (no coarse bar is
missing since). SL/TP follow the policy: ``close_t ∓ k·ATR_t`` with the label ATR (``LabelSpec``'s
timeframe and period, 15m by default) and, unless a strategy overrides them, ``LabelSpec.k_sl`` /
``k_tp``; size and leverage come from ``PolicyConfig``: a baseline trades with exactly the
barriers, costs and sizes of the model it is compared with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.config import LabelSpec, PolicyConfig
from core.errors import DataQualityError
from core.frames import check_columns
from core.labels import label_atr
from core.policy import BlockReason
from core.resample import resample_candles
from core.signals import BarSignals
from core.ta import last_closed_index
from core.time import MINUTE_MS, interval_ms

Timeframe = Literal["1m", "15m", "1h"]


class StrategyConfig(BaseModel):
    """Fields every baseline has. ATR multiples of ``None`` take the LabelSpec's barriers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_short: bool = Field(True, description="also trade the mirrored short rule (perpetual futures)")
    sl_atr: float | None = Field(None, gt=0, description="stop distance in label ATRs; None: LabelSpec.k_sl")
    tp_atr: float | None = Field(
        None, gt=0, description="take-profit distance in label ATRs; None: LabelSpec.k_tp"
    )


def check_candles(candles: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return 1m candle columns (ts int64; open, high, low, close, volume float64) or raise DataQualityError."""
    cols = check_columns("candles_1m", candles)
    ts = cols["ts"]
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        row = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
        raise DataQualityError(f"strategy: ts not strictly increasing at row {row}")
    if len(ts) and np.any(ts % MINUTE_MS):
        raise DataQualityError("strategy: ts off the 1m grid")
    return cols


@dataclass(frozen=True, slots=True)
class CoarseView:
    """Complete bars of one timeframe and, per 1m bar, which of them it may use."""

    bars: Mapping[str, np.ndarray]  # ts (open), open, high, low, close, volume of the coarse bars
    at: np.ndarray  # per 1m bar: index of the last coarse bar closed by its close, −1 if none
    fresh: np.ndarray  # per 1m bar: that coarse bar is the latest one that can have closed
    closes_now: np.ndarray  # per 1m bar: that coarse bar closed exactly at this 1m bar's close

    def take(self, values: np.ndarray) -> np.ndarray:
        """Per 1m bar, ``values`` of its usable coarse bar (NaN where none is fresh)."""
        out = np.full(len(self.at), np.nan)
        out[self.fresh] = values[self.at[self.fresh]]
        return out

    def take_mask(self, mask: np.ndarray) -> np.ndarray:
        """Per 1m bar, ``mask`` of its usable coarse bar (False where none is fresh)."""
        out = np.zeros(len(self.at), np.bool_)
        out[self.fresh] = mask[self.at[self.fresh]]
        return out


def coarse_view(candles: Mapping[str, np.ndarray], timeframe: str) -> CoarseView:
    """Return the complete ``timeframe`` bars of checked 1m candles and their causal alignment."""
    ts = candles["ts"]
    n = len(ts)
    if timeframe == "1m":
        every = np.ones(n, np.bool_)
        return CoarseView(candles, np.arange(n, dtype=np.int64), every, every.copy())
    coarse_ms = interval_ms(timeframe)
    cols = {k: candles[k] for k in ("ts", "open", "high", "low", "close", "volume")}
    bars = resample_candles(cols, MINUTE_MS, coarse_ms)
    at = last_closed_index(ts, MINUTE_MS, bars["ts"], coarse_ms)
    src = np.maximum(at, 0)
    bar_close = bars["ts"][src] + coarse_ms if len(bars["ts"]) else np.zeros(n, np.int64)
    fresh = (at >= 0) & (bar_close + coarse_ms > ts + MINUTE_MS)
    closes_now = fresh & (bar_close == ts + MINUTE_MS)
    return CoarseView(bars, at, fresh, closes_now)


def build_signals(
    candles: Mapping[str, np.ndarray],
    long_entry: np.ndarray,
    short_entry: np.ndarray,
    exit_long: np.ndarray,
    exit_short: np.ndarray,
    cfg: StrategyConfig,
    policy: PolicyConfig | None,
    label_spec: LabelSpec | None,
    atr: np.ndarray | None,
) -> BarSignals:
    """Turn per-1m-bar rule masks into BarSignals: sides, SL/TP from the close and the label ATR, size.

    An entry whose own exit rule fires on the same bar is dropped; an entry without a positive ATR
    is dropped with NO_ATR.
    """
    policy = policy if policy is not None else PolicyConfig()
    label_spec = label_spec if label_spec is not None else LabelSpec()
    ts, high, low, close = candles["ts"], candles["high"], candles["low"], candles["close"]
    if atr is None:
        atr = label_atr(ts, high, low, close, label_spec.atr_timeframe, label_spec.atr_period)
    atr = np.asarray(atr, np.float64)
    if atr.shape != ts.shape:
        raise DataQualityError(f"strategy: atr has shape {atr.shape}, candles {ts.shape}")
    long_entry = long_entry & ~exit_long
    short_entry = short_entry & ~exit_short & cfg.allow_short
    if not cfg.allow_short:
        exit_short = np.zeros_like(exit_short)
    wanted = np.where(long_entry & ~short_entry, 1, np.where(short_entry & ~long_entry, -1, 0)).astype(
        np.int8
    )
    ok_atr = (atr > 0) & np.isfinite(atr) & (close > 0)
    direction = np.where(ok_atr, wanted, 0).astype(np.int8)
    reasons = np.where((wanted != 0) & ~ok_atr, int(BlockReason.NO_ATR), 0).astype(np.int64)
    k_sl = cfg.sl_atr if cfg.sl_atr is not None else label_spec.k_sl
    k_tp = cfg.tp_atr if cfg.tp_atr is not None else label_spec.k_tp
    d = direction.astype(np.float64)
    on = direction != 0
    with np.errstate(invalid="ignore"):
        sl = np.where(on, close - d * k_sl * atr, np.nan)
        tp = np.where(on, close + d * k_tp * atr, np.nan)
    bad_stop = on & ~(sl > 0)
    if bad_stop.any():
        direction[bad_stop] = 0
        reasons[bad_stop] |= int(BlockReason.STOP_INVALID)
        sl[bad_stop] = np.nan
        tp[bad_stop] = np.nan
        on = direction != 0
    leverage = min(policy.leverage, policy.max_leverage)
    return BarSignals(
        direction=direction,
        size_fraction=np.where(on, policy.position_notional_pct, 0.0),
        leverage=np.where(on, leverage, 0).astype(np.int16),
        sl_price=sl,
        tp_price=tp,
        exit_long=np.asarray(exit_long, np.bool_),
        exit_short=np.asarray(exit_short, np.bool_),
        reasons=reasons,
    )
