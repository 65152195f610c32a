"""Per-bar trading intents: the one form that a policy-driven and a rule-driven book both produce.

``core.policy.decide_arrays`` (model predictions) and the baselines of ``core.strategies`` return a
``BarSignals``, so the portfolio backtester runs either book the same way. Arrays share one shape:
``(n_bars,)`` for one symbol, ``(n_bars, n_symbols)`` for a universe (``stack_signals``).

Timing: the intent of bar t is decided with data up to and including t's close; a new position
enters at t + 1's open (the fill simulator's rule, spec 001 §10.1), and only if the book holds no
position in that symbol. Protection prices are computed from bar t's close (the decision price),
``sl = close − d·k_sl·ATR``, ``tp = close + d·k_tp·ATR`` with ATR the 15m ATR available at t's close.
``exit_long`` / ``exit_short`` ask the book to close an open long / short at t + 1's open (a rule
strategy's discretionary exit); the model policy never sets them: its positions end at SL, TP or the
time limit. A simulator that ignores them runs SL/TP/time exits only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

#: Field names in order, with their dtypes.
SIGNAL_DTYPES: dict[str, type] = {
    "direction": np.int8,
    "size_fraction": np.float64,
    "leverage": np.int16,
    "sl_price": np.float64,
    "tp_price": np.float64,
    "exit_long": np.bool_,
    "exit_short": np.bool_,
    "reasons": np.int64,
}


@dataclass(frozen=True, slots=True)
class BarSignals:
    """Entry intents and discretionary exits per bar (and symbol).

    - ``direction`` int8: +1 open a long, −1 open a short, 0 no entry.
    - ``size_fraction`` float64: notional of the entry as a fraction of equity at entry time (0 where
      ``direction`` is 0); the book sizes ``notional = size_fraction · equity``.
    - ``leverage`` int16: leverage of the entry (0 where ``direction`` is 0).
    - ``sl_price`` / ``tp_price`` float64: stop-loss / take-profit price in USDT (NaN where
      ``direction`` is 0).
    - ``exit_long`` / ``exit_short`` bool: close an open long / short at the next open.
    - ``reasons`` int64: ``core.policy.BlockReason`` bits of why no entry was taken (0 = not blocked).
    """

    direction: np.ndarray
    size_fraction: np.ndarray
    leverage: np.ndarray
    sl_price: np.ndarray
    tp_price: np.ndarray
    exit_long: np.ndarray
    exit_short: np.ndarray
    reasons: np.ndarray

    def __post_init__(self) -> None:
        shape = self.direction.shape
        for f in fields(self):
            a = getattr(self, f.name)
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != SIGNAL_DTYPES[f.name]:
                got = (getattr(a, "dtype", type(a)), getattr(a, "shape", None))
                raise ValueError(
                    f"BarSignals.{f.name} must be {np.dtype(SIGNAL_DTYPES[f.name])} of shape {shape}, got {got}"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.direction.shape)

    def __len__(self) -> int:
        return len(self.direction)


def empty_signals(shape: int | tuple[int, ...]) -> BarSignals:
    """Return signals with no entry and no exit anywhere (NaN prices, zero sizes)."""
    shp = (shape,) if isinstance(shape, int) else tuple(shape)
    return BarSignals(
        direction=np.zeros(shp, np.int8),
        size_fraction=np.zeros(shp),
        leverage=np.zeros(shp, np.int16),
        sl_price=np.full(shp, np.nan),
        tp_price=np.full(shp, np.nan),
        exit_long=np.zeros(shp, np.bool_),
        exit_short=np.zeros(shp, np.bool_),
        reasons=np.zeros(shp, np.int64),
    )


def stack_signals(per_symbol: Sequence[BarSignals]) -> BarSignals:
    """Stack one-symbol signals of equal length into ``(n_bars, n_symbols)`` arrays, in the given order."""
    if not per_symbol:
        raise ValueError("stack_signals needs at least one symbol")
    lengths = {s.shape for s in per_symbol}
    if len(lengths) != 1 or len(per_symbol[0].shape) != 1:
        raise ValueError(f"stack_signals needs 1-d signals of one length, got shapes {sorted(lengths)}")
    cols = {name: np.stack([getattr(s, name) for s in per_symbol], axis=1) for name in SIGNAL_DTYPES}
    return BarSignals(**cols)
