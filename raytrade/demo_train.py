"""The training flow shared by ``raytrade demo`` and ``raytrade research``: features and labels on Ray Data,
walk-forward folds, a small Tune sweep logged to MLflow, the best configuration retrained and registered,
promotion gates against the baselines, a last-fold portfolio backtest and the HTML report sections.
Glue only: every step is an existing function (``pipelines``, ``tune``, ``storage.registry``).

``run_training`` runs one ``TrainingPlan``: which symbols and dates, how folds are cut, and what happens
when the gates fail (``override``: the demo promotes a synthetic model by a recorded override; research
promotes only on passing gates or the user's own override reason, and otherwise leaves ``production``
where it was). ``train_and_promote`` is the demo's plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.features_schema import FEATURE_NAMES
from core.policy import PREDICTION_KEYS, BlockReason
from core.sim import run_backtest
from core.strategies import BASELINES
from pipelines.backtest import load_panel, policy_signals
from pipelines.baselines import run_baselines
from pipelines.features import compute_universe_features
from pipelines.labels import label_universe
from pipelines.report import Report, backtest_section
from pipelines.walkforward import FoldWindow, walk_forward_baselines
from raytrade.cmd_backtest import sim_config
from raytrade.rayinit import start_ray
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from storage.registry import ModelRegistry
from tune.dataset import TrainingSet, load_training_set
from tune.gates import (
    FoldMetrics,
    GateReport,
    GatesInput,
    PromotionConfig,
    StrategyResult,
    evaluate_gates,
)
from tune.promote import PromotionRefused, promote
from tune.splits import Fold, WalkForwardConfig, walk_forward_folds
from tune.train import fit_multi_target
from tune.trainable import (
    EvalConfig,
    btc_regime_on_panel,
    default_search_space,
    predictions_on_panel,
    refit_fold,
    run_sweep,
    walk_forward_candidate,
)

MODEL_NAME = "raytrade-lgbm"
SWEEP_EXPERIMENT = "raytrade-demo-sweeps"
MODEL_EXPERIMENT = "raytrade-demo"
ACTOR = "raytrade-demo"
#: Per-fold metrics shown in the stability table and compared between reruns.
FOLD_COLUMNS = ("score", "trades", "profit_factor", "sharpe", "total_return", "max_drawdown")
_TIMING = ("fit_s", "eval_s")

Step = Callable[[str], None]
#: The stages of ``run_training``, each reported through ``step`` when done.
TRAINING_STAGES = ("features", "labels", "sweep", "fold backtests", "register", "gates + promotion")


@dataclass
class TrainSummary:
    """What the training half produced."""

    n_folds: int
    best_config: dict[str, Any]
    sweep: pd.DataFrame
    folds: pd.DataFrame
    gates: GateReport
    version: str
    promotion_kind: str
    override: str | None
    importance: pd.DataFrame
    model: Any = None
    model_name: str = MODEL_NAME
    report_path: Path | None = None
    #: ``production`` after the run (None: no version is production); the registered one when promoted.
    production_version: str | None = None
    #: MLflow run of the registered version.
    run_id: str | None = None


def demo_folds(data: TrainingSet, settings: Settings, n_folds: int = 3) -> list[Fold]:
    """Walk-forward folds in bars sized to the history: with u = 1/(n_folds + 5) of it, ``n_folds`` test
    windows of u each, a validation window of u and 3u for training (3 folds: 1/8, 1/8, 3/8); embargo =
    label horizon."""
    bars = int((data.ts_ms.max() - data.ts_ms.min()) // 60_000) + 1
    test = max(60, bars // (n_folds + 5))
    cfg = WalkForwardConfig(
        length_unit="bars", train_length=max(60, 3 * bars // (n_folds + 5)), val_length=test, test_length=test,
        embargo_bars=settings.label.h_bars, horizon_bars=settings.label.h_bars, max_folds=n_folds,
    )  # fmt: skip
    return walk_forward_folds(data.ts_ms, data.exit_ts_ms, cfg)


def _fold_metrics(name: str, rows: list[dict[str, float]]) -> StrategyResult:
    return StrategyResult(name=name, folds=[FoldMetrics.from_summary(int(r["fold"]), r) for r in rows])


def gate_table(report: GateReport) -> pd.DataFrame:
    return pd.DataFrame(
        [(g.name, "pass" if g.passed else "FAIL", g.value, g.threshold, g.reason) for g in report.gates],
        columns=["gate", "verdict", "value", "threshold", "reason"],
    ).set_index("gate")


def _importance(model: Any, k: int = 20) -> pd.DataFrame:
    gains = sum(
        np.asarray(model.booster(t).feature_importance(importance_type="gain"), dtype=np.float64)
        for t in model.targets
    )
    order = np.argsort(-gains, kind="stable")[:k]
    return pd.DataFrame({"feature": [FEATURE_NAMES[i] for i in order], "gain": gains[order].round(2)})


@dataclass(frozen=True)
class TrainingPlan:
    """One run of the training flow: data, folds, sweep size, where it is logged, the override policy.

    ``folds(data)`` cuts the walk-forward folds of the loaded training set. ``override(report)`` returns
    the reason to promote despite failed gates, or None to leave ``production`` as it is (the refusal
    is recorded in ``events`` by ``tune.promote``). ``start_ms``/``end_ms`` bound the training set
    (None: all of it).
    """

    symbols: tuple[str, ...]
    seed: int
    num_samples: int
    num_boost_round: int
    folds: Callable[[TrainingSet], list[Fold]]
    override: Callable[[GateReport], str | None]
    start_ms: int | None = None
    end_ms: int | None = None
    model_name: str = MODEL_NAME
    sweep_experiment: str = SWEEP_EXPERIMENT
    model_experiment: str = MODEL_EXPERIMENT
    sweep_name: str = "demo_sweep"
    actor: str = ACTOR
    gates: PromotionConfig = field(default_factory=PromotionConfig)


def _demo_override(gates: GateReport) -> str:
    return f"demo on a synthetic market: gates failed ({', '.join(gates.failed)})"


def train_and_promote(
    settings: Settings,
    *,
    seed: int,
    num_samples: int,
    num_boost_round: int,
    step: Step,
) -> tuple[TrainSummary, TrainingSet, list[Fold], EvalConfig]:
    """The demo's plan: the whole universe, ``demo_folds``, promotion by a recorded override when gates fail."""
    plan = TrainingPlan(
        symbols=tuple(settings.universe), seed=seed, num_samples=num_samples, num_boost_round=num_boost_round,
        folds=lambda data: demo_folds(data, settings), override=_demo_override,
    )  # fmt: skip
    return run_training(settings, plan, step)


