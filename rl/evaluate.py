"""Evaluation of a trained agent on held-out episodes, beside the supervised policy, and the §25.7 gates.

``evaluate_policy`` runs an action function (``greedy_policy(module)``: argmax of the RLModule's action
logits from ``forward_inference``) through ``rl.env.TradingEnv`` over whole episodes (each closes what is
open at its end), asking it every ``decision_every`` bars as the policy was trained (``rl.train.DecisionEvery``,
the same wrapper: the action acts at the first bar, HOLD for the others), and measures with ``core.metrics``, as the backtests do: profit factor and win rate
of all trades pooled, Sharpe of the per-bar equity returns of the episodes one after the other
(``core.metrics.sharpe``: per-minute, annualised), max drawdown the worst episode's, the chosen and the
executed action counts. ``supervised_backtest`` runs the supervised model's policy (``core.policy`` via
``pipelines.backtest.policy_signals``) on the same windows through the same simulator.

Gates (spec 001 §25.7) and ``promotion_decision`` live in ``core.rl_gates`` (the API uses them too) and
are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.jsonsafe import json_safe
from core.metrics import equity_returns, max_drawdown, profit_factor, sharpe, summarize, win_rate
from core.rl_gates import (
    RL_GATE_NAMES,
    PromotionDecision,
    RLGate,
    RLGateConfig,
    RLGateReport,
    evaluate_rl_gates,
    promotion_decision,
)
from core.sim import MarketPanel, SimConfig, run_backtest
from rl.env import ACTION_NAMES, TradingEnv
from rl.episodes import EpisodeData
from rl.train import DecisionEvery

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
    episodes: Sequence[EpisodeData],
    act: ActFn,
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    decision_every: int = 1,
) -> PolicyEvaluation:
    """Run ``act`` greedily over every episode, whole, through ``TradingEnv``, asking it every
    ``decision_every`` bars (the policy's training cadence; module docstring). ``chosen`` counts the
    decisions, ``executed`` the environment's bars (the held bars in between are HOLD)."""
    env = TradingEnv(list(episodes), **dict(env_kwargs or {}))
    stepper = DecisionEvery(env, decision_every)
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
            obs, _, terminated, truncated, _ = stepper.step(a)
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


# --- gates: ``core.rl_gates`` (re-exported here; the API gates a registered version with the same code)

__all__ = [
    "RL_GATE_NAMES",
    "ActFn",
    "PolicyEvaluation",
    "PromotionDecision",
    "RLGate",
    "RLGateConfig",
    "RLGateReport",
    "action_probabilities",
    "evaluate_policy",
    "evaluate_rl_gates",
    "greedy_policy",
    "pooled_metrics",
    "promotion_decision",
    "supervised_backtest",
]
