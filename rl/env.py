"""Gymnasium environment of the hybrid RL agent (spec 001 §25.2) over the one simulator, ``core.sim``.

One episode trades one symbol through the bars of an ``rl.episodes.EpisodeData`` (a walk-forward test
window with out-of-sample model outputs). At step t the agent sees the observation of bar t's close
(``core.rl_obs``: dims 0–13 precomputed, 14–16 from the book after bar t) and picks an action; the
action acts at bar t + 1's open and the simulator runs bar t + 1, exactly as the portfolio backtest
runs a signal of bar t (``core.sim.kernel.portfolio_bar``, called here on the simulator's own state):

- Actions ``Discrete(4)``: 0 HOLD (nothing), 1 LONG, 2 SHORT, 3 CLOSE. Each is one fixed backtest
  signal: LONG = exit a short + enter long, SHORT = exit a long + enter short, CLOSE = exit either
  side. So the spec's reversal rule holds (LONG while short closes the short at the open, then opens
  the long; SHORT likewise), LONG while long and SHORT while short change nothing (no pyramiding,
  one-way book), CLOSE while flat changes nothing. An entry is the policy's: notional
  ``PolicyConfig.position_notional_pct`` of equity, ``PolicyConfig.leverage``, SL/TP at
  ``close_t ∓ k_sl·ATR_t`` / ``close_t ± k_tp·ATR_t`` (``LabelSpec``, ATR the labels' 15m ATR at t's
  close, as ``core.policy``); the SL/TP triggers and the time exit (``SimConfig.max_hold_bars``: the
  label horizon by default, as the backtest) stay in force whatever the agent does next.
- Risk guards: every entry goes through the simulator's guard (``kernel.try_entry`` → ``risk_mask``,
  with ``RiskConfig`` limits, the daily loss limit and its flatten, rate limits, filters, "never a naked
  position"). A refused entry is recorded as a risk event in the simulator and the action becomes
  HOLD; ``info["refused"]`` names its reason codes and ``refusal_counts`` counts them by code. Exits
  are never refused (as in the backtest): a reversal whose entry is refused still closes the old
  position, so it becomes CLOSE (``info["executed"]``).
- Reward, per step, over what happened in bar t + 1; two modes (``reward=``):

  ``"mark_to_market"`` (the default): the change of the account's equity over the bar (wallet +
  unrealized PnL at the mark): ``realized_pnl − trading_cost − funding_cost`` of the bar plus the
  change of the open position's unrealized PnL (``info["unrealized_change"]``, at the mark, from the
  entry's reference price: the entry's slippage is in ``trading_cost``). Spec 001 §25.2 is a
  draft, and its literal form (below) pays a trade's price move only when the trade closes, up to
  ``max_hold_bars`` (360) bars after the decision, while its costs are paid at once: with γ = 0.99
  (a horizon of ~100 steps) the critic sees nearly every entry as a loss, and PPO learned to churn
  instead of the planted edge (bench/RESULTS.md #17). The mark-to-market form is what the spec
  intends, the same money on a per-step schedule: it telescopes, so over an episode that ends flat
  its sum is exactly the spec's ``Σ (realized_pnl − trading_cost − funding_cost)`` (both equal the
  simulator's net PnL; tests/unit/test_rl_env.py checks both modes against the backtest).

  ``"realized"``: the spec's literal ``realized_pnl − trading_cost − funding_cost``: ``realized_pnl`` =
  gross PnL at reference prices (``side·qty·(exit_ref − entry_ref)``) of the trades that closed in the
  bar (signal exits, SL/TP, time exit, liquidation, the END close); ``trading_cost`` = taker fees (a
  liquidation's clearance fee included) + slippage of the fills in the bar (fill vs reference price,
  entries and exits); ``funding_cost`` = funding paid in the bar (< 0: received). Unrealized PnL is
  never rewarded in this mode. Where the spec is silent we chose: costs are charged when they are
  incurred (an entry's fee and slippage at the entry step; funding at the funding time), the price move
  only when the trade closes; amounts in USDT times ``reward_scale`` (default 1 / initial equity: a
  fraction of the starting equity), in both modes. Summed over an episode that ends flat, the rewards of
  either mode are exactly the simulator's PnL net of all costs and funding: ``Σ reward / reward_scale =
  final wallet − initial equity = Σ trade pnl``. ``info`` has the three parts and ``unrealized_change``
  in USDT whatever the mode.
- Episode end: the last bar of the episode (or of the ``episode_bars`` window) closes what is open at
  its close (END) and ends the episode (``terminated``); with ``close_at_end=False`` the position stays
  open and the episode is ``truncated``. Equity ≤ 0 terminates too.

No look-ahead: step t reads market rows ≤ t + 1 only to execute (the fill at t + 1's open and the bar
t + 1 run), and the observation it returns is bar t + 1's.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.rl_obs import MARKET_DIMS, OBS_DIM, position_row
from core.sim import FillSimulator, SimConfig, SymbolRules, sim_config_for
from core.sim import kernel as _k
from core.sim.state import curve_frame, decode_risk_mask
from rl.episodes import EpisodeData


class Action(IntEnum):
    HOLD = 0
    LONG = 1
    SHORT = 2
    CLOSE = 3


ACTION_NAMES: tuple[str, ...] = tuple(a.name for a in Action)
#: (direction, exit flags) of each action as a backtest signal; exits: bit 0 closes a long, bit 1 a short.
ACTION_SIGNALS: tuple[tuple[int, int], ...] = ((0, 0), (1, 2), (-1, 1), (0, 3))
_HOLD, _LONG, _SHORT, _CLOSE = 0, 1, 2, 3
RewardMode = Literal["mark_to_market", "realized"]
REWARD_MODES: tuple[str, ...] = ("mark_to_market", "realized")


class TradingEnv(gym.Env[np.ndarray, int]):
    """One symbol's trading over precomputed episodes, on ``core.sim`` (module docstring).

    ``episodes``: one or more ``EpisodeData``; ``reset`` picks one at random (``np_random``) or, with
    ``sequential``, in turn; ``options={"episode": i, "start": j}`` picks one explicitly. ``episode_bars``:
    run a window of that many bars at a random start (None: the whole episode). ``config``: the
    simulator (default ``sim_config_for(label, policy)``, the backtest's); ``risk``: the guard's limits
    (default the ``RiskConfig`` preset; None: venue and book checks only); ``rules``: venue rules by
    symbol. ``reward``: ``"mark_to_market"`` (default) or the spec's literal ``"realized"`` (module
    docstring). ``reward_scale``: USDT → reward (default 1 / initial equity).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        episodes: EpisodeData | Sequence[EpisodeData],
        *,
        config: SimConfig | None = None,
        risk: RiskConfig | None = RiskConfig(),  # a frozen model: safe as a default
        policy: PolicyConfig | None = None,
        label: LabelSpec | None = None,
        rules: dict[str, SymbolRules] | None = None,
        episode_bars: int | None = None,
        close_at_end: bool = True,
        sequential: bool = False,
        reward: RewardMode = "mark_to_market",
        reward_scale: float | None = None,
        hold_norm_min: float | None = None,
    ) -> None:
        super().__init__()
        self.episodes: tuple[EpisodeData, ...] = (
            (episodes,) if isinstance(episodes, EpisodeData) else tuple(episodes)
        )
        if not self.episodes:
            raise ValueError("TradingEnv: no episode")
        if episode_bars is not None and episode_bars < 2:
            raise ValueError(f"episode_bars must be ≥ 2, got {episode_bars}")
        self.label = label or LabelSpec()
        self.policy = policy or PolicyConfig()
        self.config = config or sim_config_for(self.label, self.policy)
        self.risk = risk
        self.rules = rules
        self.episode_bars = episode_bars
        self.close_at_end = close_at_end
        self.sequential = sequential
        if reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {reward!r}")
        self.reward_mode: RewardMode = reward
        self.reward_scale = (
            1.0 / self.config.initial_equity_usdt if reward_scale is None else float(reward_scale)
        )
        self.hold_norm_min = float(hold_norm_min or self.label.h_bars)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(Action))
        # decision row of the one-symbol book (reused every step)
        self._direction = np.zeros(1, np.int8)
        self._exits = np.zeros(1, np.int8)
        self._size = np.full(1, self.policy.position_notional_pct)
        self._leverage = np.full(1, float(self.policy.leverage))
        self._sl = np.full(1, np.nan)
        self._tp = np.full(1, np.nan)
        self._req = np.empty(_k.REQ_LEN)
        self._next_episode = 0
        self.refusal_counts: dict[str, int] = {}
        self.action_counts = np.zeros(len(Action), np.int64)
        self.sim: FillSimulator | None = None
        self.episode: EpisodeData | None = None

    # --- gymnasium API -----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "episode" in options:
            i = int(options["episode"])
        elif self.sequential:
            i = self._next_episode
            self._next_episode = (i + 1) % len(self.episodes)
        else:
            i = int(self.np_random.integers(len(self.episodes)))
        ep = self.episodes[i]
        n = len(ep)
        bars = n if self.episode_bars is None else min(self.episode_bars, n)
        if "start" in options:
            start = int(options["start"])
            if not 0 <= start <= n - bars:
                raise ValueError(f"start {start} outside [0, {n - bars}] for {bars} bars of {n}")
        else:
            start = 0 if bars == n else int(self.np_random.integers(n - bars + 1))
        self.episode = ep
        self.episode_index = i
        self._start = start
        self._end = start + bars  # bars [start, end) are run; the last step executes bar end − 1
        self._t = start
        self.sim = FillSimulator((ep.symbol,), self.config, self.risk, self.rules)
        self._curve = np.full((bars - 1, _k.CURVE_LEN), np.nan)
        self.refusal_counts = {}
        self.action_counts = np.zeros(len(Action), np.int64)
        return self._observation(start), {"episode": i, "start": start, "bars": bars, "symbol": ep.symbol}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        sim, ep = self.sim, self.episode
        if sim is None or ep is None:
            raise RuntimeError("TradingEnv.step before reset")
        a = int(action)
        if not 0 <= a < 4:
            raise ValueError(f"action must be 0..3 (HOLD, LONG, SHORT, CLOSE), got {action!r}")
        t = self._t
        j = t + 1
        if j >= self._end:
            raise RuntimeError("TradingEnv.step after the episode ended; call reset")
        acct, pos, logs = sim.acct, sim.pos, sim.logs
        d, x = ACTION_SIGNALS[a]
        self._direction[0] = d
        self._exits[0] = x
        if d:
            close, atr = ep.close[t, 0], ep.atr[t, 0]
            self._sl[0] = close - d * self.label.k_sl * atr
            self._tp[0] = close + d * self.label.k_tp * atr
        side_before = pos[0, _k.P_SIDE]
        fees0, slip0, fund0 = acct[_k.A_FEES], acct[_k.A_SLIPPAGE], acct[_k.A_FUNDING]
        equity0 = float(acct[_k.A_EQUITY])
        n_trades0, n_events0 = int(acct[_k.A_N_TRADES]), int(acct[_k.A_N_EVENTS])
        if (n_trades0 + 2 > logs.trades.shape[0] or acct[_k.A_N_FILLS] + 3 > logs.fills.shape[0]
                or n_events0 + 2 > logs.events.shape[0]):  # fmt: skip
            logs.ensure_room(acct, 1)
        last = j == self._end - 1
        _k.portfolio_bar(
            acct, pos, sim.sym, sim.brackets, sim.cfg, sim.lim, logs.trades, logs.fills, logs.events,
            self._req, int(ep.ts[j]), True, self._direction, self._exits, self._size, self._sl, self._tp,
            self._leverage, ep.close[t], ep.atr[t], ep.quote_volume[t], ep.open[j], ep.close[j],
            ep.mark_open[j], ep.mark_high[j], ep.mark_low[j], ep.mark_close[j], ep.quote_volume[j],
            ep.funding_rate[j], last and self.close_at_end, self._curve[j - self._start - 1],
        )  # fmt: skip
        self._t = j
        gross = 0.0
        for r in range(n_trades0, int(acct[_k.A_N_TRADES])):
            gross += logs.trades[r, _k.T_GROSS]
        cost = (acct[_k.A_FEES] - fees0) + (acct[_k.A_SLIPPAGE] - slip0)
        funding = acct[_k.A_FUNDING] - fund0
        mask = 0
        for r in range(n_events0, int(acct[_k.A_N_EVENTS])):
            if logs.events[r, _k.E_SYMBOL] == 0.0:  # an entry the guard refused (−1: account events)
                mask |= int(logs.events[r, _k.E_MASK])
        refused: tuple[str, ...] = ()
        if mask:
            refused = decode_risk_mask(mask)
            for code in refused:
                self.refusal_counts[code] = self.refusal_counts.get(code, 0) + 1
            executed = _CLOSE if side_before == -d else _HOLD
        elif (d and side_before == d) or (a == _CLOSE and side_before == 0.0):
            executed = _HOLD
        else:
            executed = a
        self.action_counts[executed] += 1
        equity = float(acct[_k.A_EQUITY])
        terminated = (last and self.close_at_end) or equity <= 0.0
        truncated = last and not terminated
        realized = gross - cost - funding
        unrealized_change = (equity - equity0) - realized
        reward = (realized if self.reward_mode == "realized" else equity - equity0) * self.reward_scale
        info = {
            "action": a,
            "executed": executed,
            "refused": refused,
            "realized_pnl": gross,
            "trading_cost": cost,
            "funding": funding,
            "unrealized_change": unrealized_change,
            "equity": equity,
            "refusal_counts": self.refusal_counts,
        }
        return self._observation(j), float(reward), bool(terminated), bool(truncated), info

    # --- helpers -----------------------------------------------------------------------------------
    def _observation(self, t: int) -> np.ndarray:
        assert self.sim is not None and self.episode is not None
        p = self.sim.pos[0]
        out = np.empty(OBS_DIM, np.float32)
        out[:MARKET_DIMS] = self.episode.market_obs[t]
        side = p[_k.P_SIDE]
        if side != 0.0:
            entry = p[_k.P_ENTRY_PRICE]
            out[MARKET_DIMS:] = position_row(
                side, p[_k.P_BARS_HELD], side * (p[_k.P_MARK] - entry) / entry, self.hold_norm_min
            )
        else:
            out[MARKET_DIMS:] = 0.0
        return out

    def equity_curve(self) -> Any:
        """The bar-close account rows of the bars run so far (``core.sim.state.curve_frame``)."""
        return curve_frame(self._curve[: self._t - self._start])
