"""The research report: real data up front, the folds, the training sections and findings in words.

``write_research_report`` writes ``report.html`` and ``report.json`` of ``raytrade research``: that the
data are real, which symbols and dates, and in words only what the numbers show (``findings_in_words``):
whether the model traded at all, why the policy blocked its entries, whether it lost after costs and
how it compares with the baselines; ``tune.training_report.production_sentence`` says where
``production`` stands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import LabelSpec, PolicyConfig
from core.time import ms_to_text
from pipelines.report import Report
from pipelines.selection import ResearchSelection
from storage.lake import Lake
from tune.fold_plans import FoldSizing
from tune.splits import Fold
from tune.training_report import TrainSummary, production_sentence, report_data, training_sections

#: Gates that fail without inputs this flow does not compute (pooled out-of-sample metrics, PBO/DSR).
NO_EVIDENCE = ("oos_trades", "oos_profit_factor", "oos_max_drawdown", "overfitting")


def fold_windows(folds: Sequence[Fold]) -> pd.DataFrame:
    """One row per fold: its train, validation and test windows (UTC) and training rows."""
    rows = [
        {
            "fold": f.index,
            "train": f"{ms_to_text(f.train_start_ms)} → {ms_to_text(f.train_end_ms)}",
            "validation": f"{ms_to_text(f.val_start_ms)} → {ms_to_text(f.val_end_ms)}",
            "test": f"{ms_to_text(f.test_start_ms)} → {ms_to_text(f.test_end_ms)}",
            "train_rows": len(f.train),
        }
        for f in folds
    ]
    return pd.DataFrame(rows).set_index("fold")


def findings_in_words(
    training: TrainSummary,
    summaries: dict[str, dict[str, float]],
    policy: dict[str, Any],
    policy_config: PolicyConfig,
    label_spec: LabelSpec,
) -> list[str]:
    """Plain sentences of what the numbers show, and nothing they do not."""
    out: list[str] = []
    model = summaries["model"]
    trades = int(model["trades"])
    folds = training.folds[training.folds["strategy"] == "model"]
    fold_trades = [int(t) for t in folds["trades"]]
    cells = policy.get("symbol_bars", 0)
    reasons = {k: v for k, v in policy.get("block_reasons", {}).items() if v}
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:4]
    why = ", ".join(f"{k} {v:,} ({v / max(cells, 1):.0%})" for k, v in top)
    if trades == 0:
        out.append(
            f"The model never traded in the last fold's test window: the policy took 0 entries in {cells:,} "
            f"symbol-bars with predictions. Block reasons (a bar can carry several): {why or 'none recorded'}."
        )
    else:
        out.append(
            f"The model traded {trades} times in the last fold's test window ({policy.get('entries', 0):,} entry "
            f"signals in {cells:,} symbol-bars; most frequent blocks: {why or 'none'})."
        )
    if sum(fold_trades) == 0:
        out.append(f"It traded in none of the {len(fold_trades)} walk-forward test windows either.")
    else:
        out.append(f"Trades per walk-forward test window: {', '.join(str(t) for t in fold_trades)}.")
    q05_hits = reasons.get("Q05_BELOW_MIN", 0)
    q05_min, k_sl = policy_config.q05_min_atr, label_spec.k_sl
    if q05_hits:
        sentence = (
            f"The Q05 gate (5% quantile of the net return > {q05_min:g} ATR minus costs) blocked {q05_hits:,} symbol-bars "
            f"({q05_hits / max(cells, 1):.0%})."
        )
        if q05_min > -k_sl:
            sentence += (
                f" It is stricter than the stop loss at {k_sl:g} ATR: a stopped-out trade loses {k_sl:g} ATR plus "
                f"costs, so a model that expects at least 5% of trades to stop out predicts a q05 below "
                f"{q05_min:g} ATR and the policy cannot enter."
            )
        out.append(sentence)
    ev_hits = int(policy.get("ev_blocked", 0))
    if ev_hits and cells:
        out.append(
            f"In {ev_hits / cells:.0%} of symbol-bars the predicted net return (after fees and slippage) did not "
            f"beat the minimum EV of {policy_config.ev_min:g} on either side: no edge after costs was predicted there."
        )
    ret = model["total_return"]
    costs = model.get("fees", 0.0) + model.get("slippage", 0.0) + model.get("funding", 0.0)
    if trades > 0:
        verdict = "lost money" if ret < 0 else "made money" if ret > 0 else "broke even"
        out.append(
            f"After costs the model {verdict} in the last fold: return {ret:+.2%}, profit factor "
            f"{_num(model['profit_factor'])}, costs {costs:,.2f} USDT (fees {model.get('fees', 0.0):,.2f}, "
            f"slippage {model.get('slippage', 0.0):,.2f}, funding {model.get('funding', 0.0):,.2f})."
        )
    baselines = {k: v for k, v in summaries.items() if k != "model"}
    if baselines:
        best_name, best = max(baselines.items(), key=lambda kv: kv[1]["total_return"])
        beaten = [k for k, v in baselines.items() if ret > v["total_return"]]
        out.append(
            f"Best baseline in the last fold: {best_name}, return {best['total_return']:+.2%} with "
            f"{int(best['trades'])} trades; the model's return {ret:+.2%} is above "
            f"{len(beaten)} of {len(baselines)} baselines" + (f" ({', '.join(beaten)})." if beaten else ".")
        )
        losers = [k for k, v in baselines.items() if v["trades"] > 0 and v["total_return"] < 0]
        if losers:
            out.append(f"Baselines that lost after costs: {', '.join(losers)}.")
        if trades == 0 and beaten:
            out.append(
                "The model is above those baselines only because it did not trade (0 return); that is no "
                "evidence of an edge, and the promotion gates do not count it as one: a model without "
                "out-of-sample trades fails every gate but fold_count."
            )
    failed = list(training.gates.failed)
    if failed:
        out.append(f"Promotion gates failed: {', '.join(failed)}.")
        missing = [
            g.name for g in training.gates.gates if not g.passed and g.value is None and g.name in NO_EVIDENCE
        ]
        if missing:
            out.append(
                f"{', '.join(missing)} failed for lack of evidence: this flow computes no pooled out-of-sample "
                "backtest and no overfitting estimate (PBO or deflated Sharpe) yet, so these gates cannot pass."
            )
    else:
        out.append("Every promotion gate passed.")
    return out


def _num(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "undefined"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (no losing trade)"
    return f"{value:.3f}"


def write_research_report(
    lake: Lake,
    policy_config: PolicyConfig,
    label_spec: LabelSpec,
    selection: ResearchSelection,
    sizing: FoldSizing,
    training: TrainSummary,
    results: dict[str, Any],
    policy: dict[str, Any],
    windows: pd.DataFrame,
    out_dir: Path,
    *,
    runtime_s: float,
    num_samples: int,
    num_boost_round: int,
    seed: int,
) -> tuple[Path, dict[str, dict[str, float]], list[str]]:
    """The HTML report (real data, symbols and dates up front, findings in words) and report.json."""
    report = Report("raytrade research: REAL Binance USDⓈ-M data", out_dir)
    with_mark = [s for s in selection.symbols if lake.coverage("mark_1m", s) is not None]
    report.notes += [
        f"REAL DATA: Binance USDⓈ-M perpetual 1m candles and funding from the lake — {selection.describe()}",
        f"lake sources: {', '.join(selection.sources)}",
        f"mark price: 1m mark candles for {len(with_mark)} of {len(selection.symbols)} symbol(s); "
        "otherwise the last price stands in for the mark (stops, liquidation)",
        f"walk-forward: {sizing.describe()}; {training.n_folds} fold(s) built, embargo {label_spec.h_bars} bars",
        f"Tune sweep: {num_samples} configuration(s) × {num_boost_round} LightGBM rounds per output, seed {seed}",
        production_sentence(training),
    ]
    report.heading("data")
    table = pd.DataFrame(
        {
            "bars (1m)": selection.bars,
            "first": ms_to_text(selection.start_ms),
            "end": ms_to_text(selection.end_ms),
        }
    )
    table.index.name = "symbol"
    report.table(table)
    if selection.skipped:
        report.paragraph("left out: " + "; ".join(f"{s}: {why}" for s, why in selection.skipped.items()))
    report.heading("walk-forward folds (UTC)")
    report.table(windows)
    summaries = training_sections(report, training, results)
    findings = findings_in_words(training, summaries, policy, policy_config, label_spec)
    report.notes += findings
    report.heading("policy on the last fold's test window (model)")
    counts = {"symbol-bars with predictions": policy["symbol_bars"], "entries": policy["entries"],
              "long entries": policy["long_entries"], "short entries": policy["short_entries"]}  # fmt: skip
    counts.update({f"blocked: {k}": v for k, v in policy["block_reasons"].items() if v})
    report.table(pd.DataFrame({"count": counts}))
    report.paragraph(
        f"policy: ev_min {policy_config.ev_min:g}, q05 > {policy_config.q05_min_atr:g} ATR − costs, "
        f"expected MAE < {policy_config.mae_max_atr:g} ATR, leverage {policy_config.leverage}; "
        f"labels: TP {label_spec.k_tp:g} ATR, SL {label_spec.k_sl:g} ATR, horizon {label_spec.h_bars} "
        f"bars, taker fee {label_spec.fee_rate:.4%} per fill, slippage_k {label_spec.slippage_k:g}"
    )
    report.paragraph(f"runtime: {runtime_s:.0f} s")
    data = {
        "real_data": True,
        "symbols": list(selection.symbols),
        "start_ms": selection.start_ms,
        "end_ms": selection.end_ms,
        "bars": selection.bars,
        "sources": list(selection.sources),
        "skipped": selection.skipped,
        "fold_windows": windows.reset_index().to_dict("records"),
        "policy": policy,
        "findings": findings,
        "model_name": training.model_name,
        "promotion_kind": training.promotion_kind,
        "production_version": training.production_version,
        "run_id": training.run_id,
        "num_samples": num_samples,
        "num_boost_round": num_boost_round,
        "seed": seed,
        "runtime_s": runtime_s,
        **report_data(training, summaries),
    }
    return report.write(data), summaries, findings
