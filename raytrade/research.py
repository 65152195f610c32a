"""``raytrade research``: the demo's training flow on real Binance history already in the lake.

The history comes from ``raytrade history`` (data.binance.vision dumps, REST) or ``raytrade import``
(e.g. ``../shared/data/binance_um``). ``select_data`` chooses the symbols and the period: by default
every symbol of the lake whose 1m candles span the whole period, the period being all of the lake;
the period is then narrowed to what every chosen symbol covers, so each fold's panel has every
symbol. A lake month holding synthetic rows is refused: this command reports on real data only.

``run_research`` then runs ``raytrade.demo_train.run_training`` (features and labels on Ray Data,
walk-forward folds sized to the history or given in days or bars, a small Tune sweep logged to
MLflow, the best configuration retrained and registered, gates against the baselines on the same
folds) with the research promotion policy: ``production`` moves only when every gate passes or the
user gave an override reason; otherwise the refusal is recorded and ``production`` stays where it
was. A last-fold portfolio backtest against the baselines and the HTML report
(``<data_dir>/reports/research/report.html`` with ``report.json``) follow. The report states that
the data are real, which symbols and dates, and in words only what the numbers show: whether the
model traded at all, why the policy blocked its entries, whether it lost after costs and how it
compares with the baselines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS, ms_to_datetime
from pipelines.report import Report
from raytrade.demo import training_steps
from raytrade.demo_train import (
    MODEL_NAME,
    TRAINING_STAGES,
    TrainingPlan,
    TrainSummary,
    demo_folds,
    last_fold_backtests,
    report_data,
    run_training,
    training_sections,
)
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from tune.dataset import TrainingSet
from tune.splits import Fold, WalkForwardConfig, walk_forward_folds

SWEEP_EXPERIMENT = "raytrade-research-sweeps"
MODEL_EXPERIMENT = "raytrade-research"
ACTOR = "raytrade-research"
#: Shortest period research runs on, days.
MIN_DAYS = 3.0
#: A symbol whose candles start (end) within this of the period's start (end) counts as spanning it.
COVERAGE_SLACK_MS = DAY_MS
SYNTHETIC_SOURCE = "synthetic"
#: Gates that fail without inputs this flow does not compute (pooled out-of-sample metrics, PBO/DSR).
NO_EVIDENCE = ("oos_trades", "oos_profit_factor", "oos_max_drawdown", "overfitting")


@dataclass(frozen=True)
class ResearchSelection:
    """The data a research run uses: symbols, the period [start_ms, end_ms) and what was left out."""

    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    bars: dict[str, int]
    sources: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS

    def describe(self) -> str:
        """One line: symbols and period, in UTC."""
        return (
            f"{len(self.symbols)} symbols ({', '.join(self.symbols)}), {utc(self.start_ms)} → "
            f"{utc(self.end_ms)} UTC ({self.days:.1f} days, {sum(self.bars.values()):,} symbol-bars of 1m)"
        )


class FoldSizing(BaseModel):
    """How research cuts walk-forward folds: sized to the history (no lengths given) or explicit.

    Sized to the history: with u = 1/(folds + 5) of the period, ``folds`` test windows of u, a
    validation window of u and 3u of training (``raytrade.demo_train.demo_folds``). Explicit: train,
    val and test lengths in ``unit`` (days or 1m bars), rolling, the last test window ending with the
    data. The embargo after every boundary is the label horizon in both cases.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    folds: int = Field(3, ge=1, le=50, description="walk-forward folds (test windows)")
    unit: Literal["days", "bars"] = Field("days", description="unit of train/val/test")
    train: float | None = Field(None, gt=0, description="training window")
    val: float | None = Field(None, gt=0, description="validation window (model selection)")
    test: float | None = Field(None, gt=0, description="test window (out of sample)")

    @model_validator(mode="after")
    def _all_or_none(self) -> FoldSizing:
        given = [x is not None for x in (self.train, self.val, self.test)]
        if any(given) and not all(given):
            raise ValueError("give --train, --val and --test together (or none: sized to the history)")
        return self

    @property
    def sized_to_history(self) -> bool:
        return self.train is None

    def describe(self) -> str:
        if self.sized_to_history:
            return f"{self.folds} folds sized to the history (test = validation = 1/{self.folds + 5}, train = 3/{self.folds + 5})"
        return (
            f"{self.folds} folds of train {self.train:g} / val {self.val:g} / test {self.test:g} {self.unit}"
        )


def utc(ts_ms: int) -> str:
    """``YYYY-MM-DD HH:MM`` of an epoch-ms time, UTC."""
    return ms_to_datetime(int(ts_ms)).strftime("%Y-%m-%d %H:%M")


