"""Evaluation of a trained agent on held-out episodes, beside the supervised policy, and the §25.7 gates.

``evaluate_policy`` runs an action function (``greedy_policy(module)``: argmax of the RLModule's action
logits from ``forward_inference``) through ``rl.env.TradingEnv`` over whole episodes (each closes what is
open at its end) and measures with ``core.metrics``, as the backtests do: profit factor and win rate
of all trades pooled, Sharpe of the per-bar equity returns of the episodes one after the other
(``core.metrics.sharpe``: per-minute, annualised), max drawdown the worst episode's, the chosen and the
executed action counts. ``supervised_backtest`` runs the supervised model's policy (``core.policy`` via
``pipelines.backtest.policy_signals``) on the same windows through the same simulator.

Gates (spec 001 §25.7 "모델 승격 기준"; ``RLGateConfig`` defaults), each with value, threshold, verdict:

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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.jsonsafe import json_safe
from core.metrics import equity_returns, max_drawdown, profit_factor, sharpe, summarize, win_rate
from core.sim import MarketPanel, SimConfig, run_backtest
from rl.env import ACTION_NAMES, TradingEnv
from rl.episodes import EpisodeData

ActFn = Callable[[np.ndarray], int]


def greedy_policy(module: Any) -> ActFn:
    """Action function of an RLModule: argmax over ``forward_inference``'s ``action_dist_inputs``."""
    import torch

    def act(obs: np.ndarray) -> int:
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.from_numpy(np.asarray(obs, np.float32)[None, :])})
        return int(torch.argmax(out["action_dist_inputs"][0]).item())

    return act


def action_probabilities(module: Any, obs: np.ndarray) -> np.ndarray:
    """Softmax of the module's action logits on a batch of observations (n, 17) → (n, 4)."""
    import torch

    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.from_numpy(np.asarray(obs, np.float32))})
        return torch.softmax(logits["action_dist_inputs"], dim=-1).numpy()


@dataclass
class PolicyEvaluation:
    """What a policy did on the evaluation episodes (module docstring)."""

    metrics: dict[str, float]
    chosen: dict[str, int]
    executed: dict[str, int]
    trades: pd.DataFrame
    returns: np.ndarray = field(repr=False)
    refusals: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**self.metrics, "actions_chosen": self.chosen, "actions_executed": self.executed,
                          "refusals": self.refusals})  # fmt: skip


def pooled_metrics(trades: pd.DataFrame, returns: np.ndarray, drawdowns: Sequence[float]) -> dict[str, float]:
    """PF / win rate of pooled trades, Sharpe of the concatenated per-bar returns, the worst drawdown."""
    pnl = trades["pnl"].to_numpy(np.float64) if len(trades) else np.zeros(0)
    return {
        "trades": float(len(trades)),
        "pnl": float(pnl.sum()),
        "profit_factor": profit_factor(pnl) if len(pnl) else math.nan,
        "win_rate": win_rate(pnl) if len(pnl) else math.nan,
        "sharpe": sharpe(returns),
        "max_drawdown": float(max(drawdowns)) if drawdowns else 0.0,
        "total_return": float(np.prod(1.0 + returns) - 1.0) if len(returns) else 0.0,
    }


def evaluate_policy(
    episodes: Sequence[EpisodeData], act: ActFn, *, env_kwargs: Mapping[str, Any] | None = None
) -> PolicyEvaluation:
    """Run ``act`` greedily over every episode, whole, through ``TradingEnv`` (module docstring)."""
    env = TradingEnv(list(episodes), **dict(env_kwargs or {}))
    chosen = np.zeros(len(ACTION_NAMES), np.int64)
    executed = np.zeros(len(ACTION_NAMES), np.int64)
    refusals: dict[str, int] = {}
    trades, returns, drawdowns = [], [], []
    for i in range(len(episodes)):
        obs, _ = env.reset(seed=0, options={"episode": i, "start": 0})
        done = False
        while not done:
            a = act(obs)
            chosen[a] += 1
            obs, _, terminated, truncated, _ = env.step(a)
            done = terminated or truncated
        assert env.sim is not None
        executed += env.action_counts
        for code, n in env.refusal_counts.items():
            refusals[code] = refusals.get(code, 0) + n
        trades.append(env.sim.trades())
        curve = env.equity_curve()
        equity = np.r_[env.config.initial_equity_usdt, curve["equity"].to_numpy(np.float64)]
        returns.append(equity_returns(equity))
        drawdowns.append(max_drawdown(equity))
    pooled = pd.concat(trades, ignore_index=True) if trades else pd.DataFrame({"pnl": []})
    r = np.concatenate(returns) if returns else np.zeros(0)
    names = list(ACTION_NAMES)
    return PolicyEvaluation(
        pooled_metrics(pooled, r, drawdowns), dict(zip(names, chosen.tolist(), strict=True)),
        dict(zip(names, executed.tolist(), strict=True)), pooled, r, refusals,
    )  # fmt: skip


def supervised_backtest(
    panel: MarketPanel,
    predictions: Mapping[str, np.ndarray],
    btc_regime: np.ndarray,
    *,
    policy: PolicyConfig,
    label: LabelSpec,
    sim: SimConfig,
    risk: RiskConfig | None,
) -> dict[str, float]:
    """The supervised policy on ``panel`` (the evaluation windows): ``core.policy`` decisions on the model
    outputs (``core.policy.PREDICTION_KEYS``, bars × symbols), the one simulator, ``core.metrics.summarize``."""
    from pipelines.backtest import policy_signals

    signals = policy_signals(panel, predictions, btc_regime, policy, label)
    result = run_backtest(panel, signals, sim, risk)
    return summarize(result.trades, result.equity)


# --- gates -------------------------------------------------------------------------------------------

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
    chosen: Mapping[str, int],
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
                        f"{top} is {share:.1%} of {total} decisions ({'≤' if ok else '>'} {cfg.max_action_share:.0%})"))  # fmt: skip
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
