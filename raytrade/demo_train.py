"""The training half of ``raytrade demo``: features and labels on Ray Data, walk-forward folds, a small Tune
sweep logged to MLflow, the best configuration retrained and registered, promotion gates against the
baselines, a last-fold portfolio backtest and the HTML report. Glue only: every step is an existing
function (``pipelines``, ``tune``, ``storage.registry``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.features_schema import FEATURE_NAMES
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
from tune.promote import promote
from tune.splits import Fold, WalkForwardConfig, walk_forward_folds
from tune.train import fit_multi_target
from tune.trainable import (
    EvalConfig,
    btc_regime_on_panel,
    default_search_space,
    evaluate_fold,
    predictions_on_panel,
    run_sweep,
)

MODEL_NAME = "raytrade-lgbm"
SWEEP_EXPERIMENT = "raytrade-demo-sweeps"
MODEL_EXPERIMENT = "raytrade-demo"
ACTOR = "raytrade-demo"
#: Per-fold metrics shown in the stability table and compared between reruns.
FOLD_COLUMNS = ("score", "trades", "profit_factor", "sharpe", "total_return", "max_drawdown")
_TIMING = ("fit_s", "eval_s")

Step = Callable[[str], None]


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


def demo_folds(data: TrainingSet, settings: Settings, n_folds: int = 3) -> list[Fold]:
    """Walk-forward folds in bars suited to the history: ``n_folds`` test windows of 1/8 of it each,
    one validation window of the same length, the rest (3/8) for training; embargo = label horizon."""
    bars = int((data.ts_ms.max() - data.ts_ms.min()) // 60_000) + 1
    test = max(60, bars // 8)
    cfg = WalkForwardConfig(
        length_unit="bars", train_length=max(60, 3 * bars // 8), val_length=test, test_length=test,
        embargo_bars=settings.label.h_bars, horizon_bars=settings.label.h_bars, max_folds=n_folds,
    )  # fmt: skip
    return walk_forward_folds(data.ts_ms, data.exit_ts_ms, cfg)


def _refit_fold(fold: Fold) -> Fold:
    """The fold as evaluated out of sample: train on train ∪ validation, score the test window."""
    return replace(
        fold,
        train=np.union1d(fold.train, fold.val),
        val_start_ms=fold.test_start_ms,
        val_end_ms=fold.test_end_ms,
    )


def _fold_metrics(name: str, rows: list[dict[str, float]]) -> StrategyResult:
    return StrategyResult(name=name, folds=[FoldMetrics.from_summary(int(r["fold"]), r) for r in rows])


def _gate_table(report: GateReport) -> pd.DataFrame:
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


def train_and_promote(
    settings: Settings,
    *,
    seed: int,
    num_samples: int,
    num_boost_round: int,
    step: Step,
) -> tuple[TrainSummary, TrainingSet, list[Fold], EvalConfig]:
    """Stages 2–5: features + labels (Ray Data), folds, sweep, retrain, register, gates, promotion."""
    symbols = list(settings.universe)
    lake_root = settings.lake_root
    start_ray(settings, progress=False)
    compute_universe_features(lake_root, symbols, group_size=8)
    step("features")
    label_universe(lake_root, symbols, settings.label)
    step("labels")
    data = load_training_set(lake_root, symbols, settings.label)
    folds = demo_folds(data, settings)
    eval_cfg = EvalConfig(
        num_boost_round=num_boost_round, seed=seed, policy=settings.policy, risk=settings.risk,
        sim=sim_config(settings),
    )  # fmt: skip
    best, sweep = run_sweep(
        data, folds, default_search_space(), num_samples=num_samples, scheduler="fifo",
        storage_path=settings.data_dir.resolve() / "tune", mlflow_tracking_uri=settings.tracking_uri,
        experiment=SWEEP_EXPERIMENT, eval_config=eval_cfg, seed=seed, name="demo_sweep",
        mlflow_artifact_location=settings.mlflow_artifact_root / SWEEP_EXPERIMENT,
    )  # fmt: skip
    step("sweep")
    lake = Lake(lake_root)
    model_rows = [evaluate_fold(best, data, _refit_fold(f), eval_cfg, lake)[0] for f in folds]
    windows = [FoldWindow(f.index, f.test_start_ms, f.test_end_ms) for f in folds]
    base = walk_forward_baselines(
        lake_root, symbols, windows, list(BASELINES), sim=sim_config(settings), risk=settings.risk,
        policy=settings.policy, label_spec=settings.label,
    )  # fmt: skip
    baselines = [_fold_metrics(n, g.to_dict("records")) for n, g in base.groupby("strategy", sort=True)]
    candidate = _fold_metrics(MODEL_NAME, model_rows)
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
    last = _refit_fold(folds[-1])
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
            model, registered_name=MODEL_NAME, experiment=MODEL_EXPERIMENT,
            metrics={f"fold{int(r['fold'])}_{k}": float(r[k]) for r in model_rows for k in FOLD_COLUMNS
                     if math.isfinite(float(r[k]))},
            params={**best, "num_boost_round": num_boost_round, "seed": seed},
            gates_input=gates_input.model_dump(mode="json"),
            train_start_ms=last.train_start_ms,
            train_end_ms=last.test_start_ms,
        )  # fmt: skip
        step("register")
        gates = evaluate_gates(candidate, baselines, PromotionConfig())
        override = None
        if not gates.passed:
            override = f"demo on a synthetic market: gates failed ({', '.join(gates.failed)})"
        result = promote(registry, MODEL_NAME, info.version, gates, override=override, actor=ACTOR)
        production = registry.load_model(f"models:/{MODEL_NAME}@production")
    finally:
        engine.dispose()
    step("gates + promotion")
    summary = TrainSummary(
        n_folds=len(folds), best_config=best, sweep=sweep, folds=pd.DataFrame(fold_rows), gates=gates,
        version=info.version, promotion_kind=result.kind, override=override,
        importance=_importance(production), model=production,
    )  # fmt: skip
    return summary, data, folds, eval_cfg


def last_fold_backtests(settings: Settings, data: TrainingSet, fold: Fold, model: Any) -> dict[str, Any]:
    """Stage 6: the production model's policy and the baselines over the last fold's test window."""
    lake = Lake(settings.lake_root)
    panel = load_panel(lake, data.symbols, fold.test_start_ms, fold.test_end_ms)
    window = np.flatnonzero((data.ts_ms >= fold.test_start_ms) & (data.ts_ms < fold.test_end_ms))
    predicted = model.predict(data.X[window], data.feature_schema_version, data.feature_schema_hash)
    grid = predictions_on_panel(panel, data.ts_ms[window], data.symbol[window], predicted)
    signals = policy_signals(
        panel, grid, btc_regime_on_panel(data, panel, "BTCUSDT"), settings.policy, settings.label
    )
    sim = sim_config(settings)
    results: dict[str, Any] = {"model": run_backtest(panel, signals, sim, settings.risk)}
    results.update(
        run_baselines(lake, panel, list(BASELINES), sim=sim, risk=settings.risk, policy=settings.policy,
                      label_spec=settings.label)
    )  # fmt: skip
    return results


def write_report(
    settings: Settings,
    summary: TrainSummary,
    results: dict[str, Any],
    foundation: pd.DataFrame,
    out_dir: Path,
    market_note: str,
) -> Path:
    """Stage 7: the HTML report (tables, PNGs) and report.json (metrics only, rerun-comparable)."""
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
    summaries = backtest_section(report, results, label="last fold test window", per_symbol_of="model")
    report.heading("fold stability (test windows: model vs baselines)")
    report.table(summary.folds.set_index(["fold", "strategy"]).sort_index().round(4))
    report.heading("promotion gates")
    report.table(_gate_table(summary.gates))
    report.heading("Tune sweep (walk-forward validation score)")
    cols = [
        c for c in summary.sweep.columns if c in (*summary.best_config, "trial_index", "score", "folds_done")
    ]
    report.table(summary.sweep[cols].set_index("trial_index").round(4))
    report.paragraph(f"best configuration: {summary.best_config}")
    report.heading("feature importance (production model, gain summed over outputs)")
    report.table(summary.importance.set_index("feature"))
    report.heading("foundation checks")
    report.table(foundation.set_index("item"))
    folds = summary.folds.drop(columns=[c for c in _TIMING if c in summary.folds]).to_dict("records")
    return report.write({
        "summaries": summaries, "folds": folds, "gates": summary.gates.to_dict(),
        "best_config": summary.best_config, "version": summary.version, "override": summary.override,
    })  # fmt: skip
