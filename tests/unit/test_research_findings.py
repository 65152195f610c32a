"""The research report's words follow its figures: reports built from contrasting figures (a sweep with no
validation trade against one that traded; a refused model that never traded against a promoted one that
did) say different things, each sentence derived from the numbers beside it; data the run lacks (BTCUSDT,
1m marks) is a warning; folds print as integers, an infinite profit factor in words, block reasons once."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.config import LabelSpec, PolicyConfig
from core.features_schema import FEATURE_NAMES
from core.metrics import TRADE_COLUMNS, empty_trades, summarize
from core.time import DAY_MS, MINUTE_MS, parse_utc
from pipelines.selection import ResearchSelection
from storage.lake import Lake
from tune.fold_plans import FoldSizing
from tune.gates import (
    FoldMetrics,
    OutOfSampleMetrics,
    OverfittingInput,
    PromotionConfig,
    StrategyResult,
    evaluate_gates,
)
from tune.research_report import data_warnings, findings_in_words, write_research_report
from tune.trainable import MIN_RANKED_TRADES, choose_trial
from tune.training_report import TrainSummary, production_sentence, sweep_sentence

T0 = parse_utc("2025-05-05")
POLICY, LABELS = PolicyConfig(), LabelSpec()
BASELINES = ("bollinger_reversion", "donchian_breakout")
REASONS = ("EV_NOT_POSITIVE", "EV_BELOW_MIN", "Q05_BELOW_MIN", "MAE_ABOVE_MAX", "BTC_REGIME_UNKNOWN_BLOCK")


def _sweep(trades_per_trial: list[list[int]], scores: list[float]) -> pd.DataFrame:
    rows = [
        {"trial_index": i, "num_leaves": 15 + 16 * i, "score": s, "folds_done": len(t),
         **{f"fold{k}_trades": float(n) for k, n in enumerate(t)}, "total_trades": float(sum(t))}
        for i, (t, s) in enumerate(zip(trades_per_trial, scores, strict=True))
    ]  # fmt: skip
    return choose_trial(pd.DataFrame(rows), 3)


def _gates(trading: bool):
    if trading:
        folds = [FoldMetrics(fold=k, profit_factor=1.6 + 0.2 * k, max_drawdown=0.01, sharpe=3.0 + 0.5 * k,
                             trades=20 + 5 * k) for k in range(3)]  # fmt: skip
        oos = OutOfSampleMetrics(profit_factor=1.7, max_drawdown=0.02, trades=75, sharpe=3.4)
        over = OverfittingInput(sharpe_per_obs=0.3, n_obs=2000, n_trials=4, trial_sharpe_variance=1e-4)
    else:
        folds = [
            FoldMetrics(fold=k, profit_factor=math.nan, max_drawdown=0.0, sharpe=math.nan) for k in range(3)
        ]
        oos = OutOfSampleMetrics(profit_factor=math.nan, max_drawdown=0.0, trades=0)
        over = OverfittingInput(n_trials=4, trial_sharpe_variance=0.0)
    candidate = StrategyResult(name="raytrade-lgbm", folds=folds, oos=oos, overfitting=over)
    baselines = [
        StrategyResult(
            name=b,
            folds=[
                FoldMetrics(fold=k, profit_factor=0.8, max_drawdown=0.02, sharpe=-5.0, trades=30)
                for k in range(3)
            ],
        )  # fmt: skip
        for b in BASELINES
    ]
    return evaluate_gates(candidate, baselines, PromotionConfig()), folds


def _training(sweep: pd.DataFrame, trading: bool) -> TrainSummary:
    gates, folds = _gates(trading)
    rows = [{"strategy": "model", "fold": float(f.fold), "score": f.sharpe, "trades": float(f.trades),
             "profit_factor": f.profit_factor, "sharpe": f.sharpe, "total_return": 0.01 if trading else 0.0,
             "max_drawdown": f.max_drawdown} for f in folds]  # fmt: skip
    rows += [{"strategy": b, "fold": float(k), "score": math.nan, "trades": 30.0, "profit_factor": 0.8,
              "sharpe": -5.0, "total_return": -0.01, "max_drawdown": 0.02} for b in BASELINES for k in range(3)]  # fmt: skip
    chosen = sweep[sweep["chosen"]].iloc[0]
    return TrainSummary(
        n_folds=3, best_config={"num_leaves": int(chosen["num_leaves"])}, sweep=sweep, folds=pd.DataFrame(rows),
        gates=gates, version="2", promotion_kind="promote" if gates.passed else "refused", override=None,
        importance=pd.DataFrame({"feature": FEATURE_NAMES[:2], "gain": [2.0, 1.0]}),
        production_version="2" if gates.passed else None,
    )  # fmt: skip


def _policy(trading: bool) -> dict:
    reasons = dict.fromkeys(("NAN_PREDICTION", "BAD_PRICE", "NO_ATR", "Q05_BELOW_MIN"), 0)
    reasons.update(EV_NOT_POSITIVE=900, EV_BELOW_MIN=900, MAE_ABOVE_MAX=120, BTC_REGIME_UNKNOWN_BLOCK=0)
    if not trading:
        reasons.update(
            EV_NOT_POSITIVE=1000, EV_BELOW_MIN=1000, Q05_BELOW_MIN=640, BTC_REGIME_UNKNOWN_BLOCK=1000
        )
    return {"symbol_bars": 1000, "entries": 40 if trading else 0, "long_entries": 40 if trading else 0,
            "short_entries": 0, "ev_blocked": 900 if trading else 1000, "block_reasons": reasons}  # fmt: skip


def _trades(pnls: list[float]) -> pd.DataFrame:
    n = len(pnls)
    frame = pd.DataFrame({
        "symbol": ["ETHUSDT"] * n, "side": np.ones(n, np.int8), "entry_ts": T0 + np.arange(n) * 60 * MINUTE_MS,
        "exit_ts": T0 + np.arange(n) * 60 * MINUTE_MS + 30 * MINUTE_MS, "entry_price": 100.0, "exit_price": 101.0,
        "qty": 1.0, "notional": 100.0, "exit_reason": "TP", "fees": 0.1, "slippage": 0.05, "funding": 0.0,
        "pnl": pnls, "return": np.asarray(pnls) / 100.0,
    })  # fmt: skip
    return frame.astype(dict(TRADE_COLUMNS))


def _equity(total_return: float) -> pd.DataFrame:
    n = 600
    equity = 10_000.0 * (1.0 + total_return * np.linspace(0.0, 1.0, n) + 1e-4 * np.sin(np.arange(n)))
    return pd.DataFrame({"ts": T0 + MINUTE_MS * np.arange(n, dtype=np.int64), "equity": equity, "wallet": equity,
                         "unrealized": 0.0, "used_margin": 0.0, "open_positions": np.zeros(n, np.int64)})  # fmt: skip


def _results(trading: bool) -> dict:
    model = (
        SimpleNamespace(trades=_trades([1.0] * 30), equity=_equity(0.003))  # no losing trade: PF ∞
        if trading
        else SimpleNamespace(
            trades=empty_trades(), equity=_equity(0.0).assign(equity=10_000.0, wallet=10_000.0)
        )
    )
    lost = SimpleNamespace(trades=_trades([1.0, -2.0] * 15), equity=_equity(-0.003))
    return {"model": model, **dict.fromkeys(BASELINES, lost)}


ZERO_SWEEP = ([[0, 0, 0]] * 4, [0.0] * 4)
TRADING_SWEEP = ([[0, 1, 0], [12, 15, 9], [0, 0, 0], [20, 18, 25]], [8.4, 1.2, 0.0, 0.9])


def _findings(sweep: tuple, trading: bool) -> list[str]:
    summaries = {name: summarize(r.trades, r.equity) for name, r in _results(trading).items()}
    return findings_in_words(_training(_sweep(*sweep), trading), summaries, _policy(trading), POLICY, LABELS)


def test_a_sweep_without_validation_trades_and_a_model_that_never_traded_are_said_so():
    findings = _findings(ZERO_SWEEP, trading=False)
    text = " ".join(findings)
    assert findings[0] == (
        "No sweep configuration made a validation trade (4 configuration(s) × 3 folds), so none can be ranked; "
        "the flow used trial 0, the first in order (all scored 0): {'num_leaves': 15}."
    )
    assert "Best configuration" not in text
    assert "The model never traded in the last fold's test window: 0 entry signal(s) in 1,000" in text
    assert "It traded in none of the 3 walk-forward test windows either." in findings
    assert "After costs" not in text
    assert "only because it did not trade" in text and "the beats_baselines gate failed" in text
    assert "Promotion gates failed (7 of 8): oos_trades (no out-of-sample trades" in text
    # the stale sentence the issue found: the flow does compute both
    assert "computes no pooled out-of-sample backtest" not in text and "overfitting estimate" not in text


def test_a_trading_sweep_and_a_promoted_model_are_said_so_from_their_figures():
    findings = _findings(TRADING_SWEEP, trading=True)
    text = " ".join(findings)
    # trial 0 scored highest on one trade: trial 1 is the best of the two with enough trades
    assert findings[0].startswith(
        f"Best configuration: trial 1, the highest validation score (1.2) of the 2 of 4 configurations "
        f"with at least {MIN_RANKED_TRADES} validation trades over the 3 folds; it made 36 (12, 15, 9 per fold)"
    )
    assert "The model traded 30 times in the last fold's test window (40 entry signals in 1,000" in text
    assert "Trades per walk-forward test window: fold 0: 20, fold 1: 25, fold 2: 30." in findings
    assert "After costs the model made money in the last fold" in text
    assert "profit factor ∞ (no losing trade)" in text
    assert "is above 2 of 2 baselines" in text and "only because it did not trade" not in text
    assert findings[-1] == "Every promotion gate passed (8 of 8)."
    assert "never traded" not in text and "none of the" not in text


def test_no_configuration_with_enough_trades_is_not_called_best():
    sweep = _sweep([[0, 1, 0], [0, 0, 0], [2, 0, 3]], [8.4, 0.0, 0.5])
    sentence = sweep_sentence(_training(sweep, trading=False))
    assert sentence.startswith(
        f"No configuration made enough validation trades to rank (at least {MIN_RANKED_TRADES} over the 3 "
        "folds; the most was 5, by trial 2); the flow used trial 0, the highest validation score (8.4) on 1 "
        "trade(s) (0, 1, 0 per fold), which is no evidence that it is the best"
    )
    assert "Best configuration" not in sentence


def test_a_best_configuration_that_lost_on_validation_is_said_to_show_no_edge():
    sweep = _sweep([[12, 15, 9], [20, 18, 25]], [-18.0, -24.1])
    sentence = sweep_sentence(_training(sweep, trading=True))
    assert sentence.startswith("Best configuration: trial 0, the highest validation score (-18)")
    assert sentence.endswith(
        " Even that score is not above 0: no configuration showed an edge on validation."
    )
    assert "no configuration showed an edge" not in sweep_sentence(_training(_sweep(*TRADING_SWEEP), True))


def test_each_block_reason_is_named_once():
    for trading in (False, True):
        text = " ".join(_findings(ZERO_SWEEP, trading))
        for reason in REASONS:
            assert text.count(reason) <= 1, (trading, reason)
    text = " ".join(_findings(ZERO_SWEEP, trading=False))
    assert "EV_NOT_POSITIVE or EV_BELOW_MIN" in text and "Q05_BELOW_MIN 640 (64%)" in text
    assert "BTC_REGIME_UNKNOWN_BLOCK 1,000 (100%)" in text


def test_production_sentence_follows_the_promotion():
    assert production_sentence(_training(_sweep(*TRADING_SWEEP), True)).startswith(
        "every promotion gate passed"
    )
    assert production_sentence(_training(_sweep(*ZERO_SWEEP), False)).startswith("NOT PROMOTED")


def _lake(tmp_path: Path, symbols: tuple[str, ...], marks: dict[str, tuple[str, ...]] | None = None) -> Lake:
    lake = Lake(tmp_path / "lake")
    n = 4 * 1440
    close = np.full(n, 100.0)
    ts = T0 + MINUTE_MS * np.arange(n, dtype=np.int64)
    for s in symbols:
        lake.write("candles_1m", s, {"ts": ts, "open": close, "high": close, "low": close, "close": close,
                                     "volume": close}, source="import:x")  # fmt: skip
    for dataset, with_marks in (marks or {}).items():
        step = 8 * 60 if dataset == "mark_8h" else 60
        for s in with_marks:
            mts = ts[::step]
            ones = np.full(len(mts), 100.0)
            lake.write(
                dataset, s, {"ts": mts, "open": ones, "high": ones, "low": ones, "close": ones}, source="x"
            )
    return lake


def _selection(symbols: tuple[str, ...]) -> ResearchSelection:
    bars = dict.fromkeys(symbols, 4 * 1440)
    return ResearchSelection(
        symbols, T0, T0 + 4 * DAY_MS, bars, ("import:x",), {}, dict.fromkeys(symbols, 1.0)
    )


def test_missing_btc_and_unused_coarse_marks_are_warned_about(tmp_path):
    lake = _lake(tmp_path, ("ETHUSDT", "SOLUSDT"), {"mark_8h": ("ETHUSDT", "SOLUSDT")})
    (btc, marks) = data_warnings(lake, _selection(("ETHUSDT", "SOLUSDT")), POLICY)
    assert btc.startswith("BTCUSDT has no 1m candles in the lake for the period: the 12 btc_* features")
    assert "every entry is sized at 0.5× (btc_high_vol_action 'size_down')" in btc
    assert "it blocks every entry" in data_warnings(lake, _selection(("ETHUSDT",)), PolicyConfig(btc_high_vol_action="block"))[0]  # fmt: skip
    assert marks.startswith("mark_8h candles of 2 symbol(s) (ETHUSDT, SOLUSDT) are in the lake but unused")
    assert "2 of them have no 1m marks, so the last price stands in for the mark price" in marks
    # BTC in the lake but not chosen: its features exist, the backtests' regime does not
    lake = _lake(tmp_path / "b", ("BTCUSDT", "ETHUSDT"))
    (only,) = data_warnings(lake, _selection(("ETHUSDT",)), POLICY)
    assert "BTCUSDT is not among the research symbols" in only and "100% of the period's minutes" in only
    assert data_warnings(lake, _selection(("BTCUSDT", "ETHUSDT")), POLICY) == []


@pytest.mark.parametrize("trading", [False, True])
def test_the_written_report_shows_warnings_findings_integer_folds_and_infinite_profit_factor(
    tmp_path, trading
):
    sweep = _sweep(*(TRADING_SWEEP if trading else ZERO_SWEEP))
    training = _training(sweep, trading)
    symbols = ("ETHUSDT", "SOLUSDT")
    lake = _lake(tmp_path, symbols, {"mark_1h": ("ETHUSDT",)})
    windows = pd.DataFrame(
        {"fold": [0, 1, 2], "train": "a", "validation": "b", "test": "c", "train_rows": 10}
    )
    path, _, findings = write_research_report(
        lake, POLICY, LABELS, _selection(symbols), FoldSizing(), training, _results(trading), _policy(trading),
        windows.set_index("fold"), tmp_path / "report", runtime_s=1.0, num_samples=4, num_boost_round=5, seed=7,
    )  # fmt: skip
    page = html.unescape(path.read_text())
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["findings"] == findings and all(f in page for f in findings)
    assert len(data["warnings"]) == 2 and all(f"WARNING: {w}" in page for w in data["warnings"])
    assert [f["fold"] for f in data["folds"] if f["strategy"] == "model"] == [0, 1, 2]
    assert "<th>1.0</th>" not in page and "<th>1</th>" in page  # fold numbers as integers
    assert [t["total_trades"] for t in data["sweep"]] == [
        sum(t) for t in (TRADING_SWEEP if trading else ZERO_SWEEP)[0]
    ]
    assert sum(t["chosen"] for t in data["sweep"]) == 1
    assert ("∞ (no losing trade)" in page) == trading and ">inf<" not in page