def run_training(
    settings: Settings, plan: TrainingPlan, step: Step
) -> tuple[TrainSummary, TrainingSet, list[Fold], EvalConfig]:
    """Stages 2–5: features + labels (Ray Data), folds, sweep, retrain, register, gates, promotion.

    Calls ``step(name)`` after each stage. The summary's ``model`` is the version just registered,
    whether or not it was promoted.
    """
    symbols = list(plan.symbols)
    seed, num_boost_round = plan.seed, plan.num_boost_round
    lake_root = settings.lake_root
    start_ray(settings, progress=False)
    compute_universe_features(lake_root, symbols, group_size=8)
    step("features")
    label_universe(lake_root, symbols, settings.label)
    step("labels")
    data = load_training_set(lake_root, symbols, settings.label, plan.start_ms, plan.end_ms)
    folds = plan.folds(data)
    if not folds:
        raise ConfigError(
            f"no walk-forward fold fits the {len(data):,} rows of {', '.join(symbols)}: shorten the windows"
        )
    eval_cfg = EvalConfig(
        num_boost_round=num_boost_round, seed=seed, policy=settings.policy, risk=settings.risk,
        sim=sim_config(settings),
    )  # fmt: skip
    best, sweep = run_sweep(
        data, folds, default_search_space(), num_samples=plan.num_samples, scheduler="fifo",
        storage_path=settings.data_dir.resolve() / "tune", mlflow_tracking_uri=settings.tracking_uri,
        experiment=plan.sweep_experiment, eval_config=eval_cfg, seed=seed, name=plan.sweep_name,
        mlflow_artifact_location=settings.mlflow_artifact_root / plan.sweep_experiment,
    )  # fmt: skip
    step("sweep")
    lake = Lake(lake_root)
    trial_sharpes = sweep["mean_sharpe"].tolist() if "mean_sharpe" in sweep else []
    candidate, model_rows = walk_forward_candidate(
        plan.model_name, best, data, folds, eval_cfg, lake, trial_sharpes=trial_sharpes
    )
    windows = [FoldWindow(f.index, f.test_start_ms, f.test_end_ms) for f in folds]
    base = walk_forward_baselines(
        lake_root, symbols, windows, list(BASELINES), sim=sim_config(settings), risk=settings.risk,
        policy=settings.policy, label_spec=settings.label,
    )  # fmt: skip
    baselines = [_fold_metrics(n, g.to_dict("records")) for n, g in base.groupby("strategy", sort=True)]
    fold_rows = [{"strategy": "model", **{k: r[k] for k in ("fold", *FOLD_COLUMNS)}} for r in model_rows]
    fold_rows += [
        {
            "strategy": r["strategy"],
            "fold": r["fold"],
            "score": math.nan,
            **{k: r[k] for k in FOLD_COLUMNS[1:]},
        }
        for r in base.to_dict("records")
    ]
    step("fold backtests")
    last = refit_fold(folds[-1])
    model = fit_multi_target(
        data.X[last.train], data.labels.iloc[last.train].reset_index(drop=True),
        label_spec_hash=data.label_spec_hash, params=dict(best), num_boost_round=num_boost_round, seed=seed,
        num_threads=1, feature_schema_version=data.feature_schema_version,
        feature_schema_hash=data.feature_schema_hash,
    )  # fmt: skip
    engine = db.make_engine(settings.database_url)
    try:
        registry = ModelRegistry(
            settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
        )
        gates_input = GatesInput(candidate=candidate, baselines=baselines)
        info = registry.log_model(
            model, registered_name=plan.model_name, experiment=plan.model_experiment,
            metrics={f"fold{int(r['fold'])}_{k}": float(r[k]) for r in model_rows for k in FOLD_COLUMNS
                     if math.isfinite(float(r[k]))},
            params={**best, "num_boost_round": num_boost_round, "seed": seed},
            gates_input=gates_input.model_dump(mode="json"),
            train_start_ms=last.train_start_ms,
            train_end_ms=last.test_start_ms,
        )  # fmt: skip
        step("register")
        gates = evaluate_gates(candidate, baselines, plan.gates)
        override = None if gates.passed else plan.override(gates)
        kind: str
        try:
            result = promote(
                registry, plan.model_name, info.version, gates, override=override, actor=plan.actor
            )
            kind = result.kind
        except PromotionRefused:
            kind = "refused"
        production = registry.production_version(plan.model_name)
        registered = registry.load_model(info.uri)
    finally:
        engine.dispose()
    step("gates + promotion")
    summary = TrainSummary(
        n_folds=len(folds), best_config=best, sweep=sweep, folds=pd.DataFrame(fold_rows), gates=gates,
        version=info.version, promotion_kind=kind, override=override,
        importance=_importance(registered), model=registered, model_name=plan.model_name,
        production_version=None if production is None else production.version, run_id=info.run_id,
    )  # fmt: skip
    return summary, data, folds, eval_cfg


