"""Walk-forward folds on Ray equal the same folds run in one process; the policy drives the backtester."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.policy import PREDICTION_KEYS
from core.sim import SimConfig, run_backtest
from core.strategies import BASELINES
from core.synthetic import generate_market
from core.time import DAY_MS
from pipelines.backtest import load_panel, policy_signals
from pipelines.market import write_synthetic_market
from pipelines.walkforward import FoldWindow, walk_forward_baselines
from storage.lake import Lake

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START = 1_736_121_600_000


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("wf"))
    write_synthetic_market(generate_market(SYMBOLS, START, 9 * 1440, seed=9), lake)
    return lake


def test_folds_on_ray_equal_folds_in_process(lake, ray_session):
    windows = [FoldWindow(k, START + (5 + 2 * k) * DAY_MS, START + (7 + 2 * k) * DAY_MS) for k in range(2)]
    kwargs = dict(
        sim=SimConfig(max_hold_bars=360), risk=RiskConfig(), policy=PolicyConfig(), label_spec=LabelSpec()
    )
    on_ray = walk_forward_baselines(lake.root, SYMBOLS, windows, list(BASELINES), use_ray=True, **kwargs)
    local = walk_forward_baselines(lake.root, SYMBOLS, windows, list(BASELINES), use_ray=False, **kwargs)
    assert len(on_ray) == 2 * len(BASELINES)
    assert on_ray.equals(local)
    assert set(on_ray["fold"]) == {0, 1} and (on_ray["trades"] > 0).any()


def test_policy_over_model_outputs_drives_the_backtester(lake):
    panel = load_panel(lake, SYMBOLS, START + 2 * DAY_MS, START + 4 * DAY_MS)
    n, m = panel.shape
    rng = np.random.default_rng(0)
    preds = {k: np.zeros((n, m)) for k in PREDICTION_KEYS}
    preds["er_long"][:] = np.where(rng.random((n, m)) < 0.01, 0.01, -0.01)  # sparse confident longs
    preds["er_short"][:] = -0.01
    preds["e_hold_long"][:] = preds["e_hold_short"][:] = 60.0
    signals = policy_signals(panel, preds, np.ones((n, 1)), PolicyConfig(), LabelSpec())
    assert (signals.direction == 1).sum() > 0 and (signals.direction == -1).sum() == 0
    entered = signals.direction != 0
    assert np.isfinite(signals.sl_price[entered]).all()
    assert (signals.sl_price[entered] < panel.close[entered]).all()  # a long's stop is below the price
    result = run_backtest(panel, signals, SimConfig(max_hold_bars=120), RiskConfig())
    assert len(result.trades) > 0 and set(result.trades["side"]) == {1}
