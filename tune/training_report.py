"""What a training run reports: ``TrainSummary`` and the report sections demo and research share.

``training_sections`` adds the last-fold backtest, fold stability, promotion gates, the Tune sweep and
feature importance to a ``pipelines.report.Report``; ``report_data`` is the rerun-comparable part of
report.json; ``write_demo_report`` is the demo's whole report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.features_schema import FEATURE_NAMES
from core.model import MultiTargetModel
from pipelines.report import Report, backtest_section
from tune.flow import TrainOutcome
from tune.gates import GateReport

#: Timing columns of the fold table, left out of report.json so reruns compare equal.
_TIMING = ("fit_s", "eval_s")


@dataclass
class TrainSummary:
    """What the training half produced, as the reports and the CLI show it."""

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
    model_name: str = "raytrade-lgbm"
    report_path: Path | None = None
    #: ``production`` after the run (None: no version is production); the registered one when promoted.
    production_version: str | None = None
    #: MLflow run of the registered version.
    run_id: str | None = None

    @classmethod
    def of(cls, outcome: TrainOutcome, registered: MultiTargetModel) -> TrainSummary:
        """The summary of a flow run that swept and promoted; ``registered``: the version loaded back."""
        if outcome.promotion is None or outcome.sweep is None:
            raise ValueError("a training summary needs a run with a sweep and a promotion")
        p = outcome.promotion
        return cls(
            n_folds=len(outcome.folds), best_config=outcome.params, sweep=outcome.sweep, folds=outcome.fold_table,
            gates=p.gates, version=outcome.version.version, promotion_kind=p.kind, override=p.override,
            importance=importance_table(registered), model=registered, model_name=outcome.version.name,
            production_version=p.production_version, run_id=outcome.version.run_id,
        )  # fmt: skip


def importance_table(model: MultiTargetModel, k: int = 20) -> pd.DataFrame:
    """The ``k`` features of largest gain summed over the model's outputs."""
    gains = sum(
        np.asarray(model.booster(t).feature_importance(importance_type="gain"), dtype=np.float64)
        for t in model.targets
    )
    order = np.argsort(-gains, kind="stable")[:k]
    return pd.DataFrame({"feature": [FEATURE_NAMES[i] for i in order], "gain": gains[order].round(2)})


def gate_table(report: GateReport) -> pd.DataFrame:
    """One row per gate: verdict, value, threshold, reason."""
    return pd.DataFrame(
        [(g.name, "pass" if g.passed else "FAIL", g.value, g.threshold, g.reason) for g in report.gates],
        columns=["gate", "verdict", "value", "threshold", "reason"],
    ).set_index("gate")


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


def write_demo_report(
    summary: TrainSummary,
    results: dict[str, Any],
    foundation: pd.DataFrame,
    out_dir: Path,
    market_note: str,
    tracking_uri: str,
) -> Path:
    """The demo's HTML report (tables, PNGs) and report.json (metrics only, rerun-comparable)."""
    report = Report("raytrade demo: SYNTHETIC market", out_dir)
    report.notes.append(f"SYNTHETIC market: {market_note} — generated, not real Binance data; "
                        "these numbers say nothing about real markets")  # fmt: skip
    if summary.override:
        report.notes.append(f"PROMOTED BY OVERRIDE: {summary.override}")
    else:
        report.notes.append("every promotion gate passed")
    report.notes.append(
        f"model {summary.model_name} version {summary.version} is `production` ({summary.promotion_kind}); "
        f"MLflow store {tracking_uri}"
    )
    summaries = training_sections(report, summary, results)
    report.heading("foundation checks")
    report.table(foundation.set_index("item"))
    return report.write(report_data(summary, summaries))
