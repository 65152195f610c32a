"""The RL agent's observation (spec 001 §25.2): 17 numbers per decision bar, one builder for all.

The gymnasium environment (``rl.env``) and serving (the RL policy deployment) both call
``build_observations``, so the agent sees in production exactly what it was trained on. It is
vectorised over bars: the environment builds a whole episode at once (position dims zero) and fills
the three position dims per step with ``position_row``, the function the builder uses for them.

A decision is taken at the close of a 1m bar t and uses only what is known then: the model outputs
on bar t's feature row (``core.model.MultiTargetModel``), bar t's feature row (``core.features_schema``:
each feature uses data up to t's close) and the book after bar t.

The 17 dims, in order (``OBS_NAMES``); returns and PnL in percent, so that typical values are O(1):

==  ==============  ===============================  =========================================
 i  name            source                           transform
==  ==============  ===============================  =========================================
 0  er_long         model output ``er_long``         ×100: expected net return of a long, %
 1  q05_long        model output ``q05_long``        ×100: its 5% quantile, %
 2  e_mae_long      model output ``e_mae_long``      ×100: expected adverse excursion, %
 3  e_hold_long     model output ``e_hold_long``     ÷ ``hold_norm_min`` (label horizon, minutes)
 4  ret_1           ``f_1m_ret_1``                   ×100: last 1m log return, %
 5  ret_5           ``f_1m_ret_5``                   ×100: last 5m log return, %
 6  rsi             ``f_1m_rsi``                     (rsi − 50) / 50, in [−1, 1]
 7  macd_z          ``f_1m_macd_z``                  as is (MACD histogram in ATRs)
 8  bb_z            ``f_1m_bb_z``                    as is (Bollinger z)
 9  vol_z           ``f_1m_vol_z``                   as is (volume z-score)
10  atr             ``f_1m_natr``                    as is: ATR / close, % (the spec's "atr" made
                                                     scale-free; a raw USDT ATR is not comparable
                                                     across symbols or time)
11  adx             ``f_1m_adx``                     ÷ 100, in [0, 1]
12  funding_z       ``f_1m_funding_z``               as is (z of the funding rate in force)
13  btc_regime      ``f_15m_btc_regime``             code − 1: −1 calm, 0 normal, +1 high vol
                                                     (the policy's regime column)
14  position        book: side of the open position  −1 short, 0 flat, +1 long
15  position_time   book: 1m bars held               ÷ ``hold_norm_min`` (label horizon)
16  unrealized_pnl  book: side·(mark − entry)/entry  ×100: unrealized return of the position, %
==  ==============  ===============================  =========================================

Only the long side's four outputs are inputs (the spec's table); a short's prospects are in the
market dims and the agent learns them. Every value that is not a finite number (a feature in its
warm-up, a missing prediction) becomes 0, the neutral value of every dim above, and every value is
clipped to ±``OBS_CLIP``: the observation is always finite, as PPO needs. float32, like the space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

OBS_DIM = 17
#: Model outputs read, in observation order (dims 0–3).
PREDICTION_INPUTS: tuple[str, ...] = ("er_long", "q05_long", "e_mae_long", "e_hold_long")
#: Feature columns read, in observation order (dims 4–13), keyed by the spec's names.
FEATURE_INPUTS: Mapping[str, str] = {
    "ret_1": "f_1m_ret_1",
    "ret_5": "f_1m_ret_5",
    "rsi": "f_1m_rsi",
    "macd_z": "f_1m_macd_z",
    "bb_z": "f_1m_bb_z",
    "vol_z": "f_1m_vol_z",
    "atr": "f_1m_natr",
    "adx": "f_1m_adx",
    "funding_z": "f_1m_funding_z",
    "btc_regime": "f_15m_btc_regime",
}
POSITION_INPUTS: tuple[str, ...] = ("position", "position_time", "unrealized_pnl")
OBS_NAMES: tuple[str, ...] = (*PREDICTION_INPUTS, *FEATURE_INPUTS, *POSITION_INPUTS)
#: First position dim: dims ``[MARKET_DIMS, OBS_DIM)`` describe the book, the others the market.
MARKET_DIMS = len(PREDICTION_INPUTS) + len(FEATURE_INPUTS)
OBS_CLIP = 10.0
#: Default time scale of e_hold and position_time: ``LabelSpec().h_bars`` (360 1m bars).
DEFAULT_HOLD_NORM_MIN = 360.0

# (scale, offset) of each market dim: value · scale + offset
_MARKET_AFFINE: tuple[tuple[float, float], ...] = (
    (100.0, 0.0), (100.0, 0.0), (100.0, 0.0), (1.0, 0.0),  # e_hold's scale is set per call
    (100.0, 0.0), (100.0, 0.0), (1 / 50, -1.0), (1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (1.0, 0.0),
    (1 / 100, 0.0), (1.0, 0.0), (1.0, -1.0),
)  # fmt: skip
assert len(OBS_NAMES) == OBS_DIM and len(_MARKET_AFFINE) == MARKET_DIMS


def _finite_clipped(x: np.ndarray) -> np.ndarray:
    out = np.where(np.isfinite(x), x, 0.0)
    return np.clip(out, -OBS_CLIP, OBS_CLIP)


def position_row(
    side: float, bars_held: float, unrealized_return: float, hold_norm_min: float = DEFAULT_HOLD_NORM_MIN
) -> tuple[float, float, float]:
    """Return dims 14–16 (position, position_time, unrealized_pnl) of one book state.

    ``side`` −1/0/+1; ``bars_held`` 1m bars the position has been held; ``unrealized_return``
    ``side·(mark − entry)/entry`` as a fraction. A flat book (side 0) gives zeros whatever the rest.
    Scalar and cheap: the environment calls it on every step.
    """
    if side == 0.0 or not math.isfinite(side):
        return 0.0, 0.0, 0.0
    held = bars_held / hold_norm_min
    pnl = unrealized_return * 100.0
    held = min(max(held, -OBS_CLIP), OBS_CLIP) if math.isfinite(held) else 0.0
    pnl = min(max(pnl, -OBS_CLIP), OBS_CLIP) if math.isfinite(pnl) else 0.0
    return float(side), held, pnl


def build_observations(
    predictions: Mapping[str, np.ndarray] | None,
    features: Mapping[str, np.ndarray],
    *,
    side: np.ndarray | float = 0.0,
    bars_held: np.ndarray | float = 0.0,
    unrealized_return: np.ndarray | float = 0.0,
    hold_norm_min: float = DEFAULT_HOLD_NORM_MIN,
) -> np.ndarray:
    """Return the observations of n decision bars, float32 of shape (n, 17) (module table).

    ``predictions``: the model outputs by name (``PREDICTION_INPUTS`` at least; arrays of length n, or
    scalars), None for none (dims 0–3 zero); ``features``: feature columns by schema name
    (``FEATURE_INPUTS``' values; a DataFrame works); the book: ``side``, ``bars_held`` and
    ``unrealized_return`` per bar or scalars (default: flat). Row i uses only row i of every input.
    Raises KeyError naming a missing input, ValueError for lengths that do not agree.
    """
    if hold_norm_min <= 0:
        raise ValueError(f"hold_norm_min must be > 0, got {hold_norm_min}")
    columns: list[np.ndarray] = []
    for name in PREDICTION_INPUTS:
        if predictions is None:
            columns.append(np.zeros(1))
        elif name not in predictions:
            raise KeyError(f"observation: predictions lack {name!r}")
        else:
            columns.append(np.atleast_1d(np.asarray(predictions[name], np.float64)))
    for name, feature in FEATURE_INPUTS.items():
        if feature not in features:
            raise KeyError(f"observation: features lack {feature!r} ({name})")
        columns.append(np.atleast_1d(np.asarray(features[feature], np.float64)))
    lengths = {len(c) for c in columns if len(c) != 1}
    if len(lengths) > 1:
        raise ValueError(f"observation: inputs of different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 1
    out = np.empty((n, OBS_DIM), np.float64)
    for i, (column, (scale, offset)) in enumerate(zip(columns, _MARKET_AFFINE, strict=True)):
        if OBS_NAMES[i] == "e_hold_long":
            scale = 1.0 / hold_norm_min
        out[:, i] = column * scale + offset
    out[:, :MARKET_DIMS] = _finite_clipped(out[:, :MARKET_DIMS])
    book = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, np.float64)) for x in (side, bars_held,
                                                                                    unrealized_return)))  # fmt: skip
    if len(book[0]) not in (1, n):
        raise ValueError(f"observation: book inputs of length {len(book[0])}, market inputs of {n}")
    if len(book[0]) == 1:
        out[:, MARKET_DIMS:] = position_row(
            float(book[0][0]), float(book[1][0]), float(book[2][0]), hold_norm_min
        )
    else:
        for i in range(n):
            out[i, MARKET_DIMS:] = position_row(float(book[0][i]), float(book[1][i]), float(book[2][i]),
                                                hold_norm_min)  # fmt: skip
    return out.astype(np.float32)
