"""The research report: real data up front, the folds, the training sections and findings in words.

``write_research_report`` writes ``report.html`` and ``report.json`` of ``raytrade research``: that the
data are real, which symbols and dates, what the data leave out (``data_warnings``: gaps, BTCUSDT
missing, mark candles research does not read), and in words only what the numbers beside them show
(``findings_in_words``): the configuration the sweep handed on and on how many validation trades,
whether the model traded, why the policy blocked its entries, whether it lost after costs, how it
compares with the baselines and why gates failed; ``tune.training_report.production_sentence`` says
where ``production`` stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import LabelSpec, PolicyConfig
from core.features import BTC_SYMBOL
from core.features_schema import FEATURE_NAMES
from core.time import ms_to_text
from pipelines.report import Report, profit_factor_text
from pipelines.selection import ResearchSelection
from storage.lake import Lake
from tune.fold_plans import FoldSizing
from tune.splits import Fold
from tune.training_report import (
    TrainSummary,
    production_sentence,
    report_data,
    sweep_sentence,
    training_sections,
)

#: The features taken from BTCUSDT's bars (NaN for every symbol when the lake has none).
BTC_FEATURES = tuple(f for f in FEATURE_NAMES if "_btc_" in f)
#: The policy's block reasons that mean "no edge after costs": reported as one (their union, ``ev_blocked``).
EV_REASONS = ("EV_NOT_POSITIVE", "EV_BELOW_MIN")
#: Candle datasets of the mark price that research does not read (features, labels and the simulator
#: read ``mark_1m`` only).
UNUSED_MARKS = ("mark_1h", "mark_8h")


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


def data_warnings(lake: Lake, selection: ResearchSelection, policy_config: PolicyConfig) -> list[str]:
    """What the lake's data leave out of a research run, in words: gaps of the selection, BTCUSDT missing
    (its ``btc_*`` features and the BTC regime the policy sizes by) and mark candles of intervals research
    does not read. Empty when nothing is left out."""
    out = list(selection.warnings)
    btc = BTC_SYMBOL
    if btc not in selection.symbols:
        have = len(lake.read("candles_1m", btc, selection.start_ms, selection.end_ms, columns=("ts",)))
        share = have / max(1, selection.minutes)
        regime = _unknown_regime(policy_config)
        if have == 0:
            out.append(
                f"{btc} has no 1m candles in the lake for the period: the {len(BTC_FEATURES)} btc_* features "
                f"({', '.join(BTC_FEATURES[:4])}, …) are NaN for every symbol and the BTC regime is unknown, "
                f"{regime}. Import {btc} (`raytrade import` or `raytrade history`) to give the model BTC's state."
            )
        else:
            out.append(
                f"{btc} is not among the research symbols: the btc_* features come from its lake candles "
                f"({share:.0%} of the period's minutes{', NaN elsewhere' if share < 1 else ''}), but the "
                f"backtests take the BTC regime from {btc}'s own rows, so it is unknown, {regime}."
            )
    for dataset in UNUSED_MARKS:
        symbols = [s for s in selection.symbols if lake.coverage(dataset, s) is not None]
        if not symbols:
            continue
        without = [s for s in symbols if lake.coverage("mark_1m", s) is None]
        no_basis = [s for s in without if lake.coverage("premium_1m", s) is None]
        instead = (
            f"; {len(without)} of them have no 1m marks, so the last price stands in for the mark price "
            "(ATR, stop and take-profit triggers, liquidation, label barriers)"
            + (
                f" and the basis features of {len(no_basis)} (no premium index either) are NaN"
                if no_basis
                else ""
            )
            if without
            else ""
        )
        out.append(
            f"{dataset} candles of {len(symbols)} symbol(s) ({', '.join(symbols)}) are in the lake but unused: "
            f"features, labels and the simulator read 1m mark candles only{instead}."
        )
    return out


def _unknown_regime(policy: PolicyConfig) -> str:
    action = policy.btc_high_vol_action
    if action == "size_down":
        return (
            f"which the policy treats as high volatility: every entry is sized at {policy.high_vol_size_mult:g}× "
            "(btc_high_vol_action 'size_down')"
        )
    if action == "block":
        return (
            "which the policy treats as high volatility: it blocks every entry (btc_high_vol_action 'block')"
        )
    return "which the policy ignores (btc_high_vol_action 'none'): sizing is unaffected"


def findings_in_words(
    training: TrainSummary,
    summaries: dict[str, dict[str, float]],
    policy: dict[str, Any],
    policy_config: PolicyConfig,
    label_spec: LabelSpec,
) -> list[str]:
    """Plain sentences of what the numbers beside them show, each derived from them: the configuration
    the sweep handed on, the model's trades and the policy's block reasons in the last fold's test window,
    its trades per fold, its result after costs against the baselines, and the promotion gates."""
    out = [sweep_sentence(training)]
    model = summaries["model"]
    trades = int(model["trades"])
    cells = int(policy.get("symbol_bars", 0))
    entries = int(policy.get("entries", 0))
    if cells == 0:
        out.append("The policy saw no symbol-bar with a prediction in the last fold's test window.")
    elif trades == 0:
        out.append(
            f"The model never traded in the last fold's test window: {entries:,} entry signal(s) in {cells:,} "
            "symbol-bars with predictions."
        )
    else:
        out.append(
            f"The model traded {trades} times in the last fold's test window ({entries:,} entry signals in "
            f"{cells:,} symbol-bars with predictions)."
        )
    blocks = _block_sentence(policy, policy_config, cells)
    if blocks:
        out.append(blocks)
    reasons = policy.get("block_reasons", {})
    q05_min, k_sl = policy_config.q05_min_atr, label_spec.k_sl
    if reasons.get("Q05_BELOW_MIN", 0) and q05_min > -k_sl:
        out.append(
            f"The Q05 floor ({q05_min:g} ATR minus costs) is stricter than the stop loss at {k_sl:g} ATR: a "
            f"stopped-out trade loses {k_sl:g} ATR plus costs, so a model that expects at least 5% of trades "
            f"to stop out predicts a q05 below the floor and the policy cannot enter."
        )
    folds = training.folds[training.folds["strategy"] == "model"].sort_values("fold")
    fold_trades = [(int(f), int(t)) for f, t in zip(folds["fold"], folds["trades"], strict=True)]
    if sum(t for _, t in fold_trades) == 0:
        either = " either" if trades == 0 else ""
        out.append(f"It traded in none of the {len(fold_trades)} walk-forward test windows{either}.")
    else:
        out.append(
            "Trades per walk-forward test window: "
            + ", ".join(f"fold {f}: {t}" for f, t in fold_trades)
            + "."
        )
    ret = model["total_return"]
    if trades > 0:
        fees, slippage, funding = (model.get(k, 0.0) for k in ("fees", "slippage", "funding"))
        verdict = "lost money" if ret < 0 else "made money" if ret > 0 else "broke even"
        out.append(
            f"After costs the model {verdict} in the last fold: return {ret:+.2%}, profit factor "
            f"{profit_factor_text(model['profit_factor'], '{:.3f}')}, costs {fees + slippage + funding:,.2f} USDT "
            f"(fees {fees:,.2f}, slippage {slippage:,.2f}, funding {funding:,.2f})."
        )
    out += _baseline_sentences(summaries, training, ret, trades)
    gates = training.gates
    failed = [g for g in gates.gates if not g.passed]
    if failed:
        out.append(
            f"Promotion gates failed ({len(failed)} of {len(gates.gates)}): "
            + "; ".join(f"{g.name} ({g.reason})" for g in failed)
            + "."
        )
    else:
        out.append(f"Every promotion gate passed ({len(gates.gates)} of {len(gates.gates)}).")
    return out


def _block_sentence(policy: dict[str, Any], config: PolicyConfig, cells: int) -> str | None:
    """Each block reason once, by frequency; the two EV reasons as their union."""
    if cells == 0:
        return None
    reasons = {k: int(v) for k, v in policy.get("block_reasons", {}).items() if v}
    items = [(v, k) for k, v in reasons.items() if k not in EV_REASONS]
    ev_names = [k for k in EV_REASONS if k in reasons]
    if ev_names:
        ev = int(policy.get("ev_blocked", max(reasons[k] for k in ev_names)))
        items.append(
            (ev, f"no edge after costs ({' or '.join(ev_names)}: predicted return net of fees, slippage and "
                 f"risk penalty ≤ {max(0.0, config.ev_min):g} on both sides)")
        )  # fmt: skip
    if not items:
        return f"The policy blocked none of the {cells:,} symbol-bars with predictions."
    items.sort(key=lambda vk: (-vk[0], vk[1]))
    return (
        f"Block reasons on the {cells:,} symbol-bars with predictions (a bar can carry several): "
        + "; ".join(f"{name} {count:,} ({count / cells:.0%})" for count, name in items)
        + "."
    )


def _baseline_sentences(
    summaries: dict[str, dict[str, float]], training: TrainSummary, ret: float, trades: int
) -> list[str]:
    baselines = {k: v for k, v in summaries.items() if k != "model"}
    if not baselines:
        return []
    best_name, best = max(baselines.items(), key=lambda kv: kv[1]["total_return"])
    beaten = [k for k, v in baselines.items() if ret > v["total_return"]]
    out = [
        f"Best baseline in the last fold: {best_name}, return {best['total_return']:+.2%} with "
        f"{int(best['trades'])} trades; the model's return {ret:+.2%} is above "
        f"{len(beaten)} of {len(baselines)} baselines" + (f" ({', '.join(beaten)})." if beaten else ".")
    ]
    losers = [k for k, v in baselines.items() if v["trades"] > 0 and v["total_return"] < 0]
    if losers:
        out.append(f"Baselines that lost after costs: {', '.join(losers)}.")
    if trades == 0 and beaten:
        gate = training.gates.gate("beats_baselines")
        verdict = f"the beats_baselines gate passed ({gate.reason})" if gate.passed else (
            f"the beats_baselines gate failed ({gate.reason})"
        )  # fmt: skip
        out.append(
            "The model is above those baselines only because it did not trade (0 return), which is no "
            f"evidence of an edge; {verdict}."
        )
    return out


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
    warnings = data_warnings(lake, selection, policy_config)
    report.notes += [
        f"REAL DATA: Binance USDⓈ-M perpetual 1m candles and funding from the lake — {selection.describe()}",
        *(f"WARNING: {w}" for w in warnings),
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
            "coverage": {s: f"{c:.1%}" for s, c in selection.coverage.items()},
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
        "coverage": selection.coverage,
        "warnings": warnings,
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
