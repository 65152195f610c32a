"""RL environment (spec 001 §25.2): spaces, reversal rules, guard refusals, reward against the simulator's
own backtest of the same actions, no look-ahead, gymnasium's checker."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.rl_obs import MARKET_DIMS, OBS_DIM
from core.signals import empty_signals
from core.sim import MarketPanel, run_backtest, sim_config_for
from rl.env import ACTION_SIGNALS, Action, TradingEnv
from rl.episodes import MARKET_COLUMNS, EpisodeData

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
HOUR_MS = 3_600_000


def market(n: int, seed: int = 0, vol: float = 0.002) -> dict[str, np.ndarray]:
    """A random walk of 1m bars (BTC-like price) with hourly funding and a 0.3% ATR."""
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, vol / 4, n))
    hi = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 2, n)))
    lo = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 2, n)))
    ts = T0 + 60_000 * np.arange(n, dtype=np.int64)
    funding = np.where((ts + 60_000) % HOUR_MS == 0, 3e-4, 0.0)
    return {
        "ts": ts, "open": open_, "close": close, "mark_open": open_, "mark_high": hi, "mark_low": lo,
        "mark_close": close * (1 + rng.normal(0, 1e-4, n)), "quote_volume": rng.uniform(1e6, 5e7, n),
        "funding_rate": funding, "atr": close * 0.003,
    }  # fmt: skip


def episode(n: int = 600, seed: int = 0, **kw: float) -> EpisodeData:
    m = market(n, seed, **kw)
    obs = np.random.default_rng(seed + 1).normal(size=(n, MARKET_DIMS)).astype(np.float32)
    return EpisodeData.from_columns("BTCUSDT", m["ts"], m, obs)


def panel_of(ep: EpisodeData) -> MarketPanel:
    return MarketPanel(("BTCUSDT",), ep.ts.copy(), **{c: getattr(ep, c).copy() for c in MARKET_COLUMNS})


def run(env: TradingEnv, actions: list[int] | np.ndarray, **reset_options: int):
    env.reset(seed=0, options=reset_options or None)
    rewards, infos, observations = [], [], []
    for a in actions:
        obs, r, terminated, truncated, info = env.step(int(a))
        rewards.append(r)
        infos.append(info)
        observations.append(obs)
        if terminated or truncated:
            break
    return np.array(rewards), infos, observations


def side(env: TradingEnv) -> int:
    assert env.sim is not None
    p = env.sim.position("BTCUSDT")
    return 0 if p is None else p.side


# --- spaces and the checker ---------------------------------------------------------------------------


def test_spaces_are_the_specs():
    env = TradingEnv(episode())
    assert env.observation_space.shape == (OBS_DIM,) == (17,)
    assert env.observation_space.dtype == np.float32
    assert env.action_space.n == 4
    assert [a.name for a in Action] == ["HOLD", "LONG", "SHORT", "CLOSE"]
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (17,) and env.observation_space.contains(obs)
    assert np.array_equal(obs[:MARKET_DIMS], env.episode.market_obs[0]) and not obs[MARKET_DIMS:].any()


def test_gymnasium_check_env_passes():
    env = TradingEnv([episode(300, 0), episode(300, 1)], episode_bars=120)
    check_env(env, skip_render_check=True)


def test_bad_action_is_refused_with_a_clear_error():
    env = TradingEnv(episode())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0..3"):
        env.step(4)


# --- reversal rules -----------------------------------------------------------------------------------


def test_reversal_rules():
    env = TradingEnv(episode(vol=0.0002), risk=None)
    env.reset(seed=0)
    _, _, _, _, info = env.step(Action.LONG)
    assert side(env) == 1 and info["executed"] == Action.LONG
    fills = len(env.sim.fills())
    _, _, _, _, info = env.step(Action.LONG)  # already long: nothing (no pyramiding)
    assert side(env) == 1 and info["executed"] == Action.HOLD and len(env.sim.fills()) == fills
    _, _, _, _, info = env.step(Action.SHORT)  # long → close, then short
    assert side(env) == -1 and info["executed"] == Action.SHORT
    trades = env.sim.trades()
    assert list(trades["side"]) == [1] and list(trades["exit_reason"]) == ["SIGNAL"]
    assert info["realized_pnl"] == pytest.approx(trades["gross_pnl"].iloc[0])
    _, _, _, _, info = env.step(Action.LONG)  # short → close, then long
    assert side(env) == 1 and list(env.sim.trades()["side"]) == [1, -1]
    _, _, _, _, info = env.step(Action.CLOSE)
    assert side(env) == 0 and info["executed"] == Action.CLOSE and len(env.sim.trades()) == 3
    _, _, _, _, info = env.step(Action.CLOSE)  # flat: nothing
    assert side(env) == 0 and info["executed"] == Action.HOLD and len(env.sim.trades()) == 3
    _, _, _, _, info = env.step(Action.HOLD)
    assert side(env) == 0 and info["executed"] == Action.HOLD


def test_entries_carry_the_policys_size_leverage_and_barriers():
    label, policy = LabelSpec(), PolicyConfig()
    env = TradingEnv(episode(vol=0.0002), risk=None)
    env.reset(seed=0)
    ep = env.episode
    env.step(Action.SHORT)
    p = env.sim.position("BTCUSDT")
    close, atr = ep.close[0, 0], ep.atr[0, 0]
    assert p.side == -1 and p.leverage == policy.leverage
    assert p.sl_price == pytest.approx(close + label.k_sl * atr) and p.tp_price == pytest.approx(
        close - label.k_tp * atr
    )
    assert p.qty * p.entry_price == pytest.approx(policy.position_notional_pct * 10_000, rel=1e-3)


# --- risk guards --------------------------------------------------------------------------------------


def test_a_refused_entry_is_a_hold_with_its_reason_counted():
    env = TradingEnv(episode(vol=0.0002))
    env.reset(seed=0)
    env.sim.set_kill_switch(True)
    _, reward, _, _, info = env.step(Action.LONG)
    assert side(env) == 0 and info["executed"] == Action.HOLD and info["refused"] == ("KILL_SWITCH",)
    assert reward == 0.0 and info["refusal_counts"] == {"KILL_SWITCH": 1}
    assert list(env.sim.risk_events()["codes"]) == ["KILL_SWITCH"]  # recorded by the sim
    env.step(Action.SHORT)
    assert env.refusal_counts == {"KILL_SWITCH": 2} and side(env) == 0
    assert env.action_counts[Action.HOLD] == 2 and env.action_counts[Action.LONG] == 0


def test_a_reversal_whose_entry_is_refused_still_closes():
    env = TradingEnv(episode(vol=0.0002))
    env.reset(seed=0)
    env.step(Action.LONG)
    env.sim.set_kill_switch(True)
    _, _, _, _, info = env.step(Action.SHORT)
    assert side(env) == 0 and info["executed"] == Action.CLOSE and info["refused"] == ("KILL_SWITCH",)
    assert list(env.sim.trades()["exit_reason"]) == ["SIGNAL"]


def test_risk_config_limits_refuse_inside_the_env():
    tight = RiskConfig(max_symbol_notional_pct=0.01)  # the policy's entry is 10% of equity or more
    env = TradingEnv(episode(vol=0.0002), risk=tight)
    env.reset(seed=0)
    _, _, _, _, info = env.step(Action.LONG)
    assert side(env) == 0 and "MAX_SYMBOL_NOTIONAL" in info["refused"] and info["executed"] == Action.HOLD


def test_an_entry_without_atr_has_no_stop_and_is_refused():
    ep = episode()
    ep.atr[0, 0] = np.nan  # warm-up: no barrier distance, so no stop
    env = TradingEnv(ep, risk=None)
    env.reset(seed=0)
    _, _, _, _, info = env.step(Action.LONG)
    assert "NO_PROTECTION" in info["refused"] and side(env) == 0


# --- reward against the simulator ---------------------------------------------------------------------


@pytest.mark.parametrize("reward", ["mark_to_market", "realized"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("risk", [None, RiskConfig(daily_loss_limit_pct=0.02, max_orders_per_day=40)])
def test_rewards_sum_to_the_backtests_net_pnl_of_the_same_actions(seed, risk, reward):
    ep = episode(1_500, seed)
    rng = np.random.default_rng(seed)
    actions = rng.choice(4, size=len(ep) - 1, p=[0.7, 0.12, 0.12, 0.06])
    env = TradingEnv(ep, risk=risk, reward=reward)
    rewards, infos, _ = run(env, actions)
    assert len(rewards) == len(ep) - 1
    # the same decisions as backtest signals, through the portfolio backtest (run_portfolio)
    label, policy = LabelSpec(), PolicyConfig()
    signals = empty_signals((len(ep), 1))
    for t, a in enumerate(actions):
        d, x = ACTION_SIGNALS[a]
        signals.direction[t, 0] = d
        signals.exit_long[t, 0] = bool(x & 1)
        signals.exit_short[t, 0] = bool(x & 2)
        if d:
            close, atr = ep.close[t, 0], ep.atr[t, 0]
            signals.size_fraction[t, 0] = policy.position_notional_pct
            signals.leverage[t, 0] = policy.leverage
            signals.sl_price[t, 0] = close - d * label.k_sl * atr
            signals.tp_price[t, 0] = close + d * label.k_tp * atr
    result = run_backtest(panel_of(ep), signals, sim_config_for(label, policy), risk)
    trades = env.sim.trades()
    assert len(trades) > 10
    assert trades.equals(result.trades)
    assert env.sim.risk_events().equals(result.risk_events)
    net = result.account["wallet"] - result.account["initial_equity"]
    assert net == pytest.approx(result.trades["pnl"].sum(), abs=1e-6)
    assert rewards.sum() * 10_000 == pytest.approx(net, abs=1e-6)
    # the three parts: gross at reference prices, fees + slippage, funding
    parts = {k: sum(i[k] for i in infos) for k in ("realized_pnl", "trading_cost", "funding")}
    assert parts["realized_pnl"] == pytest.approx(result.trades["gross_pnl"].sum(), abs=1e-6)
    assert parts["trading_cost"] == pytest.approx(
        result.account["fees"] + result.account["slippage"], abs=1e-6
    )
    assert parts["funding"] == pytest.approx(result.account["funding"], abs=1e-9)
    assert parts["funding"] != 0.0
    # per step: mark-to-market = the spec's realized − cost − funding + the change of unrealized PnL
    spec = np.array([i["realized_pnl"] - i["trading_cost"] - i["funding"] for i in infos])
    mtm = spec + np.array([i["unrealized_change"] for i in infos])
    equity = np.r_[10_000.0, [i["equity"] for i in infos]]
    assert np.allclose(mtm, np.diff(equity), atol=1e-6)
    assert np.allclose(rewards * 10_000, spec if reward == "realized" else mtm, atol=1e-6)
    assert spec.sum() == pytest.approx(mtm.sum(), abs=1e-6)  # telescopes: the episode ends flat
    assert not np.allclose(spec, mtm)  # yet the schedules differ
    curve = env.equity_curve()
    assert np.allclose(curve["equity"].to_numpy(), result.equity["equity"].to_numpy()[1:])
    if risk is not None:
        assert sum(env.refusal_counts.values()) > 0


def test_realized_mode_pays_no_unrealized_pnl():
    env = TradingEnv(episode(vol=0.0002), risk=None, reward="realized")
    env.reset(seed=0)
    _, r_entry, _, _, info = env.step(Action.LONG)
    assert r_entry == pytest.approx(-(info["trading_cost"] + info["funding"]) / 10_000)
    assert info["realized_pnl"] == 0.0 and r_entry < 0  # the entry costs, its price move is not paid yet
    _, r_hold, _, _, info = env.step(Action.HOLD)
    assert side(env) == 1 and env.sim.unrealized != 0.0
    assert r_hold == pytest.approx(-info["funding"] / 10_000)


def test_mark_to_market_mode_pays_the_open_positions_move_each_step():
    env = TradingEnv(episode(vol=0.0002), risk=None)
    assert env.reward_mode == "mark_to_market"
    env.reset(seed=0)
    _, r_entry, _, _, info = env.step(Action.LONG)
    assert info["realized_pnl"] == 0.0 and info["trading_cost"] > 0
    assert r_entry == pytest.approx((env.sim.equity - 10_000) / 10_000)  # the equity change
    assert r_entry == pytest.approx(
        (info["unrealized_change"] - info["trading_cost"] - info["funding"]) / 10_000
    )
    u0, e0 = env.sim.unrealized, env.sim.equity
    _, r_hold, _, _, info = env.step(Action.HOLD)
    assert side(env) == 1 and env.sim.unrealized != u0
    assert info["unrealized_change"] == pytest.approx(env.sim.unrealized - u0)
    assert r_hold == pytest.approx((env.sim.unrealized - u0 - info["funding"]) / 10_000)
    assert r_hold == pytest.approx((env.sim.equity - e0) / 10_000) and r_hold != 0.0
    with pytest.raises(ValueError, match="reward must be one of"):
        TradingEnv(episode(), reward="unrealized")  # type: ignore[arg-type]


def test_the_last_step_closes_and_terminates():
    ep = episode(50, vol=0.0002)
    env = TradingEnv(ep, risk=None)
    rewards, infos, _ = run(env, [Action.LONG] + [Action.HOLD] * 100)
    assert len(rewards) == 49
    assert list(env.sim.trades()["exit_reason"]) == ["END"] and side(env) == 0
    assert rewards.sum() * 10_000 == pytest.approx(env.sim.wallet - 10_000)
    open_env = TradingEnv(ep, risk=None, close_at_end=False)
    open_env.reset(seed=0)
    for _ in range(48):
        open_env.step(Action.HOLD)
    _, _, terminated, truncated, _ = open_env.step(Action.LONG)
    assert truncated and not terminated and side(open_env) == 1


def test_episode_windows_and_explicit_choice():
    eps = [episode(400, 0), episode(400, 1)]
    env = TradingEnv(eps, episode_bars=100)
    obs, info = env.reset(seed=5, options={"episode": 1, "start": 250})
    assert info == {"episode": 1, "start": 250, "bars": 100, "symbol": "BTCUSDT"}
    assert np.array_equal(obs[:MARKET_DIMS], eps[1].market_obs[250])
    rewards, _, _ = run(env, [0] * 500, episode=1, start=250)
    assert len(rewards) == 99
    starts = {env.reset(seed=s)[1]["start"] for s in range(20)}
    assert len(starts) > 5 and all(0 <= s <= 300 for s in starts)


# --- no look-ahead ------------------------------------------------------------------------------------


def test_observation_at_t_is_the_same_when_data_after_t_is_removed():
    ep = episode(800, 3)
    rng = np.random.default_rng(9)
    actions = rng.choice(4, size=len(ep) - 1, p=[0.6, 0.15, 0.15, 0.1])
    full = TradingEnv(ep, risk=RiskConfig(), close_at_end=False)
    rewards_full, _, obs_full = run(full, actions)
    for t in sorted(rng.choice(np.arange(2, len(ep) - 1), size=12, replace=False)):
        cut = TradingEnv(ep.rows(0, t + 1), risk=RiskConfig(), close_at_end=False)
        rewards_cut, _, obs_cut = run(cut, actions[:t])
        # the observation of bar t (returned by step t − 1) and every reward up to it are unchanged
        assert np.array_equal(obs_cut[-1], obs_full[t - 1]), t
        assert np.array_equal(rewards_cut, rewards_full[:t]), t


def test_decision_every_wrapper_holds_between_decisions_and_sums_the_rewards():
    from rl.train import DecisionEvery, make_env

    ep = episode(100, vol=0.0002)
    env = DecisionEvery(TradingEnv(ep, risk=None), 10)
    ref = TradingEnv(ep, risk=None)
    env.reset(seed=0, options={"episode": 0, "start": 0})
    ref.reset(seed=0, options={"episode": 0, "start": 0})
    obs, r, *_ = env.step(Action.LONG)
    rewards = [ref.step(Action.LONG)[1]] + [ref.step(Action.HOLD)[1] for _ in range(9)]
    assert r == pytest.approx(sum(rewards)) and side(env.unwrapped) == 1
    assert np.array_equal(obs, ref._observation(10)) and env.unwrapped._t == 10
    steps = 1
    while True:  # 99 bars to run: 9 more full decisions, then the last one stops at the episode's end
        _, _, terminated, truncated, _ = env.step(Action.CLOSE)
        steps += 1
        if terminated or truncated:
            break
    assert terminated and steps == 10 and env.unwrapped._t == 99
    with pytest.raises(ValueError, match="decision_every"):
        DecisionEvery(TradingEnv(ep), 0)
    made = make_env({"episodes": [ep], "episode_bars": 50, "decision_every": 5, "reward": "realized"})
    assert isinstance(made, DecisionEvery) and made.unwrapped.reward_mode == "realized"
    assert isinstance(make_env({"episodes": [ep]}), TradingEnv)