def select_data(
    lake: Lake,
    symbols: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    min_days: float = MIN_DAYS,
) -> ResearchSelection:
    """Choose the symbols and the period [start, end) of a research run from the lake's ``candles_1m``.

    ``symbols`` None: every lake symbol whose candles span the period (within ``COVERAGE_SLACK_MS``),
    the period defaulting to all of the lake; given: each must have candles, and the period defaults
    to their common span. The period is then narrowed to the span every chosen symbol covers.
    Raises ConfigError naming what is missing: no candles, no symbol spanning the period, a period
    shorter than ``min_days``, or synthetic rows in the period.
    """
    have = lake.symbols("candles_1m")
    if not have:
        raise ConfigError(
            f"the lake at {lake.root} has no candles_1m: run `raytrade import PATH` or `raytrade history` first"
        )
    if symbols is not None:
        missing = [s for s in symbols if s not in have]
        if missing:
            raise ConfigError(f"no candles_1m in the lake at {lake.root} for {', '.join(missing)}")
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"symbols repeat: {', '.join(symbols)}")
    candidates = list(symbols) if symbols is not None else have
    spans: dict[str, tuple[int, int]] = {}
    for s in candidates:
        cov = lake.coverage("candles_1m", s)
        if cov is not None and cov.rows:
            spans[s] = (cov.first_ts, cov.last_ts + MINUTE_MS)
    if not spans:
        raise ConfigError(f"the lake at {lake.root} has no candle rows for {', '.join(candidates)}")
    if symbols is not None:
        lo, hi = max(a for a, _ in spans.values()), min(b for _, b in spans.values())
    else:
        lo, hi = min(a for a, _ in spans.values()), max(b for _, b in spans.values())
    start = _ceil_minute(start_ms) if start_ms is not None else lo
    end = _floor_minute(end_ms) if end_ms is not None else hi
    if end <= start:
        raise ConfigError(f"empty period: {utc(start)} → {utc(end)} UTC")
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for s in candidates:
        first, stop = spans.get(s, (None, None))
        if first is None or stop is None:
            skipped[s] = "no candle rows"
        elif first > start + COVERAGE_SLACK_MS or stop < end - COVERAGE_SLACK_MS:
            skipped[s] = f"candles cover {utc(first)} → {utc(stop)} only"
        else:
            chosen.append(s)
    if symbols is not None and skipped:
        raise ConfigError(
            f"not every symbol spans {utc(start)} → {utc(end)} UTC: "
            + "; ".join(f"{s}: {why}" for s, why in skipped.items())
            + " (choose --start/--end inside their common span)"
        )
    if not chosen:
        raise ConfigError(
            f"no symbol of the lake spans {utc(start)} → {utc(end)} UTC; narrow it with --start/--end"
        )
    start = max(start, *(spans[s][0] for s in chosen))
    end = min(end, *(spans[s][1] for s in chosen))
    if (end - start) / DAY_MS < min_days:
        raise ConfigError(
            f"{(end - start) / DAY_MS:.2f} days of common history ({utc(start)} → {utc(end)} UTC) for "
            f"{', '.join(chosen)}: research needs at least {min_days:g}"
        )
    bars: dict[str, int] = {}
    sources: set[str] = set()
    for s in chosen:
        bars[s] = len(lake.read("candles_1m", s, start, end, columns=("close",)))
        months = _months(start, end)
        for month, srcs in lake.sources("candles_1m", s).items():
            if month not in months:
                continue
            if any(src == SYNTHETIC_SOURCE for src in srcs):
                raise ConfigError(
                    f"candles_1m of {s} in {month} hold SYNTHETIC rows: research runs on real data only; "
                    "use a separate RAYTRADE_DATA_DIR (or --start/--end outside the synthetic months)"
                )
            sources.update(srcs)
    return ResearchSelection(tuple(chosen), start, end, bars, tuple(sorted(sources)), skipped)


def _ceil_minute(ts_ms: int) -> int:
    return -(-int(ts_ms) // MINUTE_MS) * MINUTE_MS


def _floor_minute(ts_ms: int) -> int:
    return int(ts_ms) // MINUTE_MS * MINUTE_MS


def _months(start_ms: int, end_ms: int) -> set[str]:
    months = pd.period_range(pd.Timestamp(start_ms, unit="ms"), pd.Timestamp(end_ms - 1, unit="ms"), freq="M")
    return {str(m) for m in months}


def research_folds(data: TrainingSet, settings: Settings, sizing: FoldSizing) -> list[Fold]:
    """The walk-forward folds of ``sizing`` over the training set (see ``FoldSizing``)."""
    if sizing.sized_to_history:
        return demo_folds(data, settings, sizing.folds)
    h = settings.label.h_bars
    try:
        cfg = WalkForwardConfig(
            length_unit=sizing.unit, train_length=sizing.train, val_length=sizing.val, test_length=sizing.test,
            embargo_bars=h, horizon_bars=h, max_folds=sizing.folds,
        )  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"walk-forward windows: {e}") from None
    return walk_forward_folds(data.ts_ms, data.exit_ts_ms, cfg)


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
            "left out (history does not span the period): "
            + ", ".join(f"{s} ({why})" for s, why in selection.skipped.items())
        )
    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)  # the registry mirrors versions into `models`, promotions into `events`
    finally:
        engine.dispose()
    plan = TrainingPlan(
        symbols=selection.symbols, seed=seed, num_samples=num_samples, num_boost_round=num_boost_round,
        folds=lambda data: research_folds(data, settings, sizing), override=lambda _gates: override,
        start_ms=selection.start_ms, end_ms=selection.end_ms, model_name=model_name,
        sweep_experiment=SWEEP_EXPERIMENT, model_experiment=MODEL_EXPERIMENT, sweep_name="research_sweep",
        actor=ACTOR,
    )  # fmt: skip
    with training_steps(console, progress, len(TRAINING_STAGES) + 2) as step:
        training, data, folds, _cfg = run_training(settings, plan, step)
        diagnostics: dict[str, Any] = {}
        results = last_fold_backtests(settings, data, folds[-1], training.model, diagnostics=diagnostics)
        step("last-fold backtest")
        windows = fold_windows(folds)
        out_dir = (settings.data_dir / "reports" / "research").resolve()
        runtime_s = time.perf_counter() - started
        report_path, summaries, findings = write_research_report(
            settings, selection, sizing, training, results, diagnostics, windows, out_dir,
            runtime_s=runtime_s, num_samples=num_samples, num_boost_round=num_boost_round, seed=seed,
        )  # fmt: skip
        step("report")
    training.report_path = report_path
    return ResearchSummary(
        selection, training, windows, summaries, diagnostics, findings, report_path,
        time.perf_counter() - started,
    )  # fmt: skip


