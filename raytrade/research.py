"""``raytrade research``: the demo's training flow on real Binance history already in the lake.

The history comes from ``raytrade history`` (data.binance.vision dumps, REST) or ``raytrade import``
(e.g. ``../shared/data/binance_um``). Wiring only: ``pipelines.selection.select_data`` chooses the
symbols and the period (real data only), ``raytrade.demo_train.run_training`` runs the flow of
``tune.flow`` (features and labels on Ray Data, walk-forward folds sized to the history or given in
days or bars, a small Tune sweep logged to MLflow, the best configuration retrained and registered,
gates against the baselines on the same folds) with the research promotion policy: ``production``
moves only when every gate passes or the user gave an override reason; otherwise the refusal is
recorded and ``production`` stays where it was. A last-fold portfolio backtest against the baselines
and the report of ``tune.research_report`` (``<data_dir>/reports/research/report.html`` with
``report.json``) follow.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from core.errors import ConfigError
from pipelines.selection import MIN_DAYS, ResearchSelection, select_data
from raytrade.demo_train import MODEL_NAME, TRAINING_STAGES, last_fold_backtests, run_training
from raytrade.settings import Settings
from raytrade.training_progress import training_display
from storage import db
from storage.lake import Lake
from tune.flow import PromotionPlan, SweepPlan, TrainRequest
from tune.fold_plans import FoldSizing
from tune.research_report import data_warnings, fold_windows, write_research_report
from tune.training_report import TrainSummary

SWEEP_EXPERIMENT = "raytrade-research-sweeps"
MODEL_EXPERIMENT = "raytrade-research"
ACTOR = "raytrade-research"


@dataclass
class ResearchSummary:
    """What a research run produced."""

    selection: ResearchSelection
    training: TrainSummary
    fold_windows: pd.DataFrame
    summaries: dict[str, dict[str, float]]
    policy: dict[str, Any]
    findings: list[str]
    report_path: Path
    runtime_s: float


def run_research(
    settings: Settings,
    *,
    console: Console,
    symbols: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    sizing: FoldSizing | None = None,
    seed: int = 7,
    num_samples: int = 4,
    num_boost_round: int = 30,
    override: str | None = None,
    model_name: str = MODEL_NAME,
    min_days: float = MIN_DAYS,
    progress: bool = True,
) -> ResearchSummary:
    """Run the training flow on real lake history and write the report; return the summary.

    ``override``: the reason to promote even though gates fail (recorded); None leaves ``production``
    untouched when any gate fails.
    """
    started = time.perf_counter()
    sizing = sizing or FoldSizing()
    if override is not None and not override.strip():
        raise ConfigError("--override needs a reason")
    selection = select_data(Lake(settings.lake_root), symbols, start_ms, end_ms, min_days=min_days)
    console.print(
        f"[bold green]REAL DATA[/bold green]: Binance USDⓈ-M history from the lake: {selection.describe()}"
    )
    if selection.skipped:
        console.print(
            "left out (candles for too little of the period): "
            + ", ".join(f"{s} ({why})" for s, why in selection.skipped.items())
        )
    for warning in data_warnings(Lake(settings.lake_root), selection, settings.policy):
        console.print(f"warning: {warning}", style="yellow", markup=False)
    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)  # the registry mirrors versions into `models`, promotions into `events`
    finally:
        engine.dispose()
    request = TrainRequest(
        symbols=selection.symbols, folds=lambda data: sizing.cut(data, settings.label.h_bars), seed=seed,
        num_boost_round=num_boost_round, model_name=model_name, experiment=MODEL_EXPERIMENT,
        start_ms=selection.start_ms, end_ms=selection.end_ms,
        sweep=SweepPlan(num_samples, SWEEP_EXPERIMENT, "research_sweep"),
        promotion=PromotionPlan(override=lambda _gates: override, actor=ACTOR),
    )  # fmt: skip
    stages = (*TRAINING_STAGES, "last-fold backtest", "report")
    with training_display(console, progress, stages, num_samples) as display:
        step = display.step
        training, data, folds, _cfg = run_training(settings, request, step, display.flow_progress())
        diagnostics: dict[str, Any] = {}
        results = last_fold_backtests(settings, data, folds[-1], training.model, diagnostics=diagnostics)
        step("last-fold backtest")
        windows = fold_windows(folds)
        out_dir = (settings.data_dir / "reports" / "research").resolve()
        runtime_s = time.perf_counter() - started
        report_path, summaries, findings = write_research_report(
            Lake(settings.lake_root), settings.policy, settings.label, selection, sizing, training, results, diagnostics, windows, out_dir,
            runtime_s=runtime_s, num_samples=num_samples, num_boost_round=num_boost_round, seed=seed,
        )  # fmt: skip
        step("report")
    training.report_path = report_path
    return ResearchSummary(
        selection, training, windows, summaries, diagnostics, findings, report_path,
        time.perf_counter() - started,
    )  # fmt: skip
