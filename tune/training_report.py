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
from pipelines.report import Report, backtest_section, profit_factor_text, with_profit_factor_text
from pipelines.shadow_parity import ENTRY_PRICE_REL_TOL, EXIT_PRICE_REL_TOL, ShadowReplay
from tune.flow import TrainOutcome
from tune.gates import GateReport
from tune.trainable import MIN_RANKED_TRADES

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
    """One row per gate: verdict, value, threshold, reason (an infinite profit factor in words)."""
    return pd.DataFrame(
        [(g.name, "pass" if g.passed else "FAIL", _gate_value(g.name, g.value), g.threshold, g.reason)
         for g in report.gates],
        columns=["gate", "verdict", "value", "threshold", "reason"],
    ).set_index("gate")  # fmt: skip


def _gate_value(name: str, value: float | None) -> Any:
    if name == "oos_profit_factor" and value is not None and np.isinf(value):
        return profit_factor_text(value)
    return value


def fold_stability_table(folds: pd.DataFrame) -> pd.DataFrame:
    """The fold table for reading: one row per (fold, strategy), fold numbers and trades as integers, an
    infinite profit factor in words."""
    table = folds.astype({"fold": int, "trades": int}).set_index(["fold", "strategy"]).sort_index().round(4)
    return with_profit_factor_text(table)


def _trade_columns(sweep: pd.DataFrame) -> list[str]:
    """The sweep table's per-fold validation-trade columns ``fold<i>_trades``, in fold order."""
    found = [c for c in sweep.columns if c.startswith("fold") and c.endswith("_trades") and c[4:-7].isdigit()]
    return sorted(found, key=lambda c: int(c[4:-7]))


def sweep_table(summary: TrainSummary) -> pd.DataFrame:
    """One row per trial: its hyperparameters, validation score, folds done, validation trades per fold and
    in total, whether that many trades let the score rank it, and which configuration the flow used."""
    sweep = summary.sweep
    keep = [
        *summary.best_config,
        "score",
        "folds_done",
        *_trade_columns(sweep),
        "total_trades",
        "ranked",
        "chosen",
    ]
    table = sweep.set_index("trial_index")[[c for c in keep if c in sweep]].round(4)
    counts = [c for c in (*_trade_columns(sweep), "total_trades") if c in table]
    return table.astype(dict.fromkeys(counts, "Int64"))


def sweep_sentence(summary: TrainSummary) -> str:
    """Which configuration the flow used and on how many validation trades, in words: "best" only when it
    made at least ``MIN_RANKED_TRADES`` of them (the sweep table's ``ranked``)."""
    sweep = summary.sweep
    config = summary.best_config
    if "chosen" not in sweep or not sweep["chosen"].any():
        return f"configuration used: {config} (the sweep table does not say how it was chosen)"
    row = sweep[sweep["chosen"]].iloc[0]
    folds = summary.n_folds
    trial, score, total = int(row["trial_index"]), float(row["score"]), int(row["total_trades"])
    per_fold = ", ".join(f"{int(row[c])}" for c in _trade_columns(sweep) if pd.notna(row[c]))
    finished = sweep[sweep["folds_done"] == folds]
    if bool(row["ranked"]):
        n_ranked = int(sweep["ranked"].sum())
        return (
            f"Best configuration: trial {trial}, the highest validation score ({score:.4g}) of the {n_ranked} "
            f"of {len(sweep)} configurations with at least {MIN_RANKED_TRADES} validation trades over the "
            f"{folds} folds; it made {total} ({per_fold} per fold): {config}."
            + (
                " Even that score is not above 0: no configuration showed an edge on validation."
                if score <= 0
                else ""
            )
        )
    if not finished["total_trades"].any():
        how = (
            f"the first in order (all scored {score:.4g})"
            if (finished["score"] == score).all()
            else f"the highest validation score ({score:.4g})"
        )
        return (
            f"No sweep configuration made a validation trade ({len(finished)} configuration(s) × {folds} folds), "
            f"so none can be ranked; the flow used trial {trial}, {how}: {config}."
        )
    most = finished.sort_values(["total_trades", "trial_index"], ascending=[False, True]).iloc[0]
    ties = finished[(finished["score"] == score) & (finished["trial_index"] != trial)]
    tied = f", tied with trial(s) {', '.join(str(int(t)) for t in ties['trial_index'])}" if len(ties) else ""
    return (
        f"No configuration made enough validation trades to rank (at least {MIN_RANKED_TRADES} over the "
        f"{folds} folds; the most was {int(most['total_trades'])}, by trial {int(most['trial_index'])}); the "
        f"flow used trial {trial}, the highest validation score ({score:.4g}{tied}) on {total} trade(s) "
        f"({per_fold} per fold), which is no evidence that it is the best: {config}."
    )


def training_sections(
    report: Report, summary: TrainSummary, results: dict[str, Any], *, gates: bool = True
) -> dict[str, dict[str, float]]:
    """Add the training sections to ``report``: last-fold backtest (metrics, equity, costs, per symbol),
    fold stability, promotion gates (unless ``gates`` is False: shown elsewhere), the Tune sweep and
    feature importance; return the backtest summaries."""
    summaries = backtest_section(report, results, label="last fold test window", per_symbol_of="model")
    report.heading("fold stability (test windows: model vs baselines)")
    report.table(fold_stability_table(summary.folds))
    if gates:
        report.heading("promotion gates")
        report.table(gate_table(summary.gates))
    report.heading("Tune sweep (walk-forward validation score and trades)")
    report.table(sweep_table(summary))
    report.paragraph(sweep_sentence(summary))
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
    folds = summary.folds.drop(columns=[c for c in _TIMING if c in summary.folds]).astype({"fold": int})
    sweep = sweep_table(summary).reset_index()
    return {
        "summaries": summaries, "folds": folds.to_dict("records"), "gates": summary.gates.to_dict(),
        "best_config": summary.best_config, "version": summary.version, "override": summary.override,
        "sweep": sweep.astype(object).where(sweep.notna(), None).to_dict("records"),
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
