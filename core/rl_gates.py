"""The §25.7 promotion gates of the RL agent (spec 001 §25.7 "모델 승격 기준"; issue #17), pure.

Training (``rl.evaluate`` re-exports these, ``raytrade train-rl`` gates a fresh run) and the API
(``POST /api/rl/models/{id}/promote`` gates a registered version from its recorded evaluation) judge
with the same code. Gates (``RLGateConfig`` defaults), each with value, threshold, verdict:

=====================  =====================================================================
gate                   passes when
=====================  =====================================================================
min_trades             the evaluation has ≥ ``min_trades`` (10) trades
profit_factor          pooled profit factor > ``min_profit_factor`` (1.2)
beats_supervised       profit factor above the supervised policy's on the same windows (a
                       supervised run without trades counts as PF 0: any profitable agent beats it)
max_drawdown           max drawdown < ``max_drawdown`` (0.10)
action_distribution    no chosen action takes more than ``max_action_share`` (0.95) of the
                       decisions ("HOLD 과다 아님", and no other degenerate constant policy)
=====================  =====================================================================

``promotion_decision`` promotes when every gate passed, or on an explicit override reason (recorded with
the actor, the time and the failed gates, as ``tune.promote`` does); otherwise it refuses.

``recorded_evaluation`` reads what train-rl recorded of a run — its ``evaluation.json`` artifact
(``{"rl": {...metrics, "actions_chosen": {...}}, "supervised": {...}}``) or, without it, the run's
metrics (``eval_<metric>``, ``eval_share_<ACTION>``, ``supervised_<metric>``) — back into the three
inputs of ``evaluate_rl_gates``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.jsonsafe import json_safe

__all__ = [
    "RL_GATE_NAMES",
    "PromotionDecision",
    "RLGate",
    "RLGateConfig",
    "RLGateReport",
    "evaluate_rl_gates",
    "promotion_decision",
    "recorded_evaluation",
]

RL_GATE_NAMES = ("min_trades", "profit_factor", "beats_supervised", "max_drawdown", "action_distribution")


@dataclass(frozen=True, slots=True)
class RLGateConfig:
    """Thresholds of the §25.7 promotion criteria."""

    min_profit_factor: float = 1.2
    max_drawdown: float = 0.10
    max_action_share: float = 0.95
    min_trades: int = 10


@dataclass(frozen=True, slots=True)
class RLGate:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class RLGateReport:
    gates: tuple[RLGate, ...]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]

    def gate(self, name: str) -> RLGate:
        return next(g for g in self.gates if g.name == name)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {"passed": self.passed, "failed": self.failed, "gates": [asdict(g) for g in self.gates]}
        )

    def failure_text(self) -> str:
        return "; ".join(f"{g.name} ({g.reason})" for g in self.gates if not g.passed)


def evaluate_rl_gates(
    metrics: Mapping[str, float],
    chosen: Mapping[str, float],
    supervised: Mapping[str, float] | None,
    config: RLGateConfig | None = None,
) -> RLGateReport:
    """Judge an evaluation (``PolicyEvaluation.metrics`` and ``.chosen``) against ``supervised`` (its
    ``summarize`` metrics on the same windows; None: that gate fails, nothing to compare with)."""
    cfg = config or RLGateConfig()
    trades = int(metrics.get("trades", 0))
    pf = float(metrics.get("profit_factor", math.nan))
    pf0 = 0.0 if math.isnan(pf) else pf
    mdd = float(metrics.get("max_drawdown", math.nan))
    gates = [
        RLGate("min_trades", trades >= cfg.min_trades, trades, cfg.min_trades,
               f"{trades} trades {'≥' if trades >= cfg.min_trades else '<'} {cfg.min_trades}"),
        RLGate("profit_factor", pf0 > cfg.min_profit_factor, pf, cfg.min_profit_factor,
               f"PF {pf:.4g} {'>' if pf0 > cfg.min_profit_factor else '≤'} {cfg.min_profit_factor}"),
    ]  # fmt: skip
    if supervised is None:
        gates.append(
            RLGate("beats_supervised", False, pf, None, "no supervised policy result to compare with")
        )
    else:
        spf = float(supervised.get("profit_factor", math.nan))
        spf0 = 0.0 if math.isnan(spf) else spf
        ok = pf0 > spf0
        gates.append(RLGate("beats_supervised", ok, pf, spf,
                            f"PF {pf:.4g} {'>' if ok else '≤'} supervised {spf:.4g}"))  # fmt: skip
    ok = math.isfinite(mdd) and mdd < cfg.max_drawdown
    gates.append(RLGate("max_drawdown", ok, mdd, cfg.max_drawdown,
                        f"max DD {mdd:.2%} {'<' if ok else '≥'} {cfg.max_drawdown:.0%}"))  # fmt: skip
    total = sum(chosen.values())
    top, share = max(chosen.items(), key=lambda kv: kv[1]) if total else ("none", 1.0)
    share = share / total if total else 1.0
    ok = total > 0 and share <= cfg.max_action_share
    gates.append(RLGate("action_distribution", ok, share, cfg.max_action_share,
                        f"{top} is {share:.1%} of {total:g} decisions ({'≤' if ok else '>'} {cfg.max_action_share:.0%})"))  # fmt: skip
    return RLGateReport(tuple(gates))


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """Whether to promote, and the record to store (``kind``: promote / override / refused)."""

    promote: bool
    kind: Literal["promote", "override", "refused"]
    record: dict[str, Any]


def promotion_decision(report: RLGateReport, *, override: str | None, actor: str) -> PromotionDecision:
    """Promote when every gate passed, or with an override reason (recorded); else refuse."""
    if not actor.strip():
        raise ValueError("actor is required: who promotes")
    override = (override or "").strip() or None
    kind: Literal["promote", "override", "refused"] = (
        "promote" if report.passed else "override" if override else "refused"
    )
    record = {"kind": kind, "actor": actor, "ts_ms": int(time.time() * 1000), "gates_passed": report.passed,
              "failed_gates": report.failed, "override": override, "gates": report.to_dict()}  # fmt: skip
    return PromotionDecision(kind != "refused", kind, record)


def _number(value: Any) -> float:
    """A recorded number: json_safe writes NaN as null and ±inf as "inf"/"-inf"."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def recorded_evaluation(
    evaluation: Mapping[str, Any] | None, run_metrics: Mapping[str, Any]
) -> tuple[dict[str, float], dict[str, float], dict[str, float] | None]:
    """(metrics, chosen actions, supervised metrics or None) of a recorded evaluation (module docstring).
    ``evaluation.json`` wins; the run metrics fill in; no evaluation at all gives empty metrics (the
    gates then fail)."""
    rl = evaluation.get("rl") if evaluation else None
    sup = evaluation.get("supervised") if evaluation else None
    if isinstance(rl, Mapping):
        metrics = {k: _number(v) for k, v in rl.items() if not isinstance(v, Mapping)}
        chosen_raw = rl.get("actions_chosen")
        chosen = (
            {str(k): _number(v) for k, v in chosen_raw.items()} if isinstance(chosen_raw, Mapping) else {}
        )
    else:
        metrics = {
            k[5:]: _number(v)
            for k, v in run_metrics.items()
            if k.startswith("eval_") and not k.startswith("eval_share_")
        }
        chosen = {k[11:]: _number(v) for k, v in run_metrics.items() if k.startswith("eval_share_")}
    if isinstance(sup, Mapping):
        supervised: dict[str, float] | None = {k: _number(v) for k, v in sup.items()}
    else:
        found = {k[11:]: _number(v) for k, v in run_metrics.items() if k.startswith("supervised_")}
        supervised = found or None
    chosen = {k: v for k, v in chosen.items() if math.isfinite(v) and v >= 0}
    return metrics, chosen, supervised
