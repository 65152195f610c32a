"""RLlib PPO on the trading environment (issue #17): a short real run whose checkpoint restores with
``RLModule.from_checkpoint`` and acts like the trained algorithm; evaluation metrics on known actions;
the §25.7 gates and the recorded override; a null market does not pass the gates."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_rl_env import episode

from core.metrics import max_drawdown, profit_factor, sharpe
from rl.env import TradingEnv
from rl.evaluate import (
    RLGateConfig,
    evaluate_policy,
    evaluate_rl_gates,
    greedy_policy,
    promotion_decision,
)
from rl.train import MODULE_SUBDIR, RLTrainConfig, load_module, train_ppo


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory):
    eps = [episode(400, seed=3), episode(400, seed=4)]
    cfg = RLTrainConfig(timesteps=400, train_batch_size=200, minibatch_size=64, num_epochs=2, episode_bars=100,
                        hidden=(16, 16), checkpoint_dir=tmp_path_factory.mktemp("ppo"))  # fmt: skip
    seen = []
    result = train_ppo(eps, cfg, progress=seen.append, keep_algo=True)
    yield result, seen, eps
    result.algo.stop()


@pytest.mark.slow
def test_short_ppo_run_saves_a_module_that_restores_and_acts_like_the_algorithm(trained):
    result, seen, eps = trained
    assert result.env_steps >= 400 and result.iterations == len(seen) >= 2
    assert [p.env_steps for p in seen] == sorted(p.env_steps for p in seen) and seen[-1].total_steps == 400
    assert result.ppo_env_steps_per_s > 0
    assert result.module_dir == result.checkpoint_dir / MODULE_SUBDIR
    assert (result.checkpoint_dir / "rllib_checkpoint.json").is_file()
    restored = greedy_policy(load_module(result.module_dir))
    live = greedy_policy(result.algo.get_module())
    env = TradingEnv(eps)
    obs, _ = env.reset(seed=0, options={"episode": 0, "start": 0})
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert restored(obs) == live(obs)
        obs, *_ = env.step(int(rng.integers(4)))
    fixed = np.linspace(-2, 2, 17).astype(np.float32)
    assert restored(fixed) == live(fixed)


def test_evaluation_metrics_of_a_known_action_sequence():
    eps = [episode(300, seed=7), episode(300, seed=8)]
    plan = {0: 1, 40: 3, 80: 2, 150: 1, 220: 3}  # LONG, CLOSE, SHORT, LONG (reversal), CLOSE
    step = {"i": 0}

    def act(_obs):
        a = plan.get(step["i"] % 299, 0)
        step["i"] += 1
        return a

    ev = evaluate_policy(eps, act)
    assert ev.chosen == {"HOLD": 2 * 294, "LONG": 4, "SHORT": 2, "CLOSE": 4}
    assert ev.executed["LONG"] == 4 and ev.executed["SHORT"] == 2
    # the same numbers from the env run by hand
    pnl, rets, dds = [], [], []
    for i in range(2):
        env = TradingEnv(eps)
        env.reset(seed=0, options={"episode": i, "start": 0})
        for t in range(299):
            env.step(plan.get(t, 0))
        pnl += env.sim.trades()["pnl"].tolist()
        e = np.r_[10_000.0, env.equity_curve()["equity"].to_numpy()]
        rets.append(np.diff(e) / e[:-1])
        dds.append(max_drawdown(e))
    assert ev.metrics["trades"] == len(ev.trades) == len(pnl) >= 4
    assert ev.metrics["pnl"] == pytest.approx(sum(pnl))
    assert ev.metrics["profit_factor"] == pytest.approx(profit_factor(np.array(pnl)))
    assert ev.metrics["sharpe"] == pytest.approx(sharpe(np.concatenate(rets)))
    assert ev.metrics["max_drawdown"] == pytest.approx(max(dds))


@pytest.mark.parametrize("every", [1, 7, 15])
def test_evaluation_decides_every_n_bars_and_holds_between(every):
    """``decision_every`` N: the policy is asked at bars 0, N, 2N, … of each episode (299 steps), the
    env runs HOLD between (``rl.train.DecisionEvery``, the training wrapper); the same as a hand loop."""
    eps = [episode(300, seed=7), episode(300, seed=8)]
    cycle = (1, 0, 3, 2, 0, 1)  # LONG, HOLD, CLOSE, SHORT, HOLD, LONG (a reversal)
    calls = {"n": 0}

    def act(_obs):
        a = cycle[calls["n"] % len(cycle)]
        calls["n"] += 1
        return a

    ev = evaluate_policy(eps, act, decision_every=every)
    per_episode = -(-299 // every)
    assert calls["n"] == sum(ev.chosen.values()) == 2 * per_episode
    assert ev.chosen == {name: sum(cycle[i % len(cycle)] == code for i in range(2 * per_episode))
                         for code, name in enumerate(("HOLD", "LONG", "SHORT", "CLOSE"))}  # fmt: skip
    assert sum(ev.executed.values()) == 2 * 299
    pnl, executed, k = [], np.zeros(4, np.int64), 0
    for i in range(2):
        env = TradingEnv(eps)
        env.reset(seed=0, options={"episode": i, "start": 0})
        for t in range(299):
            a = 0
            if t % every == 0:
                a, k = cycle[k % len(cycle)], k + 1
            env.step(a)
        pnl += env.sim.trades()["pnl"].tolist()
        executed += env.action_counts
    assert ev.executed == dict(zip(("HOLD", "LONG", "SHORT", "CLOSE"), executed.tolist(), strict=True))
    assert ev.metrics["trades"] == len(pnl) > 0 and ev.metrics["pnl"] == pytest.approx(sum(pnl))
    with pytest.raises(ValueError, match="decision_every"):
        evaluate_policy(eps, act, decision_every=0)


def good_metrics(**kw):
    return {"trades": 40.0, "profit_factor": 1.6, "max_drawdown": 0.04, "sharpe": 2.0, **kw}


SPREAD = {"HOLD": 700, "LONG": 120, "SHORT": 100, "CLOSE": 80}


def test_gates_pass_a_good_agent_and_name_each_failure():
    ok = evaluate_rl_gates(good_metrics(), SPREAD, {"profit_factor": 1.3})
    assert ok.passed and ok.failed == []
    assert evaluate_rl_gates(good_metrics(profit_factor=1.15), SPREAD, {"profit_factor": 0.9}).failed == [
        "profit_factor"
    ]
    assert evaluate_rl_gates(good_metrics(), SPREAD, {"profit_factor": 1.7}).failed == ["beats_supervised"]
    assert evaluate_rl_gates(
        good_metrics(), SPREAD, {"profit_factor": math.nan}
    ).passed  # supervised: no trades
    assert evaluate_rl_gates(good_metrics(), SPREAD, None).failed == ["beats_supervised"]
    assert evaluate_rl_gates(good_metrics(max_drawdown=0.10), SPREAD, {"profit_factor": 1}).failed == [
        "max_drawdown"
    ]
    holdy = {"HOLD": 960, "LONG": 20, "SHORT": 10, "CLOSE": 10}
    report = evaluate_rl_gates(good_metrics(), holdy, {"profit_factor": 1})
    assert (
        report.failed == ["action_distribution"]
        and "HOLD is 96.0%" in report.gate("action_distribution").reason
    )
    assert evaluate_rl_gates(good_metrics(trades=9.0), SPREAD, {"profit_factor": 1}).failed == ["min_trades"]
    assert not evaluate_rl_gates(good_metrics(trades=0.0, profit_factor=math.nan), {}, None).passed
    loose = RLGateConfig(max_action_share=0.97)
    assert evaluate_rl_gates(good_metrics(), holdy, {"profit_factor": 1}, loose).passed


def test_promotion_needs_passing_gates_or_a_recorded_override():
    failing = evaluate_rl_gates(good_metrics(max_drawdown=0.2), SPREAD, {"profit_factor": 1})
    refused = promotion_decision(failing, override=None, actor="me")
    assert (
        not refused.promote
        and refused.kind == "refused"
        and refused.record["failed_gates"] == ["max_drawdown"]
    )
    assert promotion_decision(failing, override="  ", actor="me").kind == "refused"
    forced = promotion_decision(failing, override="shadow week was fine", actor="me")
    assert forced.promote and forced.kind == "override"
    assert forced.record["override"] == "shadow week was fine" and forced.record["actor"] == "me"
    assert forced.record["gates"]["failed"] == ["max_drawdown"]
    passing = evaluate_rl_gates(good_metrics(), SPREAD, {"profit_factor": 1})
    assert promotion_decision(passing, override=None, actor="me").kind == "promote"
    with pytest.raises(ValueError, match="actor"):
        promotion_decision(passing, override=None, actor=" ")


@pytest.mark.slow
def test_agent_trained_on_a_null_market_does_not_pass_the_gates(trained):
    result, _, _ = trained
    held_out = [episode(600, seed=21), episode(600, seed=22)]  # random walk, observations pure noise
    every = RLTrainConfig().decision_every  # the fixture's cadence
    ev = evaluate_policy(held_out, greedy_policy(load_module(result.module_dir)), decision_every=every)
    report = evaluate_rl_gates(ev.metrics, ev.chosen, {"profit_factor": math.nan})
    assert not report.passed and report.failed


def planted_edge_episodes(seed: int, days: float = 6.0):
    """bench/rl.py's positive control: ETHUSDT of a synthetic market with the planted lead-lag edge, an
    ideal model output (``er_long`` = the planted drift known at t), split 2/3 train, 1/3 test."""
    from core.features import build_inputs, compute_features
    from core.sim import panel_from_market
    from core.synthetic import PLANTED_EDGE_STRENGTH, SyntheticParams, generate_market
    from core.synthetic_edge import oracle_expected_moves
    from core.time import parse_utc
    from rl.episodes import episode_from_panel

    symbols, s = ("BTCUSDT", "ETHUSDT"), "ETHUSDT"
    m = generate_market(symbols, parse_utc("2025-01-06"), int(days * 1440), seed,
                        SyntheticParams(edge_strength=PLANTED_EDGE_STRENGTH))  # fmt: skip
    feats = compute_features({x: build_inputs(m.candles_1m[x], m.mark_1m[x], m.premium_1m[x], m.funding[x])
                              for x in symbols})  # fmt: skip
    frame = feats[s].to_pandas()
    n = len(frame)
    preds = {"er_long": oracle_expected_moves(m, strength=PLANTED_EDGE_STRENGTH)[s][:n]}
    preds |= {k: np.zeros(n) for k in ("q05_long", "e_mae_long", "e_hold_long")}
    ep = episode_from_panel(panel_from_market(m), s, frame, preds)
    cut = 2 * len(ep) // 3
    return m, ep.rows(0, cut), ep.rows(cut, len(ep))


@pytest.mark.slow
def test_ppo_learns_the_planted_edge_out_of_sample(ray_session, tmp_path):
    """Positive control with RLTrainConfig's defaults (mark-to-market reward, a decision every 15 bars):
    40k env steps (~45 s of training on 2 shared cores), evaluated at the training cadence. Floor: over
    markets/seeds 3, 4, 5 the ratio to the oracle measured 0.46, 0.97, 1.11 (bench/RESULTS.md #17,
    2026-12-03); 0.15 is well below the worst of them, and far above what the spec's draft settings
    reached (−2.8: churning at a loss)."""
    from core.synthetic import PLANTED_EDGE_STRENGTH
    from core.synthetic_edge import oracle_backtest

    m, train, test = planted_edge_episodes(seed=3)
    cfg = RLTrainConfig(timesteps=40_000, seed=3, checkpoint_dir=tmp_path)
    result = train_ppo([train], cfg)
    ev = evaluate_policy(  # as trained: a decision every cfg.decision_every bars
        [test], greedy_policy(load_module(result.module_dir)), decision_every=cfg.decision_every
    )
    oracle = oracle_backtest(m, strength=PLANTED_EDGE_STRENGTH, start_ms=int(test.ts[0]),
                             end_ms=int(test.ts[-1]) + 60_000)  # fmt: skip
    assert oracle.sharpe > 0
    assert ev.metrics["trades"] >= 10 and ev.metrics["sharpe"] > 0
    assert ev.metrics["sharpe"] / oracle.sharpe > 0.15, (ev.metrics, ev.chosen, oracle.sharpe)
