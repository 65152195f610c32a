"""Shared inputs of the registry, promotion, job and shadow tests: tiny models, gate inputs, an MLflow store,
a production model for a shadow session."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from core.config import LabelSpec
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from core.model import MultiTargetModel
from storage import db
from storage.registry import ModelRegistry, ModelVersionInfo
from tune.gates import FoldMetrics, GatesInput, OutOfSampleMetrics, OverfittingInput, StrategyResult

SPEC_HASH = LabelSpec().spec_hash()
TRAIN_START_MS = 1_700_000_000_000
TRAIN_END_MS = TRAIN_START_MS + 30 * 86_400_000
FAST = {"num_leaves": 7, "min_data_in_leaf": 20, "learning_rate": 0.1}


@lru_cache(maxsize=4)
def feature_rows(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random features (132 columns, a few NaN) and labels_1m-like rows with a weak signal."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    x[rng.random(x.shape) < 0.02] = np.nan
    features = pd.DataFrame(x, columns=list(FEATURE_NAMES))
    signal = np.nan_to_num(x[:, 0])
    labels: dict[str, np.ndarray] = {"status": np.zeros(n, np.int8)}
    for side, sign in (("long", 1.0), ("short", -1.0)):
        ret = 0.004 * sign * signal + 0.01 * rng.normal(size=n)
        labels |= {
            f"{side}_y": np.where(ret > 0.008, 1, np.where(ret < -0.006, -1, 0)),
            f"{side}_ret_net": ret,
            f"{side}_mae": np.abs(0.005 + 0.003 * rng.normal(size=n)),
            f"{side}_time_to_event_min": rng.integers(1, 61, n).astype(np.float64),
        }
    return features, pd.DataFrame(labels)


@lru_cache(maxsize=4)
def tiny_model(seed: int = 0) -> MultiTargetModel:
    """A multi-target model of 5 trees per output on 400 random rows (fast, deterministic)."""
    from tune.train import fit_multi_target

    features, labels = feature_rows(seed=seed)
    return fit_multi_target(
        features, labels, label_spec_hash=SPEC_HASH, params=FAST, num_boost_round=5, seed=seed
    )


def predict(model: MultiTargetModel, rows: pd.DataFrame) -> pd.DataFrame:
    return model.predict_frame(rows, FEATURE_SCHEMA_VERSION, model.feature_schema_hash)


def folds(sharpes: list[float], pf: float = 1.5, mdd: float = 0.05) -> list[FoldMetrics]:
    return [
        FoldMetrics(fold=i, profit_factor=pf, max_drawdown=mdd, sharpe=s, total_return=0.01 * s, trades=40)
        for i, s in enumerate(sharpes)
    ]


def strong_overfitting() -> OverfittingInput:
    """Deflated-Sharpe inputs of a clearly skilled selection (DSR ≈ 1)."""
    return OverfittingInput(sharpe_per_obs=0.15, n_obs=1000, n_trials=10, trial_sharpe_variance=0.001)


def good_candidate(name: str = "lgbm_multi") -> StrategyResult:
    """A candidate that passes every gate against ``baselines()`` with the default thresholds."""
    return StrategyResult(
        name=name,
        folds=folds([2.0, 2.5, 1.8, 2.2, 2.1]),
        oos=OutOfSampleMetrics(profit_factor=1.45, max_drawdown=0.06, trades=200, sharpe=2.1),
        overfitting=strong_overfitting(),
    )


def baselines() -> list[StrategyResult]:
    return [
        StrategyResult(name="donchian", folds=folds([0.5, -0.2, 0.8, 0.1, 0.3], pf=1.05)),
        StrategyResult(name="bollinger", folds=folds([1.0, 0.4, -0.5, 0.9, 0.2], pf=1.1)),
    ]


def passing_gates_input() -> dict:
    return GatesInput(candidate=good_candidate(), baselines=baselines()).model_dump(mode="json")


def failing_gates_input() -> dict:
    """Fails oos_profit_factor and oos_max_drawdown, passes the rest."""
    c = good_candidate().model_copy(
        update={"oos": OutOfSampleMetrics(profit_factor=1.05, max_drawdown=0.25, trades=200)}
    )
    return GatesInput(candidate=c, baselines=baselines()).model_dump(mode="json")


def log_tiny(registry: ModelRegistry, name: str, seed: int = 0, **kw: Any) -> ModelVersionInfo:
    """Register ``tiny_model(seed)`` as a new version of ``name`` (experiment "train", fixed window)."""
    kw.setdefault("experiment", None if "run_id" in kw else "train")
    return registry.log_model(
        tiny_model(seed), registered_name=name, train_start_ms=TRAIN_START_MS, train_end_ms=TRAIN_END_MS, **kw
    )


#: Registered name of the shadow tests' production model.
SHADOW_MODEL = "raytrade-lgbm"


def long_biased_model() -> MultiTargetModel:
    """A real LightGBM multi-target model that expects +2% long and −2% short with a small MAE:
    the policy enters long on every flat symbol, so the loop opens and closes positions."""
    from tune.train import fit_multi_target

    features, labels = feature_rows(400, seed=5)
    labels = labels.copy()
    rng = np.random.default_rng(5)
    labels["long_ret_net"] = 0.02 + 0.0005 * rng.normal(size=len(labels))
    labels["short_ret_net"] = -0.02 + 0.0005 * rng.normal(size=len(labels))
    labels["long_mae"] = labels["short_mae"] = 0.0005
    return fit_multi_target(features, labels, label_spec_hash=SPEC_HASH, num_boost_round=5, seed=0)


def install_production_model(settings: Any, train_end_ms: int) -> None:
    """Migrate ``settings``' database and make ``long_biased_model()`` its ``production`` version of
    ``SHADOW_MODEL`` (trained on the day before ``train_end_ms``)."""
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    registry = ModelRegistry(
        settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
    )
    info = registry.log_model(long_biased_model(), registered_name=SHADOW_MODEL, experiment="train",
                              train_start_ms=train_end_ms - 86_400_000, train_end_ms=train_end_ms)  # fmt: skip
    registry.set_production(SHADOW_MODEL, info.version)
    engine.dispose()
