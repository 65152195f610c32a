"""One rule for an unknown BTC regime: the backtest and the realtime decider hand NaN to the policy, which
treats it as high volatility; both decide identically on a warm-up bar.

The two code paths are the ones the system runs: the backtest's ``pipelines.model_backtest``
(``predictions_on_panel`` + ``btc_regime_on_panel`` → ``backtest_predictions``) and the realtime decider's
pure decision step (``actors.decide.decide_symbols`` on one close's feature rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from actors.decide import decide_symbols
from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.features_schema import FEATURE_INDEX, FEATURE_SCHEMA_VERSION, KEY_COLUMNS, SCHEMA_HASH
from core.policy import PREDICTION_KEYS, BlockReason
from core.sim import MarketPanel, sim_config_for
from pipelines.model_backtest import backtest_predictions, btc_regime_on_panel

SPEC = LabelSpec()
SYMBOLS = ("BTCUSDT", "ETHUSDT")
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
# Bar 0 is a warm-up bar (BTC's regime not yet known), then high volatility, normal, calm.
REGIMES = np.array([np.nan, 2.0, 1.0, 0.0])
N = len(REGIMES)
PRICE = np.array([[30_000.0, 2_000.0]] * N)
ATR = PRICE * 0.01
# Predictions that pass every gate at ATR = 1% of price (the long side is the better one).
GOOD = {
    "er_long": 0.004, "er_short": -0.002, "q05_long": -0.005, "q05_short": -0.02,
    "e_mae_long": 0.005, "e_mae_short": 0.02, "e_hold_long": 60.0, "e_hold_short": 60.0,
}  # fmt: skip


@dataclass(frozen=True)
class Rows:
    """Feature rows of both symbols, sorted by time (what ``tune.dataset.TrainingSet`` holds)."""

    X: np.ndarray
    ts_ms: np.ndarray
    symbol: np.ndarray
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    feature_schema_hash: str = SCHEMA_HASH


def _rows() -> Rows:
    ts = T0 + 60_000 * np.arange(N, dtype=np.int64)
    X = np.zeros((N * len(SYMBOLS), len(FEATURE_INDEX)))
    # Every symbol's row carries BTC's regime as its f_15m_btc_regime feature (a cross-asset feature).
    X[:, FEATURE_INDEX[KEY_COLUMNS["btc_regime"]]] = np.repeat(REGIMES, len(SYMBOLS))
    return Rows(X, np.repeat(ts, len(SYMBOLS)), np.tile(np.array(SYMBOLS), N))


def _panel() -> MarketPanel:
    close = np.ascontiguousarray(PRICE)
    same = [close.copy() for _ in range(6)]  # open, close, mark open/high/low/close: a flat market
    return MarketPanel(
        SYMBOLS, T0 + 60_000 * np.arange(N, dtype=np.int64), *same,
        np.full(close.shape, 1e9), np.zeros(close.shape), np.ascontiguousarray(ATR),
    )  # fmt: skip


def _predictions(n_rows: int) -> dict[str, np.ndarray]:
    return {k: np.full(n_rows, GOOD[k]) for k in PREDICTION_KEYS}


def test_btc_regime_on_panel_keeps_an_unknown_regime_unknown():
    regime = btc_regime_on_panel(_rows(), _panel())
    assert regime.shape == (N, 1)
    np.testing.assert_array_equal(regime[:, 0], REGIMES)  # NaN stays NaN: no "normal" by default


@pytest.mark.parametrize(
    ("action", "warm_up_size", "warm_up_reasons"),
    [
        ("block", 0.0, BlockReason.BTC_REGIME_UNKNOWN_BLOCK),
        ("size_down", 0.15 * 0.5, BlockReason(0)),
        ("none", 0.15, BlockReason(0)),
    ],
)
def test_backtest_and_realtime_decide_identically_on_a_warm_up_bar(action, warm_up_size, warm_up_reasons):
    policy = PolicyConfig(btc_high_vol_action=action)
    rows = _rows()
    panel = _panel()
    everything = np.arange(len(rows.ts_ms))
    backtest = backtest_predictions(
        rows, everything, _predictions(len(everything)), panel, policy=policy, label_spec=SPEC,
        sim=sim_config_for(SPEC, policy), risk=RiskConfig(),
    ).signals  # fmt: skip
    for t in range(N):
        mine = rows.ts_ms == panel.ts[t]
        realtime = decide_symbols(rows.X[mine], _predictions(int(mine.sum())), PRICE[t], ATR[t], policy, SPEC)
        np.testing.assert_array_equal(realtime.direction, backtest.direction[t])
        np.testing.assert_array_equal(realtime.size_fraction, backtest.size_fraction[t])
        np.testing.assert_array_equal(realtime.reasons, backtest.reasons[t])
        np.testing.assert_array_equal(realtime.sl_price, backtest.sl_price[t])
    # The warm-up bar is treated as high volatility by both: the safe rule.
    np.testing.assert_array_equal(backtest.size_fraction[0], warm_up_size)
    np.testing.assert_array_equal(backtest.reasons[0], int(warm_up_reasons))
    np.testing.assert_array_equal(backtest.size_fraction[0], backtest.size_fraction[1])  # = regime 2
    np.testing.assert_array_equal(backtest.size_fraction[2], 0.15)  # normal regime: full size