def fold_windows(folds: Sequence[Fold]) -> pd.DataFrame:
    """One row per fold: its train, validation and test windows (UTC) and training rows."""
    rows = [
        {
            "fold": f.index,
            "train": f"{utc(f.train_start_ms)} → {utc(f.train_end_ms)}",
            "validation": f"{utc(f.val_start_ms)} → {utc(f.val_end_ms)}",
            "test": f"{utc(f.test_start_ms)} → {utc(f.test_end_ms)}",
            "train_rows": len(f.train),
        }
        for f in folds
    ]
    return pd.DataFrame(rows).set_index("fold")


def findings_in_words(
    training: TrainSummary,
    summaries: dict[str, dict[str, float]],
    policy: dict[str, Any],
    settings: Settings,
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
    q05_min, k_sl = settings.policy.q05_min_atr, settings.label.k_sl
    if q05_hits:
        sentence = (
            f"The Q05 gate (5% quantile of the net return > {q05_min:g} ATR) blocked {q05_hits:,} symbol-bars "
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
            f"beat the minimum EV of {settings.policy.ev_min:g} on either side: no edge after costs was predicted there."
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
                "evidence of an edge. The same holds for the beats_baselines gate, which counts an undefined "
                "Sharpe (no trades) as 0."
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


def write_research_report(
    settings: Settings,
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
    lake = Lake(settings.lake_root)
    with_mark = [s for s in selection.symbols if lake.coverage("mark_1m", s) is not None]
    report.notes += [
        f"REAL DATA: Binance USDⓈ-M perpetual 1m candles and funding from the lake — {selection.describe()}",
        f"lake sources: {', '.join(selection.sources)}",
        f"mark price: 1m mark candles for {len(with_mark)} of {len(selection.symbols)} symbol(s); "
        "otherwise the last price stands in for the mark (stops, liquidation)",
        f"walk-forward: {sizing.describe()}; {training.n_folds} fold(s) built, embargo {settings.label.h_bars} bars",
        f"Tune sweep: {num_samples} configuration(s) × {num_boost_round} LightGBM rounds per output, seed {seed}",
        production_sentence(training),
    ]
    report.heading("data")
    table = pd.DataFrame(
        {"bars (1m)": selection.bars, "first": utc(selection.start_ms), "end": utc(selection.end_ms)}
    )
    table.index.name = "symbol"
    report.table(table)
    if selection.skipped:
        report.paragraph("left out: " + "; ".join(f"{s}: {why}" for s, why in selection.skipped.items()))
    report.heading("walk-forward folds (UTC)")
    report.table(windows)
    summaries = training_sections(report, training, results)
    findings = findings_in_words(training, summaries, policy, settings)
    report.notes += findings
    report.heading("policy on the last fold's test window (model)")
    counts = {"symbol-bars with predictions": policy["symbol_bars"], "entries": policy["entries"],
              "long entries": policy["long_entries"], "short entries": policy["short_entries"]}  # fmt: skip
    counts.update({f"blocked: {k}": v for k, v in policy["block_reasons"].items() if v})
    report.table(pd.DataFrame({"count": counts}))
    report.paragraph(
        f"policy: ev_min {settings.policy.ev_min:g}, q05 > {settings.policy.q05_min_atr:g} ATR, "
        f"expected MAE < {settings.policy.mae_max_atr:g} ATR, leverage {settings.policy.leverage}; "
        f"labels: TP {settings.label.k_tp:g} ATR, SL {settings.label.k_sl:g} ATR, horizon {settings.label.h_bars} "
        f"bars, taker fee {settings.label.fee_rate:.4%} per fill, slippage_k {settings.label.slippage_k:g}"
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
