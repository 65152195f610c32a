"""Wiring of the training half of ``raytrade demo`` and ``raytrade research`` from the settings.

The flow itself is ``tune.flow.train_evaluate_register`` (shared with the ``train`` job); here the
settings become its narrow ``TrainingEnvironment``, features and labels are made with Ray Data, and the
result becomes a ``tune.training_report.TrainSummary``. ``train_and_promote`` is the demo's plan: the
whole universe, folds sized to the history, promotion only when every gate passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.features import compute_universe_features
from pipelines.labels import label_universe
from pipelines.model_backtest import model_and_baselines
from raytrade.cmd_backtest import sim_config
from raytrade.defaults import MODEL_NAME  # re-exported: one copy of the model name
from raytrade.rayinit import start_ray
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from storage.registry import ModelRegistry
from tune.dataset import TrainingSet
from tune.flow import (
    FLOW_STAGES,
    PromotionPlan,
    SweepPlan,
    TrainingEnvironment,
    TrainingProgress,
    TrainRequest,
    train_evaluate_register,
)
from tune.fold_plans import history_folds
from tune.gates import GateReport
from tune.splits import Fold
from tune.trainable import EvalConfig
from tune.training_report import TrainSummary

SWEEP_EXPERIMENT = "raytrade-demo-sweeps"
MODEL_EXPERIMENT = "raytrade-demo"
ACTOR = "raytrade-demo"

Step = Callable[[str], None]
#: The stages of ``run_training``, each reported through ``step`` when done.
TRAINING_STAGES = ("features", "labels", *FLOW_STAGES)


@contextmanager
def training_environment(settings: Settings) -> Iterator[TrainingEnvironment]:
    """The flow's environment from the settings: lake, component configs, registry (with the database
    mirror; the engine is disposed on exit) and the Tune folder."""
    engine = db.make_engine(settings.database_url)
    try:
        registry = ModelRegistry(
            settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
        )
        yield TrainingEnvironment(
            lake_root=settings.lake_root, label_spec=settings.label, policy=settings.policy, risk=settings.risk,
            sim=sim_config(settings), registry=registry, tune_storage=settings.data_dir.resolve() / "tune",
        )  # fmt: skip
    finally:
        engine.dispose()


def _no_override(_gates: GateReport) -> None:
    return None


def train_and_promote(
    settings: Settings,
    *,
    seed: int,
    num_samples: int,
    num_boost_round: int,
    step: Step,
    flow_progress: TrainingProgress | None = None,
) -> tuple[TrainSummary, TrainingSet, list[Fold], EvalConfig]:
    """The demo's plan: the whole universe, ``history_folds``, promotion only when every gate passes
    (no override: a failed gate leaves ``production`` as it was, and the flow records the refusal)."""
    request = TrainRequest(
        symbols=tuple(settings.universe), folds=lambda data: history_folds(data, settings.label.h_bars),
        seed=seed, num_boost_round=num_boost_round, model_name=MODEL_NAME, experiment=MODEL_EXPERIMENT,
        sweep=SweepPlan(num_samples, SWEEP_EXPERIMENT, "demo_sweep"),
        promotion=PromotionPlan(override=_no_override, actor=ACTOR),
    )  # fmt: skip
    return run_training(settings, request, step, flow_progress)


def run_training(
    settings: Settings, request: TrainRequest, step: Step, flow_progress: TrainingProgress | None = None
) -> tuple[TrainSummary, TrainingSet, list[Fold], EvalConfig]:
    """Features + labels (Ray Data) of the request's symbols, then the flow; ``step(name)`` after each of
    ``TRAINING_STAGES``. ``flow_progress``: all the flow's callbacks (default: its stages, through
    ``step``). The summary's ``model`` is the version just registered, loaded back, whether or not it
    was promoted."""
    start_ray(settings, progress=False)
    compute_universe_features(settings.lake_root, list(request.symbols), group_size=8)
    step("features")
    label_universe(settings.lake_root, list(request.symbols), settings.label)
    step("labels")
    with training_environment(settings) as env:
        outcome = train_evaluate_register(env, request, flow_progress or TrainingProgress(stage=step))
        registered = env.registry.load_model(outcome.version.uri)
    return TrainSummary.of(outcome, registered), outcome.data, outcome.folds, outcome.eval_config


def last_fold_backtests(
    settings: Settings,
    data: TrainingSet,
    fold: Fold,
    model: Any,
    *,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model's policy and the baselines over the last fold's test window
    (``pipelines.model_backtest.model_and_baselines`` with the installation's configs)."""
    return model_and_baselines(
        Lake(settings.lake_root), model, data, data.symbols, fold.test_start_ms, fold.test_end_ms,
        policy=settings.policy, label_spec=settings.label, sim=sim_config(settings), risk=settings.risk,
        diagnostics=diagnostics,
    )  # fmt: skip
