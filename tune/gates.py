"""Promotion gates: pure judgement of a candidate against baselines and thresholds.

``evaluate_gates`` is pure: per-fold walk-forward metrics of the candidate and of each baseline
strategy (same folds), its pooled out-of-sample metrics and an overfitting input go in; a
``GateReport`` with every gate's value, threshold, verdict and reason comes out. Gates, with the
defaults of ``PromotionConfig`` (spec 001 §25.7 sets PF > 1.2 and MDD < 10% for promotion):

==========================  ===================================================================
gate                        passes when
==========================  ===================================================================
oos_trades                  the pooled out-of-sample backtest has ≥ ``min_oos_trades`` (30)
                            trades: a profit factor over a handful of trades means nothing
oos_profit_factor           pooled out-of-sample profit factor > ``min_profit_factor`` (1.2)
oos_max_drawdown            pooled out-of-sample max drawdown < ``max_drawdown`` (0.10 = 10%)
fold_count                  ≥ ``min_folds`` (3) walk-forward folds
beats_baselines             on the same folds, the candidate's mean fold ``baseline_metric``
                            (Sharpe) exceeds every baseline's by more than
                            ``min_baseline_margin`` (0); an undefined fold value (no trades, flat
                            equity) counts as 0; a baseline missing a candidate fold fails
stability_profitable_folds  the share of folds with profit factor > 1 is ≥
                            ``min_profitable_fold_fraction`` (0.6); a fold without trades is not
                            profitable
stability_sharpe_cv         the mean fold Sharpe is > 0 and its coefficient of variation
                            std(ddof=1) / mean is ≤ ``max_sharpe_cv`` (1.0): the mean is at least
                            one standard deviation of the fold Sharpes, so under a normal
                            approximation about 84% of folds earn a positive Sharpe
overfitting                 with a CPCV / trial performance matrix (periods × configurations): the
                            probability of backtest overfitting (CSCV) is ≤ ``max_pbo`` (0.3; 0.5
                            would only say the in-sample winner lands above the out-of-sample
                            median more often than not); otherwise the deflated Sharpe ratio of the
                            chosen configuration is ≥ ``min_deflated_sharpe`` (0.95); with neither,
                            the gate fails
==========================  ===================================================================

A candidate with no out-of-sample trades (its pooled backtest has none; without one, no fold has a trade
or a profit factor) fails every gate but ``fold_count``, which counts the validation's folds, each with
the reason "no out-of-sample trades: …". Without that rule a model that never trades passes
``beats_baselines`` whenever the baselines lost money (its undefined Sharpe counts as 0) and
``oos_max_drawdown`` with a flat equity curve: never trading is no evidence of an edge.

The inputs are pydantic models so that they round-trip through ``gates_input.json`` (see
``tune.promote``); non-finite numbers serialise as JSON ``Infinity`` / ``NaN``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.jsonsafe import json_safe
from tune.stats import deflated_sharpe_ratio, probability_of_backtest_overfitting

GATE_NAMES = (
    "oos_trades",
    "oos_profit_factor",
    "oos_max_drawdown",
    "fold_count",
    "beats_baselines",
    "stability_profitable_folds",
    "stability_sharpe_cv",
    "overfitting",
)

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


# --- inputs ---------------------------------------------------------------------------------------


class FoldMetrics(BaseModel):
    """Out-of-sample metrics of one walk-forward fold's test window (``core.metrics.summarize`` keys)."""

    model_config = _MODEL_CONFIG

    fold: int = Field(description="fold index, shared by the candidate and the baselines")
    profit_factor: float = Field(description="Σ gains / |Σ losses| of the fold's trades; NaN: no trades")
    max_drawdown: float = Field(ge=0, description="fraction of the running peak")
    sharpe: float = Field(description="annualised Sharpe ratio of the fold's equity; NaN: flat equity")
    total_return: float = Field(0.0, description="fraction over the fold")
    trades: int = Field(0, ge=0)

    @classmethod
    def from_summary(cls, fold: int, summary: Mapping[str, float]) -> FoldMetrics:
        """Build from the dict of ``core.metrics.summarize``."""
        return cls(
            fold=fold,
            profit_factor=float(summary["profit_factor"]),
            max_drawdown=float(summary["max_drawdown"]),
            sharpe=float(summary["sharpe"]),
            total_return=float(summary.get("total_return", 0.0)),
            trades=int(summary.get("trades", 0)),
        )


