"""One train-evaluate-register flow, run by ``raytrade demo``, ``raytrade research`` and the ``train`` job.

``train_evaluate_register`` does, in order: load the training set (features ⋈ labels of the lake) →
cut walk-forward folds → optionally sweep configurations with Ray Tune (the best one goes on) →
``walk_forward_candidate`` (each fold refitted on train ∪ validation and backtested on its test window,
the windows pooled, deflated-Sharpe inputs) → the baselines on the same windows → refit the last fold
→ fit → log and register the model with its per-fold metrics and gate inputs → optionally evaluate the
gates and promote (by override when the plan gives one).

Callers give a narrow ``TrainingEnvironment`` (lake, component configs, registry, where sweeps go),
never the whole settings, and a ``TrainRequest`` saying what differs between them. Features and labels
must be in the lake: making them (Ray Data for demo and research, in-process for the job) is the
caller's business.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.errors import ConfigError
from core.model import MultiTargetModel
from core.sim import SimConfig
from core.strategies import BASELINES
from pipelines.walkforward import FoldWindow, walk_forward_baselines
from storage.lake import Lake
from storage.registry import ModelRegistry, ModelVersionInfo
from tune.dataset import TrainingSet, load_training_set
from tune.gates import FoldMetrics, GateReport, GatesInput, PromotionConfig, StrategyResult, evaluate_gates
from tune.promote import PromotionRefused, promote
from tune.splits import Fold
from tune.sweep_progress import TrialUpdate, sweep_progress_callback
from tune.train import fit_multi_target
from tune.trainable import EvalConfig, default_search_space, refit_fold, run_sweep, walk_forward_candidate

#: Per-fold metrics of the fold table and of the registered version's run (``fold<i>_<metric>``).
FOLD_METRICS = ("score", "trades", "profit_factor", "sharpe", "total_return", "max_drawdown")
#: Stages reported through ``TrainingProgress.stage`` (sweep and promotion only when requested).
FLOW_STAGES = ("sweep", "fold backtests", "register", "gates + promotion")


@dataclass(frozen=True)
class TrainingEnvironment:
    """What the flow works with, built once by the composition root.

    ``tune_storage``: the folder Ray Tune keeps sweep results in (only a request with a sweep needs it).
    Sweep runs are logged to the registry's tracking store, their artifacts under its ``artifact_root``
    (else under ``tune_storage``).
    """

    lake_root: Path
    label_spec: LabelSpec
    policy: PolicyConfig
    risk: RiskConfig
    sim: SimConfig
    registry: ModelRegistry
    tune_storage: Path | None = None


@dataclass(frozen=True)
class SweepPlan:
    """A Ray Tune sweep of ``num_samples`` configurations (FIFO), logged to MLflow ``experiment``."""

    num_samples: int
    experiment: str
    name: str


@dataclass(frozen=True)
class PromotionPlan:
    """Gate the registered version and promote it. ``override(report)`` gives the reason to promote despite
    failed gates, or None to leave ``production`` as it is (``tune.promote`` records the refusal)."""

    override: Callable[[GateReport], str | None]
    actor: str
    gates: PromotionConfig = field(default_factory=PromotionConfig)


def _no_progress(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class TrainingProgress:
    """Callbacks of the flow: ``loaded(rows, folds)`` after loading, ``trial(update)`` for every fold a
    sweep trial reports and when it ends (``tune.sweep_progress.TrialUpdate``), ``fold(k, n)`` after
    candidate fold k (0-based) of n, ``stage(name)`` after each of ``FLOW_STAGES`` that runs."""

    loaded: Callable[[int, int], None] = _no_progress
    trial: Callable[[TrialUpdate], None] = _no_progress
    fold: Callable[[int, int], None] = _no_progress
    stage: Callable[[str], None] = _no_progress


@dataclass(frozen=True)
class TrainRequest:
    """One run of the flow.

    ``folds(data)`` cuts the walk-forward folds of the loaded training set (it may raise ConfigError
    naming the windows; an empty list raises one here). ``params`` is the LightGBM configuration when no
    ``sweep`` is given (with a sweep: the best configuration found). ``log_params`` are extra params of
    the registered version's run. ``parallel_baselines``: baseline folds as Ray tasks (None: when Ray is up).
    """

    symbols: tuple[str, ...]
    folds: Callable[[TrainingSet], list[Fold]]
    seed: int
    num_boost_round: int
    model_name: str
    experiment: str
    start_ms: int | None = None
    end_ms: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    sweep: SweepPlan | None = None
    promotion: PromotionPlan | None = None
    log_params: Mapping[str, Any] = field(default_factory=dict)
    parallel_baselines: bool | None = None


@dataclass(frozen=True)
class PromotionOutcome:
    """The gates of the registered version and what happened to ``production``: ``kind`` is
    ``tune.promote``'s (promote, override, unchanged) or ``refused``; ``production_version`` is the
    version in ``production`` afterwards (None: none)."""

    gates: GateReport
    kind: str
    override: str | None
    production_version: str | None


@dataclass(frozen=True)
class TrainOutcome:
    """What the flow produced. ``fold_table``: one row per fold and strategy (model and baselines) with
    ``FOLD_METRICS`` (baselines have no score); ``model``: the fitted model that was registered as
    ``version``."""

    data: TrainingSet
    folds: list[Fold]
    eval_config: EvalConfig
    params: dict[str, Any]
    sweep: pd.DataFrame | None
    candidate: StrategyResult
    baselines: list[StrategyResult]
    fold_table: pd.DataFrame
    model: MultiTargetModel
    version: ModelVersionInfo
    promotion: PromotionOutcome | None


def train_evaluate_register(
    env: TrainingEnvironment, request: TrainRequest, progress: TrainingProgress | None = None
) -> TrainOutcome:
    """Run the flow of the module docstring for ``request``; deterministic in its seed and data."""
    progress = progress or TrainingProgress()
    symbols = list(request.symbols)
    data = load_training_set(env.lake_root, symbols, env.label_spec, request.start_ms, request.end_ms)
    folds = request.folds(data)
    if not folds:
        raise ConfigError(
            f"no walk-forward fold fits the {len(data):,} rows of {', '.join(symbols)}: shorten the windows"
        )
    progress.loaded(len(data), len(folds))
    eval_cfg = eval_config(env, request)
    params, sweep, trial_sharpes = dict(request.params), None, []
    if request.sweep is not None:
        params, sweep = _sweep(env, request.sweep, data, folds, eval_cfg, request.seed, progress.trial)
        trial_sharpes = sweep["mean_sharpe"].tolist() if "mean_sharpe" in sweep else []
        progress.stage("sweep")
    candidate, model_rows = walk_forward_candidate(
        request.model_name, params, data, folds, eval_cfg, Lake(env.lake_root), trial_sharpes=trial_sharpes,
        on_fold=lambda k: progress.fold(k, len(folds)),
    )  # fmt: skip
    base = walk_forward_baselines(
        env.lake_root, symbols, [FoldWindow(f.index, f.test_start_ms, f.test_end_ms) for f in folds],
        list(BASELINES), sim=env.sim, risk=env.risk, policy=env.policy, label_spec=env.label_spec,
        use_ray=request.parallel_baselines,
    )  # fmt: skip
    baselines = [
        StrategyResult(
            name=n, folds=[FoldMetrics.from_summary(int(r["fold"]), r) for r in g.to_dict("records")]
        )
        for n, g in base.groupby("strategy", sort=True)
    ]
    progress.stage("fold backtests")
    last = refit_fold(folds[-1])
    model = fit_multi_target(
        data.X[last.train], data.labels.iloc[last.train].reset_index(drop=True),
        label_spec_hash=data.label_spec_hash, params=dict(params), num_boost_round=request.num_boost_round,
        seed=request.seed, num_threads=1, feature_schema_version=data.feature_schema_version,
        feature_schema_hash=data.feature_schema_hash,
    )  # fmt: skip
    info = env.registry.log_model(
        model, registered_name=request.model_name, experiment=request.experiment,
        metrics={f"fold{int(r['fold'])}_{k}": float(r[k]) for r in model_rows for k in FOLD_METRICS
                 if math.isfinite(float(r[k]))},
        params={**params, "num_boost_round": request.num_boost_round, "seed": request.seed, **request.log_params},
        gates_input=GatesInput(candidate=candidate, baselines=baselines).model_dump(mode="json"),
        train_start_ms=last.train_start_ms, train_end_ms=last.test_start_ms,
    )  # fmt: skip
    progress.stage("register")
    promotion = None
    if request.promotion is not None:
        promotion = _promote(
            env.registry, request.model_name, info.version, candidate, baselines, request.promotion
        )
        progress.stage("gates + promotion")
    return TrainOutcome(
        data=data, folds=folds, eval_config=eval_cfg, params=params, sweep=sweep, candidate=candidate,
        baselines=baselines, fold_table=fold_table(model_rows, base), model=model, version=info,
        promotion=promotion,
    )  # fmt: skip


def eval_config(env: TrainingEnvironment, request: TrainRequest) -> EvalConfig:
    """How the flow evaluates configurations: the request's rounds and seed, the environment's policy,
    risk preset and simulator."""
    return EvalConfig(
        num_boost_round=request.num_boost_round,
        seed=request.seed,
        policy=env.policy,
        risk=env.risk,
        sim=env.sim,
    )


def _sweep(
    env: TrainingEnvironment,
    plan: SweepPlan,
    data: TrainingSet,
    folds: list[Fold],
    eval_cfg: EvalConfig,
    seed: int,
    on_trial: Callable[[TrialUpdate], None],
) -> tuple[dict[str, Any], pd.DataFrame]:
    if env.tune_storage is None:
        raise ConfigError("a sweep needs a tune_storage folder in the training environment")
    artifacts = env.registry.artifact_root or env.tune_storage / "mlflow-artifacts"
    return run_sweep(
        data, folds, default_search_space(), num_samples=plan.num_samples, scheduler="fifo",
        storage_path=env.tune_storage, mlflow_tracking_uri=env.registry.tracking_uri, experiment=plan.experiment,
        eval_config=eval_cfg, seed=seed, name=plan.name, mlflow_artifact_location=artifacts / plan.experiment,
        callbacks=[sweep_progress_callback(on_trial)],
    )  # fmt: skip


def _promote(
    registry: ModelRegistry,
    name: str,
    version: str,
    candidate: StrategyResult,
    baselines: list[StrategyResult],
    plan: PromotionPlan,
) -> PromotionOutcome:
    gates = evaluate_gates(candidate, baselines, plan.gates)
    override = None if gates.passed else plan.override(gates)
    try:
        kind = promote(registry, name, version, gates, override=override, actor=plan.actor).kind
    except PromotionRefused:
        kind = "refused"
    production = registry.production_version(name)
    return PromotionOutcome(gates, kind, override, None if production is None else production.version)


def fold_table(model_rows: list[dict[str, float]], baselines: pd.DataFrame) -> pd.DataFrame:
    """One row per fold and strategy: the model's ``FOLD_METRICS`` rows, then the baselines' (no score)."""
    rows = [{"strategy": "model", **{k: r[k] for k in ("fold", *FOLD_METRICS)}} for r in model_rows]
    rows += [
        {
            "strategy": r["strategy"],
            "fold": r["fold"],
            "score": math.nan,
            **{k: r[k] for k in FOLD_METRICS[1:]},
        }
        for r in baselines.to_dict("records")
    ]
    return pd.DataFrame(rows)
