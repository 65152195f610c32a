"""A model's policy through the portfolio backtester: predictions → policy signals → ``run_backtest``.

One path for every caller: the walk-forward evaluation of a configuration and its pooled out-of-sample
backtest (``tune.trainable``), the last fold's backtest of demo and research, and the ``backtest`` job.
``backtest_model`` predicts feature rows with a model and backtests them; ``backtest_predictions`` does
the same with predictions already made (several fold models pooled into one window).

The model is anything with ``core.model.MultiTargetModel``'s ``predict``; the feature rows anything
with a training set's arrays (``tune.dataset.TrainingSet`` has them): this module imports nothing
above ``pipelines``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.features_schema import FEATURE_NAMES, KEY_COLUMNS
from core.policy import PREDICTION_KEYS, BlockReason
from core.signals import BarSignals
from core.sim import BacktestResult, MarketPanel, SimConfig, run_backtest
from core.strategies import BASELINES
from pipelines.backtest import load_panel, policy_signals
from pipelines.baselines import run_baselines
from storage.lake import Lake

#: Symbol whose ``f_15m_btc_regime`` feature gates the policy.
BTC_SYMBOL = "BTCUSDT"
_BTC_REGIME = FEATURE_NAMES.index(KEY_COLUMNS["btc_regime"])


class FeatureModel(Protocol):
    """What a backtest needs of a model (``core.model.MultiTargetModel`` is one)."""

    def predict(
        self, X: np.ndarray, feature_schema_version: int, feature_schema_hash: str, *, num_threads: int = 0
    ) -> dict[str, np.ndarray]: ...


class FeatureRows(Protocol):
    """Feature rows of several symbols sorted by time (``tune.dataset.TrainingSet`` is one): ``X`` n × 132
    in schema order, ``ts_ms`` decision bar open times, ``symbol`` each row's symbol."""

    @property
    def X(self) -> np.ndarray: ...

    @property
    def ts_ms(self) -> np.ndarray: ...

    @property
    def symbol(self) -> np.ndarray: ...

    @property
    def feature_schema_version(self) -> int: ...

    @property
    def feature_schema_hash(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ModelBacktest:
    """A model's backtest and what led to it: the rows' predictions, the same on the panel's
    bars × symbols grid (NaN where no row), and the policy's signals."""

    result: BacktestResult
    predictions: dict[str, np.ndarray]
    grid: dict[str, np.ndarray]
    signals: BarSignals


def predictions_on_panel(
    panel: MarketPanel, ts_ms: np.ndarray, symbol: np.ndarray, predictions: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Place per-row predictions on the panel's bars × symbols grid; NaN (the policy stays flat) elsewhere."""
    n, m = len(panel.ts), len(panel.symbols)
    column = {s: j for j, s in enumerate(panel.symbols)}
    cols = np.array([column.get(s, -1) for s in symbol], dtype=np.int64)
    rows = np.searchsorted(panel.ts, ts_ms)
    ok = (cols >= 0) & (rows < n)
    ok[ok] &= panel.ts[rows[ok]] == ts_ms[ok]
    out: dict[str, np.ndarray] = {}
    for key in PREDICTION_KEYS:
        grid = np.full((n, m), np.nan)
        grid[rows[ok], cols[ok]] = np.asarray(predictions[key], dtype=np.float64)[ok]
        out[key] = grid
    return out


def btc_regime_on_panel(rows: FeatureRows, panel: MarketPanel, btc_symbol: str = BTC_SYMBOL) -> np.ndarray:
    """BTC's 15m regime code (from ``btc_symbol``'s rows) on the panel's bars as a (bars, 1) column; NaN
    where unknown (warm-up, no BTC row), which the policy treats as high volatility, as the realtime
    decider (``actors.decide.decide_symbols``) does. Uses each bar's own feature (data up to its close)."""
    mine = rows.symbol == btc_symbol
    regime = pd.Series(rows.X[mine, _BTC_REGIME], index=rows.ts_ms[mine])
    values = regime.reindex(panel.ts).to_numpy(np.float64) if len(regime) else np.full(len(panel.ts), np.nan)
    return values.reshape(-1, 1)


def backtest_predictions(
    rows: FeatureRows,
    window: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    panel: MarketPanel,
    *,
    policy: PolicyConfig,
    label_spec: LabelSpec,
    sim: SimConfig,
    risk: RiskConfig,
    btc_symbol: str = BTC_SYMBOL,
) -> ModelBacktest:
    """Backtest the policy on ``predictions`` of the rows ``window`` (indices into ``rows``) over ``panel``.

    The BTC regime comes from every row of ``rows``, not only the window's.
    """
    grid = predictions_on_panel(panel, rows.ts_ms[window], rows.symbol[window], predictions)
    signals = policy_signals(panel, grid, btc_regime_on_panel(rows, panel, btc_symbol), policy, label_spec)
    result = run_backtest(panel, signals, sim, risk)
    return ModelBacktest(result, dict(predictions), grid, signals)


def backtest_model(
    model: FeatureModel,
    rows: FeatureRows,
    panel: MarketPanel,
    *,
    policy: PolicyConfig,
    label_spec: LabelSpec,
    sim: SimConfig,
    risk: RiskConfig,
    window: np.ndarray | None = None,
    btc_symbol: str = BTC_SYMBOL,
    num_threads: int = 0,
) -> ModelBacktest:
    """Predict the rows ``window`` (indices; None: every row) with ``model`` and backtest its policy over
    ``panel`` with ``sim`` and ``risk``. Deterministic."""
    window = np.arange(len(rows.ts_ms)) if window is None else window
    predicted = model.predict(
        rows.X[window], rows.feature_schema_version, rows.feature_schema_hash, num_threads=num_threads
    )
    return backtest_predictions(
        rows, window, predicted, panel, policy=policy, label_spec=label_spec, sim=sim, risk=risk,
        btc_symbol=btc_symbol,
    )  # fmt: skip


def rows_in(rows: FeatureRows, start_ms: int, end_ms: int) -> np.ndarray:
    """Indices of the rows whose decision bar lies in [start_ms, end_ms)."""
    return np.flatnonzero((rows.ts_ms >= start_ms) & (rows.ts_ms < end_ms))


def model_and_baselines(
    lake: Lake,
    model: FeatureModel,
    rows: FeatureRows,
    symbols: Sequence[str],
    start_ms: int,
    end_ms: int,
    *,
    policy: PolicyConfig,
    label_spec: LabelSpec,
    sim: SimConfig,
    risk: RiskConfig,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, BacktestResult]:
    """The model's policy (as ``"model"``) and every baseline over [start_ms, end_ms) of ``symbols``, on
    one panel and one simulator: the last fold's test window of demo and research.

    With ``diagnostics`` (a dict), it receives ``policy_diagnostics`` of the model's signals.
    """
    panel = load_panel(lake, symbols, start_ms, end_ms)
    run = backtest_model(
        model, rows, panel, policy=policy, label_spec=label_spec, sim=sim, risk=risk,
        window=rows_in(rows, start_ms, end_ms),
    )  # fmt: skip
    if diagnostics is not None:
        predicted_cells = np.isfinite(run.grid[PREDICTION_KEYS[0]])
        diagnostics.update(policy_diagnostics(run.signals.direction, run.signals.reasons, predicted_cells))
    results: dict[str, BacktestResult] = {"model": run.result}
    results.update(
        run_baselines(lake, panel, list(BASELINES), sim=sim, risk=risk, policy=policy, label_spec=label_spec)
    )
    return results


def policy_diagnostics(direction: np.ndarray, reasons: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Counts over the symbol-bars with predictions: entries the policy took and each block reason's hits.

    ``direction``/``reasons`` are the policy's signals (bars × symbols), ``predicted`` marks cells with a
    model prediction. Block reasons are not exclusive: one blocked bar may carry several.
    """
    cells = int(predicted.sum())
    blocked = reasons[predicted]
    return {
        "symbol_bars": cells,
        "entries": int(np.count_nonzero(direction[predicted])),
        "long_entries": int(np.count_nonzero(direction[predicted] > 0)),
        "short_entries": int(np.count_nonzero(direction[predicted] < 0)),
        "ev_blocked": int(
            np.count_nonzero(blocked & (BlockReason.EV_NOT_POSITIVE | BlockReason.EV_BELOW_MIN))
        ),
        "block_reasons": {
            str(r.name): int(np.count_nonzero(blocked & r.value)) for r in BlockReason if r.name is not None
        },
    }
