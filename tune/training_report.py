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
from core.time import ms_to_text
from pipelines.report import Report, backtest_section
from pipelines.shadow_parity import ENTRY_PRICE_REL_TOL, EXIT_PRICE_REL_TOL, ShadowReplay
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


def production_sentence(training: TrainSummary) -> str:
    """Where ``production`` stands after the run, in words."""
    name, version = training.model_name, training.version
    if training.promotion_kind == "refused":
        now = training.production_version
        where = f"remains version {now}" if now else "has no version (nothing is in production)"
        return (
            f"NOT PROMOTED: {name} version {version} was registered, but gates failed and no override was "
            f"given; `production` {where}."
        )
    if training.override:
        return f"PROMOTED BY OVERRIDE: {name} version {version} is `production`; reason: {training.override}"
    if training.promotion_kind == "unchanged":
        return f"{name} version {version} already was `production`."
    return f"every promotion gate passed: {name} version {version} is `production`."


def evidence_sentence(gates: GateReport) -> str:
    """The out-of-sample evidence the promotion was judged on, in words: the pooled out-of-sample
    trades, profit factor and drawdown, how many gates passed and why the others failed."""
    oos_names = ("oos_trades", "oos_profit_factor", "oos_max_drawdown")
    oos = "; ".join(gates.gate(name).reason for name in oos_names)
    passed = sum(g.passed for g in gates.gates)
    verdict = f"{passed} of {len(gates.gates)} gates passed"
    if gates.failed:
        others = [f"{g.name} ({g.reason})" for g in gates.gates if not g.passed and g.name not in oos_names]
        verdict += f"; failed: {', '.join(gates.failed)}" + (f"; {'; '.join(others)}" if others else "")
    return f"evidence (pooled out-of-sample test windows): {oos}; {verdict}"


def gate_table(report: GateReport) -> pd.DataFrame:
    """One row per gate: verdict, value, threshold, reason."""
    return pd.DataFrame(
        [(g.name, "pass" if g.passed else "FAIL", g.value, g.threshold, g.reason) for g in report.gates],
        columns=["gate", "verdict", "value", "threshold", "reason"],
    ).set_index("gate")


def training_sections(
    report: Report, summary: TrainSummary, results: dict[str, Any], *, gates: bool = True
) -> dict[str, dict[str, float]]:
    """Add the training sections to ``report``: last-fold backtest (metrics, equity, costs, per symbol),
    fold stability, promotion gates (unless ``gates`` is False: shown elsewhere), the Tune sweep and
    feature importance; return the backtest summaries."""
    summaries = backtest_section(report, results, label="last fold test window", per_symbol_of="model")
    report.heading("fold stability (test windows: model vs baselines)")
    report.table(summary.folds.set_index(["fold", "strategy"]).sort_index().round(4))
    if gates:
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


def shadow_sentence(replay: ShadowReplay | None, skipped: str | None = None) -> str:
    """What the shadow replay did, in words (``skipped``: why there was none)."""
    if replay is None:
        return f"shadow replay: none ({skipped or 'not run'})"
    window = f"{ms_to_text(replay.start_ms)} → {ms_to_text(replay.end_ms)} UTC"
    head = "SHADOW ≠ BACKTEST" if not replay.parity.ok else "shadow replay"
    return (
        f"{head} of {window} through the realtime path (replay venue → ingest actors → Serve Predictor → "
        f"policy → execution actor), {replay.symbols} symbols, {replay.signals:,} signals, version "
        f"{replay.model_version}: {replay.parity.verdict}"
    )


def shadow_section(report: Report, replay: ShadowReplay) -> None:
    """The shadow session's trades beside the backtest's on the same window, with the verdict."""
    report.heading("shadow replay vs backtest (same model, same window)")
    report.paragraph(shadow_sentence(replay))
    report.paragraph(
        "Identical means the same (symbol, side, entry bar), the same exit kind and, except for END, the same "
        "exit bar. Prices differ by the replay venue's book model: the shadow fills at the book's ask/bid "
        f"(half-spread max(tick/2, 1 bp)) after the decision bar's close, within {ENTRY_PRICE_REL_TOL:.1%} of "
        "the backtest's next-bar open; SL/TP exits fill at the first mark tick past the trigger, within "
        f"{EXIT_PRICE_REL_TOL:.1%} of the bar rule's trigger price."
    )
    table = replay.parity.table
    if len(table):
        report.table(table.round(6), caption=f"{len(table)} trade(s)")


def write_demo_report(
    summary: TrainSummary,
    results: dict[str, Any],
    foundation: pd.DataFrame,
    out_dir: Path,
    market_note: str,
    tracking_uri: str,
    *,
    shadow: ShadowReplay | None = None,
    shadow_skipped: str | None = None,
) -> Path:
    """The demo's HTML report (tables, PNGs) and report.json (metrics only, rerun-comparable).

    It leads with what a user needs first: whether a model was promoted, on what evidence, and what
    the shadow replay did; then the detail (last-fold backtest, folds, sweep, importance, foundation).
    """
    report = Report("raytrade demo: SYNTHETIC market", out_dir)
    report.notes += [
        production_sentence(summary),
        evidence_sentence(summary.gates),
        shadow_sentence(shadow, shadow_skipped),
        f"SYNTHETIC market: {market_note} — generated, not real Binance data; these numbers say nothing "
        "about real markets",
        f"MLflow store {tracking_uri}",
    ]
    report.heading("promotion gates (the evidence)")
    report.table(gate_table(summary.gates))
    if shadow is not None:
        shadow_section(report, shadow)
    summaries = training_sections(report, summary, results, gates=False)
    report.heading("foundation checks")
    report.table(foundation.set_index("item"))
    data = report_data(summary, summaries)
    data["shadow"] = None if shadow is None else shadow.to_dict()
    return report.write(data)
