"""Walk-forward evaluation of a configuration, and the Ray Tune sweep around it, on a tiny synthetic lake."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.config import LabelSpec
from core.synthetic import generate_market
from pipelines.features import features_for_group
from pipelines.labels import label_symbol
from pipelines.market import write_synthetic_market
from storage.lake import Lake
from tune.dataset import load_training_set
from tune.splits import WalkForwardConfig, walk_forward_folds
from tune.trainable import TRADING_METRICS, EvalConfig, evaluate_config, run_sweep

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START = 1_736_121_600_000
SPEC = LabelSpec(h_bars=60)
WALK_FORWARD = WalkForwardConfig(
    length_unit="bars", train_length=2880, val_length=1440, test_length=1440, horizon_bars=60, max_folds=2
)
SPACE = {"num_leaves": 7, "learning_rate": 0.1, "min_data_in_leaf": 50}
EVAL = EvalConfig(num_boost_round=10)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_lake")
    write_synthetic_market(generate_market(SYMBOLS, START, 6 * 1440, seed=3), Lake(root))
    features_for_group(str(root), SYMBOLS)
    for symbol in SYMBOLS:
        label_symbol(str(root), symbol, SPEC.model_dump_json())
    return root


@pytest.fixture(scope="module")
def data(lake_root):
    return load_training_set(lake_root, SYMBOLS, SPEC)


@pytest.fixture(scope="module")
def folds(data):
    return walk_forward_folds(data.ts_ms, data.exit_ts_ms, WALK_FORWARD)


def test_training_set_pools_symbols_sorted_by_time(data):
    assert data.X.shape == (len(data), 132) and data.X.dtype == np.float64
    assert (np.diff(data.ts_ms) >= 0).all()
    assert list(data.symbol[:3]) == SYMBOLS  # ties keep the symbols' order
    assert (data.exit_ts_ms > data.ts_ms).all()
    assert (data.exit_ts_ms <= data.ts_ms + (SPEC.h_bars + 1) * 60_000).all()


def test_evaluate_config_gives_finite_model_and_trading_metrics_per_fold(data, folds):
    assert len(folds) == 2
    seen = []
    result = evaluate_config({"num_leaves": 7}, data, folds, EVAL, on_fold=lambda k, r: seen.append(k))
    assert seen == [0, 1] and result["folds_done"] == 2
    for fold in result["folds"]:
        for key in ("er_long_rmse", "er_short_mae", "q05_long_pinball", "e_mae_short_mae", "e_hold_long_mae"):
            assert math.isfinite(fold[key]) and fold[key] >= 0, key
        assert set(TRADING_METRICS) <= set(fold)
        for key in ("trades", "max_drawdown", "total_costs", "total_return"):
            assert math.isfinite(fold[key]), key
        assert fold["val_rows"] == 1440 * len(SYMBOLS)
    assert math.isfinite(result["score"])
    assert set(result["feature_importance"]) == {"er_long", "er_short", "q05_long", "q05_short",
                                                 "e_mae_long", "e_mae_short", "e_hold_long", "e_hold_short"}  # fmt: skip


def test_run_sweep_returns_best_config_one_row_per_trial_and_is_deterministic(
    data, folds, ray_session, tmp_path
):
    import ray
    from ray import tune

    ref = ray.put(data)
    space = {**SPACE, "num_leaves": tune.grid_search([3, 7])}
    runs = [
        run_sweep(ref, folds, space, num_samples=1, scheduler="fifo", storage_path=tmp_path / f"s{i}",
                  eval_config=EVAL, seed=1)
        for i in range(2)
    ]  # fmt: skip
    (best, table), (best_again, table_again) = runs
    assert len(table) == 2 and sorted(table["num_leaves"]) == [3, 7]
    assert (table["folds_done"] == 2).all() and table["error"].isna().all()
    assert best["num_leaves"] in (3, 7) and best["learning_rate"] == 0.1
    assert best == best_again
    columns = ["num_leaves", "score", "mean_er_long_rmse", "mean_q05_short_pinball", "mean_trades"]
    first = table[columns].sort_values("num_leaves").reset_index(drop=True)
    second = table_again[columns].sort_values("num_leaves").reset_index(drop=True)
    assert first.equals(second)


def test_run_sweep_logs_trials_nested_under_the_sweep_run(data, folds, ray_session, tmp_path):
    from mlflow.tracking import MlflowClient
    from ray import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = {**SPACE, "num_leaves": tune.grid_search([3, 7])}
    best, table = run_sweep(
        data, folds, space, num_samples=1, scheduler="asha", storage_path=tmp_path / "sweep",
        mlflow_tracking_uri=uri, experiment="test-sweep", eval_config=EVAL,
    )  # fmt: skip
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("raytrade.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(table) == 2
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert finished, "at least the best trial ran every fold"
    child = finished[0]
    assert child.data.params["learning_rate"] == "0.1"
    history = client.get_metric_history(child.info.run_id, "er_long_rmse")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
    assert "feature_importance.json" in artifacts
    assert "best_score" in parents[0].data.metrics