def last_fold_backtests(
    settings: Settings,
    data: TrainingSet,
    fold: Fold,
    model: Any,
    *,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 6: the model's policy and the baselines over the last fold's test window.

    With ``diagnostics`` (a dict), it receives ``policy_diagnostics`` of the model's signals: how many
    symbol-bars had predictions, how many entries the policy took, and how often each block reason fired.
    """
    lake = Lake(settings.lake_root)
    panel = load_panel(lake, data.symbols, fold.test_start_ms, fold.test_end_ms)
    window = np.flatnonzero((data.ts_ms >= fold.test_start_ms) & (data.ts_ms < fold.test_end_ms))
    predicted = model.predict(data.X[window], data.feature_schema_version, data.feature_schema_hash)
    grid = predictions_on_panel(panel, data.ts_ms[window], data.symbol[window], predicted)
    signals = policy_signals(
        panel, grid, btc_regime_on_panel(data, panel, "BTCUSDT"), settings.policy, settings.label
    )
    if diagnostics is not None:
        predicted_cells = np.isfinite(grid[PREDICTION_KEYS[0]])
        diagnostics.update(policy_diagnostics(signals.direction, signals.reasons, predicted_cells))
    sim = sim_config(settings)
    results: dict[str, Any] = {"model": run_backtest(panel, signals, sim, settings.risk)}
    results.update(
        run_baselines(lake, panel, list(BASELINES), sim=sim, risk=settings.risk, policy=settings.policy,
                      label_spec=settings.label)
    )  # fmt: skip
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


def write_report(
    settings: Settings,
    summary: TrainSummary,
    results: dict[str, Any],
    foundation: pd.DataFrame,
    out_dir: Path,
    market_note: str,
) -> Path:
    """Stage 7 of the demo: the HTML report (tables, PNGs) and report.json (metrics only, rerun-comparable)."""
    report = Report("raytrade demo: SYNTHETIC market", out_dir)
    report.notes.append(f"SYNTHETIC market: {market_note} — generated, not real Binance data; "
                        "these numbers say nothing about real markets")  # fmt: skip
    if summary.override:
        report.notes.append(f"PROMOTED BY OVERRIDE: {summary.override}")
    else:
        report.notes.append("every promotion gate passed")
    report.notes.append(
        f"model {MODEL_NAME} version {summary.version} is `production` ({summary.promotion_kind}); "
        f"MLflow store {settings.tracking_uri}"
    )
    summaries = training_sections(report, summary, results)
    report.heading("foundation checks")
    report.table(foundation.set_index("item"))
    return report.write(report_data(summary, summaries))


def training_sections(
    report: Report, summary: TrainSummary, results: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Add the training sections to ``report``: last-fold backtest (metrics, equity, costs, per symbol),
    fold stability, promotion gates, the Tune sweep and feature importance; return the backtest summaries."""
    summaries = backtest_section(report, results, label="last fold test window", per_symbol_of="model")
    report.heading("fold stability (test windows: model vs baselines)")
    report.table(summary.folds.set_index(["fold", "strategy"]).sort_index().round(4))
    report.heading("promotion gates")
    report.table(gate_table(summary.gates))
    report.heading("Tune sweep (walk-forward validation score)")
    cols = [
        c for c in summary.sweep.columns if c in (*summary.best_config, "trial_index", "score", "folds_done")
    ]
    report.table(summary.sweep[cols].set_index("trial_index").round(4))
    report.paragraph(f"best configuration: {summary.best_config}")
    which = (
        "production model"
        if summary.production_version == summary.version
        else f"{summary.model_name} version {summary.version}, not production"
    )
    report.heading(f"feature importance ({which}, gain summed over outputs)")
    report.table(summary.importance.set_index("feature"))
    return summaries


def report_data(summary: TrainSummary, summaries: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The metrics of report.json (no timings, so reruns compare equal)."""
    folds = summary.folds.drop(columns=[c for c in _TIMING if c in summary.folds]).to_dict("records")
    return {
        "summaries": summaries, "folds": folds, "gates": summary.gates.to_dict(),
        "best_config": summary.best_config, "version": summary.version, "override": summary.override,
    }  # fmt: skip
