"""Episodes of the RL environment: one symbol's bars of one walk-forward test window, precomputed.

An ``EpisodeData`` holds everything ``rl.env.TradingEnv`` reads, as arrays over the episode's bars:
the market rows the simulator steps through (last-price open/close, mark OHLC, quote volume, funding
rate, the slippage/barrier ATR: ``core.sim.MarketPanel``'s) and the 14 market dims of the observation
(``core.rl_obs``: model outputs and features of each bar). Nothing is computed while stepping.

Predictions must be out of sample: ``fold_episodes`` predicts a fold's test window with the model
refitted on that fold's training data (``tune`` cuts the folds: ``Fold.test_start_ms/test_end_ms``;
``rl`` does not import ``tune``, so the window comes as two times). It refuses a model whose stated
training end (``trained_until_ms``, or ``train_end_ms`` in its metadata) lies after the window start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from core.features_schema import FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import MultiTargetModel
from core.rl_obs import DEFAULT_HOLD_NORM_MIN, MARKET_DIMS, PREDICTION_INPUTS, build_observations
from core.sim import MarketPanel

#: The per-bar market columns of an episode (each stored as a C-contiguous (n, 1) float64 column).
MARKET_COLUMNS: tuple[str, ...] = ("open", "close", "mark_open", "mark_high", "mark_low", "mark_close",
                                   "quote_volume", "funding_rate", "atr")  # fmt: skip


@dataclass(frozen=True, slots=True)
class EpisodeData:
    """One symbol's bars [0, n) of a window: ``ts`` (int64 open times, epoch ms, a regular grid), the
    ``MARKET_COLUMNS`` as (n, 1) float64 columns (the simulator's one-symbol rows), and ``market_obs``
    (n, 14) float32: observation dims 0–13 of each bar (``core.rl_obs``). ``fold``: the walk-forward fold
    the window is the test window of (−1: none)."""

    symbol: str
    ts: np.ndarray
    open: np.ndarray
    close: np.ndarray
    mark_open: np.ndarray
    mark_high: np.ndarray
    mark_low: np.ndarray
    mark_close: np.ndarray
    quote_volume: np.ndarray
    funding_rate: np.ndarray
    atr: np.ndarray
    market_obs: np.ndarray
    fold: int = -1

    def __post_init__(self) -> None:
        n = len(self.ts)
        if self.ts.dtype != np.int64 or self.ts.ndim != 1:
            raise ValueError(f"episode: ts must be 1-d int64, got {self.ts.dtype} {self.ts.shape}")
        if n < 2:
            raise ValueError(f"episode: needs at least 2 bars, got {n}")
        for name in MARKET_COLUMNS:
            a = getattr(self, name)
            if a.shape != (n, 1) or a.dtype != np.float64 or not a.flags.c_contiguous:
                raise ValueError(f"episode: {name} must be C-contiguous float64 of shape ({n}, 1)")
        if self.market_obs.shape != (n, MARKET_DIMS) or self.market_obs.dtype != np.float32:
            raise ValueError(f"episode: market_obs must be float32 of shape ({n}, {MARKET_DIMS})")

    def __len__(self) -> int:
        return len(self.ts)

    def rows(self, start: int, stop: int) -> EpisodeData:
        """The bars [start, stop) as an episode of their own (copies, contiguous)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("ts", *MARKET_COLUMNS, "market_obs"):
            values[name] = np.ascontiguousarray(values[name][start:stop])
        return EpisodeData(**values)

    @classmethod
    def from_columns(
        cls,
        symbol: str,
        ts: np.ndarray,
        market: Mapping[str, np.ndarray],
        market_obs: np.ndarray,
        *,
        fold: int = -1,
    ) -> EpisodeData:
        """Build from 1-d market columns (``MARKET_COLUMNS``) and the (n, ≥ 14) observations."""
        n = len(ts)
        cols = {
            name: np.ascontiguousarray(np.asarray(market[name], np.float64).reshape(n, 1))
            for name in MARKET_COLUMNS
        }
        obs = np.ascontiguousarray(np.asarray(market_obs)[:, :MARKET_DIMS], np.float32)
        return cls(symbol, np.asarray(ts, np.int64), market_obs=obs, fold=fold, **cols)


def episode_from_panel(
    panel: MarketPanel,
    symbol: str,
    features: pd.DataFrame,
    predictions: Mapping[str, np.ndarray] | None,
    *,
    fold: int = -1,
    hold_norm_min: float = DEFAULT_HOLD_NORM_MIN,
) -> EpisodeData:
    """The episode of ``symbol`` over all of ``panel``'s bars.

    ``features``: that symbol's feature rows (``ts`` and the schema columns); ``predictions``: model
    outputs aligned with those rows (arrays of ``len(features)``), None for none. A panel bar without a
    feature row gets NaN features and predictions (observation dims 0: neutral).
    """
    k = panel.symbols.index(symbol)
    n = len(panel.ts)
    where = pd.Index(np.asarray(features["ts"], np.int64)).get_indexer(panel.ts)
    have = where >= 0

    def aligned(values: np.ndarray) -> np.ndarray:
        out = np.full(n, np.nan)
        out[have] = np.asarray(values, np.float64)[where[have]]
        return out

    feats = {c: aligned(features[c].to_numpy()) for c in features.columns if c != "ts"}
    preds = None if predictions is None else {p: aligned(predictions[p]) for p in PREDICTION_INPUTS}
    obs = build_observations(preds, feats, hold_norm_min=hold_norm_min)
    market = {name: getattr(panel, name)[:, k] for name in MARKET_COLUMNS}
    return EpisodeData.from_columns(symbol, panel.ts, market, obs, fold=fold)


def fold_episodes(
    panel: MarketPanel,
    features: Mapping[str, pd.DataFrame],
    model: MultiTargetModel,
    *,
    test_start_ms: int,
    test_end_ms: int,
    fold: int = -1,
    symbols: Sequence[str] | None = None,
    trained_until_ms: int | None = None,
    hold_norm_min: float = DEFAULT_HOLD_NORM_MIN,
) -> list[EpisodeData]:
    """One episode per symbol over a fold's test window [test_start_ms, test_end_ms), with ``model``'s
    out-of-sample predictions on each bar's feature row.

    ``panel``: the market (any span covering the window; cut to it here); ``features``: feature rows by
    symbol (``ts`` + schema columns; features are causal, so rows computed on a longer history are the
    rows of the window). ``model`` must be the fold's, fitted on data before the window: a training end
    (``trained_until_ms`` or the model's ``train_end_ms`` metadata) after ``test_start_ms`` raises.
    """
    stated = trained_until_ms if trained_until_ms is not None else model.metadata.get("train_end_ms")
    if stated is not None and int(stated) > int(test_start_ms):
        raise ValueError(
            f"fold {fold}: model trained until {int(stated)}, after the test window starts at "
            f"{int(test_start_ms)}: its predictions there would be in sample"
        )
    in_window = (panel.ts >= test_start_ms) & (panel.ts < test_end_ms)
    rows = np.flatnonzero(in_window)
    if len(rows) < 2:
        raise ValueError(f"fold {fold}: the panel has {len(rows)} bar(s) in the test window")
    a, b = int(rows[0]), int(rows[-1]) + 1
    window = MarketPanel(
        panel.symbols,
        np.ascontiguousarray(panel.ts[a:b]),
        bar_ms=panel.bar_ms,
        **{name: np.ascontiguousarray(getattr(panel, name)[a:b]) for name in MARKET_COLUMNS},
    )
    out = []
    for symbol in symbols or panel.symbols:
        frame = features[symbol]
        ts = np.asarray(frame["ts"], np.int64)
        rows_f = frame.loc[(ts >= test_start_ms) & (ts < test_end_ms)].reset_index(drop=True)
        preds = (
            model.predict(rows_f, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, num_threads=1) if len(rows_f) else None
        )
        out.append(episode_from_panel(window, symbol, rows_f, preds, fold=fold, hold_norm_min=hold_norm_min))
    return out