class OutOfSampleMetrics(BaseModel):
    """Metrics of the pooled out-of-sample backtest (consecutive test windows, one equity curve)."""

    model_config = _MODEL_CONFIG

    profit_factor: float
    max_drawdown: float = Field(ge=0)
    trades: int = Field(ge=0)
    sharpe: float = math.nan
    total_return: float = math.nan

    @classmethod
    def from_summary(cls, summary: Mapping[str, float]) -> OutOfSampleMetrics:
        """Build from the dict of ``core.metrics.summarize``."""
        return cls(
            profit_factor=float(summary["profit_factor"]),
            max_drawdown=float(summary["max_drawdown"]),
            trades=int(summary["trades"]),
            sharpe=float(summary.get("sharpe", math.nan)),
            total_return=float(summary.get("total_return", math.nan)),
        )


class OverfittingInput(BaseModel):
    """Evidence against selection bias: a CPCV / trial performance matrix, or deflated-Sharpe inputs.

    ``performance_matrix`` is periods × configurations (e.g. daily returns of every trial of the sweep
    on the CPCV test paths). The deflated-Sharpe inputs are per observation (not annualised): the
    chosen configuration's Sharpe, skewness, Pearson kurtosis and count of returns, the number of
    trials and the variance of the trials' Sharpe ratios.
    """

    model_config = _MODEL_CONFIG

    performance_matrix: list[list[float]] | None = None
    sharpe_per_obs: float | None = None
    n_obs: int | None = Field(None, ge=2)
    skew: float = 0.0
    kurtosis: float = 3.0
    n_trials: int | None = Field(None, ge=1)
    trial_sharpe_variance: float | None = Field(None, ge=0)

    @property
    def has_dsr_inputs(self) -> bool:
        return None not in (self.sharpe_per_obs, self.n_obs, self.n_trials, self.trial_sharpe_variance)


class StrategyResult(BaseModel):
    """Walk-forward results of one strategy: per fold, pooled out of sample, overfitting evidence."""

    model_config = _MODEL_CONFIG

    name: str
    folds: list[FoldMetrics]
    oos: OutOfSampleMetrics | None = None
    overfitting: OverfittingInput | None = None

    @model_validator(mode="after")
    def _unique_folds(self) -> StrategyResult:
        ids = [f.fold for f in self.folds]
        if len(ids) != len(set(ids)):
            raise ValueError(f"{self.name}: fold indices repeat: {ids}")
        return self


class GatesInput(BaseModel):
    """What ``gates_input.json`` holds: the candidate and the baselines on the same folds."""

    model_config = _MODEL_CONFIG

    candidate: StrategyResult
    baselines: list[StrategyResult] = Field(default_factory=list)


class PromotionConfig(BaseModel):
    """Thresholds of the promotion gates (see the module docstring for each gate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_oos_trades: int = Field(30, ge=0, description="pooled out-of-sample trades at least")
    min_profit_factor: float = Field(1.2, ge=0, description="pooled out-of-sample profit factor above")
    max_drawdown: float = Field(
        0.10, gt=0, le=1, description="pooled out-of-sample max drawdown below, fraction"
    )
    min_folds: int = Field(3, ge=1, description="walk-forward folds at least")
    baseline_metric: Literal["sharpe", "total_return"] = Field(
        "sharpe", description="fold metric whose mean the candidate must beat every baseline on"
    )
    min_baseline_margin: float = Field(0.0, description="candidate mean minus baseline mean above")
    min_profitable_fold_fraction: float = Field(
        0.6, ge=0, le=1, description="share of folds with profit factor > 1 at least"
    )
    max_sharpe_cv: float = Field(1.0, gt=0, description="std / mean of fold Sharpe ratios at most")
    max_pbo: float = Field(0.3, ge=0, le=1, description="probability of backtest overfitting at most")
    pbo_partitions: int = Field(16, ge=2, description="CSCV partitions (even); fewer when periods are few")
    min_deflated_sharpe: float = Field(0.95, ge=0, le=1, description="deflated Sharpe ratio at least")


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate: its measured value, the threshold, the verdict and a sentence saying why."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GateReport:
    """Every gate's result for one candidate, in ``GATE_NAMES`` order."""

    candidate: str
    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]

    def gate(self, name: str) -> GateResult:
        return next(g for g in self.gates if g.name == name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers as ``core.jsonsafe.json_safe`` spells them)."""
        return json_safe(
            {
                "candidate": self.candidate,
                "passed": self.passed,
                "failed": self.failed,
                "gates": [asdict(g) for g in self.gates],
            }
        )

    def failure_text(self) -> str:
        """One clause per failed gate: name, value against threshold, reason."""
        return "; ".join(f"{g.name} ({g.reason})" for g in self.gates if not g.passed)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _cmp(ok: bool, yes: str, no: str) -> str:
    return yes if ok else no


def _zero_nan(values: Sequence[float]) -> np.ndarray:
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)


def _oos_gates(c: StrategyResult, cfg: PromotionConfig) -> list[GateResult]:
    if c.oos is None:
        why = "no pooled out-of-sample metrics supplied"
        return [
            GateResult("oos_trades", False, None, cfg.min_oos_trades, why),
            GateResult("oos_profit_factor", False, None, cfg.min_profit_factor, why),
            GateResult("oos_max_drawdown", False, None, cfg.max_drawdown, why),
        ]
    n, pf, mdd = c.oos.trades, c.oos.profit_factor, c.oos.max_drawdown
    n_ok, pf_ok, mdd_ok = n >= cfg.min_oos_trades, pf > cfg.min_profit_factor, mdd < cfg.max_drawdown
    pf_reason = (
        "profit factor undefined (no winning and no losing trade)"
        if math.isnan(pf)
        else f"profit factor {_fmt(pf)} {_cmp(pf_ok, '>', '≤')} {cfg.min_profit_factor:g}"
    )
    return [
        GateResult(
            "oos_trades",
            n_ok,
            float(n),
            float(cfg.min_oos_trades),
            f"{n} out-of-sample trades {_cmp(n_ok, '≥', '<')} {cfg.min_oos_trades}",
        ),
        GateResult("oos_profit_factor", pf_ok, pf, cfg.min_profit_factor, pf_reason),
        GateResult(
            "oos_max_drawdown",
            mdd_ok,
            mdd,
            cfg.max_drawdown,
            f"max drawdown {mdd:.2%} {_cmp(mdd_ok, '<', '≥')} limit {cfg.max_drawdown:.2%}",
        ),
    ]


def _baseline_gate(
    c: StrategyResult, baselines: Sequence[StrategyResult], cfg: PromotionConfig
) -> GateResult:
    name, metric, margin = "beats_baselines", cfg.baseline_metric, cfg.min_baseline_margin
    if not baselines:
        return GateResult(name, False, None, margin, "no baseline results supplied")
    if not c.folds:
        return GateResult(name, False, None, margin, "the candidate has no folds")
    ordered = sorted(c.folds, key=lambda f: f.fold)
    folds = [f.fold for f in ordered]
    cand = _zero_nan([getattr(f, metric) for f in ordered])
    details: dict[str, Any] = {"metric": metric, "candidate_mean": float(cand.mean())}
    problems: list[str] = []
    margins: list[float] = []
    for b in baselines:
        by_fold = {f.fold: f for f in b.folds}
        missing = [i for i in folds if i not in by_fold]
        if missing:
            problems.append(f"{b.name} has no result for folds {missing}")
            details[b.name] = {"missing_folds": missing}
            continue
        base = _zero_nan([getattr(by_fold[i], metric) for i in folds])
        diff = float(cand.mean() - base.mean())
        margins.append(diff)
        details[b.name] = {
            "baseline_mean": float(base.mean()),
            "margin": diff,
            "folds_won": int((cand > base).sum()),
        }
        if not diff > margin:
            problems.append(
                f"{b.name} mean {metric} {base.mean():.4g} vs candidate {cand.mean():.4g} "
                f"(margin {diff:.4g} ≤ {margin:g})"
            )
    worst = min(margins) if margins else None
    if problems:
        return GateResult(name, False, worst, margin, "; ".join(problems), details)
    reason = f"mean fold {metric} beats all {len(baselines)} baselines by {_fmt(worst)} at least"
    return GateResult(name, True, worst, margin, reason, details)


def _stability_gates(c: StrategyResult, cfg: PromotionConfig) -> list[GateResult]:
    n = len(c.folds)
    count_ok = n >= cfg.min_folds
    count = GateResult(
        "fold_count",
        count_ok,
        float(n),
        float(cfg.min_folds),
        f"{n} folds {_cmp(count_ok, '≥', '<')} {cfg.min_folds}",
    )
    share_min, cv_max = cfg.min_profitable_fold_fraction, cfg.max_sharpe_cv
    if n == 0:
        return [
            count,
            GateResult("stability_profitable_folds", False, None, share_min, "no folds"),
            GateResult("stability_sharpe_cv", False, None, cv_max, "no folds"),
        ]
    pf = np.array([f.profit_factor for f in c.folds], dtype=np.float64)
    share = float(np.mean(np.nan_to_num(pf, nan=0.0) > 1.0))
    share_ok = share >= share_min
    profitable = GateResult(
        "stability_profitable_folds",
        share_ok,
        share,
        share_min,
        f"{share:.0%} of {n} folds have profit factor > 1 ({_cmp(share_ok, '≥', '<')} {share_min:.0%})",
    )
    sharpe = _zero_nan([f.sharpe for f in c.folds])
    mean = float(sharpe.mean())
    if n < 2:
        return [count, profitable, GateResult("stability_sharpe_cv", False, None, cv_max, "needs ≥ 2 folds")]
    std = float(sharpe.std(ddof=1))
    details = {"mean_sharpe": mean, "std_sharpe": std}
    if mean <= 0:
        reason = f"mean fold Sharpe {mean:.4g} ≤ 0: no edge whose stability could be measured"
        return [count, profitable, GateResult("stability_sharpe_cv", False, None, cv_max, reason, details)]
    cv = std / mean
    cv_ok = cv <= cv_max
    reason = f"fold Sharpe CV {cv:.3g} {_cmp(cv_ok, '≤', '>')} {cv_max:g} (mean {mean:.3g}, std {std:.3g})"
    return [count, profitable, GateResult("stability_sharpe_cv", cv_ok, cv, cv_max, reason, details)]


def _pbo_gate(matrix: np.ndarray, cfg: PromotionConfig) -> GateResult:
    name = "overfitting"
    periods = matrix.shape[0] if matrix.ndim == 2 else 0
    half = periods // 2  # each partition needs ≥ 2 periods for the Sharpe ratio of a half
    partitions = min(cfg.pbo_partitions - cfg.pbo_partitions % 2, half - half % 2)
    details: dict[str, Any] = {"method": "pbo", "partitions": partitions}
    try:
        if partitions < 2:
            raise ValueError(f"{periods} periods are too few for CSCV")
        pbo = probability_of_backtest_overfitting(matrix, n_partitions=partitions).pbo
    except ValueError as e:
        return GateResult(name, False, None, cfg.max_pbo, f"PBO not computable: {e}", details)
    ok = pbo <= cfg.max_pbo
    details["configurations"] = int(matrix.shape[1])
    reason = (
        f"PBO {pbo:.3f} {_cmp(ok, '≤', '>')} {cfg.max_pbo:g} "
        f"({matrix.shape[1]} configurations, {partitions} CSCV partitions)"
    )
    return GateResult(name, ok, pbo, cfg.max_pbo, reason, details)


def _dsr_gate(o: OverfittingInput, cfg: PromotionConfig) -> GateResult:
    name, threshold = "overfitting", cfg.min_deflated_sharpe
    assert o.sharpe_per_obs is not None and o.n_obs is not None
    assert o.n_trials is not None and o.trial_sharpe_variance is not None
    details = {"method": "dsr", "n_trials": o.n_trials}
    try:
        dsr = deflated_sharpe_ratio(
            o.sharpe_per_obs, o.n_trials, o.trial_sharpe_variance, o.n_obs, o.skew, o.kurtosis
        )
    except ValueError as e:
        return GateResult(name, False, None, threshold, f"DSR not computable: {e}", details)
    ok = dsr >= threshold
    reason = f"deflated Sharpe {dsr:.3f} {_cmp(ok, '≥', '<')} {threshold:g} over {o.n_trials} trials"
    return GateResult(name, ok, dsr, threshold, reason, details)


def _overfitting_gate(c: StrategyResult, cfg: PromotionConfig) -> GateResult:
    o = c.overfitting
    if o is not None and o.performance_matrix is not None:
        return _pbo_gate(np.asarray(o.performance_matrix, dtype=np.float64), cfg)
    if o is not None and o.has_dsr_inputs:
        return _dsr_gate(o, cfg)
    if o is not None and o.n_trials is not None and o.sharpe_per_obs is None:
        why = "the pooled out-of-sample returns do not vary (no trades): there is no Sharpe ratio to deflate"
        return GateResult("overfitting", False, None, cfg.min_deflated_sharpe, why, {"method": "dsr"})
    why = "no overfitting evidence: give a performance matrix (PBO) or deflated-Sharpe inputs"
    return GateResult("overfitting", False, None, None, why)


NO_OOS_TRADES = "no out-of-sample trades"

#: What a candidate that never traded lacks, per gate (``fold_count`` counts folds, not evidence).
_NO_TRADE_REASONS = {
    "oos_trades": "0 < {min_oos_trades}",
    "oos_profit_factor": "no profit factor to judge",
    "oos_max_drawdown": "the zero drawdown of a flat equity curve is no evidence",
    "beats_baselines": "not trading does not beat a baseline, even one that lost money",
    "stability_profitable_folds": "no fold made a profit",
    "stability_sharpe_cv": "no Sharpe ratio whose stability could be measured",
    "overfitting": "no returns to test for overfitting",
}


def never_traded(candidate: StrategyResult) -> bool:
    """Whether the candidate made no out-of-sample trade: its pooled backtest has none, or, without a
    pooled backtest, no fold has a trade or a defined profit factor."""
    if candidate.oos is not None:
        return candidate.oos.trades == 0
    return bool(candidate.folds) and all(
        f.trades == 0 and math.isnan(f.profit_factor) for f in candidate.folds
    )


def _without_trades(gate: GateResult, cfg: PromotionConfig) -> GateResult:
    why = _NO_TRADE_REASONS[gate.name].format(**cfg.model_dump())
    return replace(gate, passed=False, reason=f"{NO_OOS_TRADES}: {why}")


def evaluate_gates(
    candidate: StrategyResult, baselines: Sequence[StrategyResult], cfg: PromotionConfig
) -> GateReport:
    """Judge a candidate against every promotion gate; pure (no I/O). All gates are always reported."""
    fold_count, *stability = _stability_gates(candidate, cfg)
    gates = [
        *_oos_gates(candidate, cfg),
        fold_count,
        _baseline_gate(candidate, baselines, cfg),
        *stability,
        _overfitting_gate(candidate, cfg),
    ]
    assert tuple(g.name for g in gates) == GATE_NAMES
    if never_traded(candidate):
        gates = [_without_trades(g, cfg) if g.name in _NO_TRADE_REASONS else g for g in gates]
    return GateReport(candidate.name, tuple(gates))
