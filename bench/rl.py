"""Benchmark of the RL environment (issue #17): environment steps per second on one core.

A realistic episode: ``--days`` (30) of 1m bars of a synthetic BTCUSDT market (``core.synthetic``),
its real features (``core.features``), the outputs of a small LightGBM multi-target model on them
(5 trees per output fitted here on the episode's own feature rows with a random target: the values
do not change what a step costs), the panel's marks, funding and 15m ATR, and the risk preset
(``RiskConfig()``). ``rl.env.TradingEnv`` then runs the whole episode ``--repeats`` times with
uniformly random actions drawn beforehand (random play trades often and hits the guards, the daily
loss limit above all: the slow paths of a step are exercised), pinned to one CPU. Printed: the build
time, steps/s of each run, trades and refusals; with ``--profile`` the top functions of one run
under cProfile. Target: ≥ 20,000 steps/s.

Then PPO (``rl.train.train_ppo`` with ``RLTrainConfig``'s defaults: mark-to-market reward, a training
decision every 15 bars; RLlib new API stack, local Ray on 2 CPUs, unpinned) on the controls: for each
of ``--seeds`` (3,4,5) a synthetic BTCUSDT + ETHUSDT market (``--control-days``, 6) with the planted
lead-lag edge (``PLANTED_EDGE_STRENGTH``) and the same market without it (the null market). The agent
trades ETHUSDT; its "model outputs" are an ideal supervised model's: ``er_long`` is the planted drift
known at t (``core.synthetic_edge.oracle_expected_moves``; on the null market the drift the planted
strength would give, which there is pure noise), the other three outputs neutral. Train on the first 2/3
of the bars (``--timesteps`` env steps, random 1-day windows), evaluate greedily on the last 1/3 (out
of sample), deciding every ``decision_every`` bars as in training (HOLD between, as serving does). ``ppo_env_steps_per_s``: training throughput (sampling + learning);
``eval_sharpe``: the agent's out-of-sample Sharpe (``core.metrics``); ``oracle_sharpe_ratio``: that ÷
the oracle's Sharpe on the same window (``core.synthetic_edge.oracle_backtest``), both the median over
the seeds (each seed's in ``*_by_seed``); ``null_gates_passed``: whether an agent trained on a null
market passes the §25.7 gates (``rl.evaluate``; the supervised comparison is "no trades", PF 0) for
any seed. Last line JSON: ``env_steps_per_s``, ``ppo_env_steps_per_s``, ``eval_sharpe``,
``oracle_sharpe_ratio``, ``null_gates_passed``, ``seeds`` and the per-seed figures.

    python bench/rl.py [--days 30] [--repeats 3] [--cpu 0] [--profile] [--timesteps 40000] [--control-days 6] [--seeds 3,4,5]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import RiskConfig
from core.features import build_inputs, compute_features
from core.features_schema import FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.sim import panel_from_market
from core.synthetic import generate_market
from core.time import parse_utc
from rl.env import TradingEnv
from rl.episodes import EpisodeData, episode_from_panel

START = parse_utc("2025-01-06")
#: PPO settings of the controls (``RLTrainConfig`` fields beyond timesteps and seed).
CONTROL_PPO: dict[str, Any] = {"episode_bars": 1440}  # the rest: RLTrainConfig's defaults


def build_episode(days: int) -> EpisodeData:
    import pandas as pd

    from tune.train import fit_multi_target

    symbols = ("BTCUSDT",)
    m = generate_market(symbols, START, days * 1440, seed=5)
    s = symbols[0]
    feats = compute_features({s: build_inputs(m.candles_1m[s], m.mark_1m[s], m.premium_1m[s], m.funding[s])})
    frame = feats[s].to_pandas()
    rng = np.random.default_rng(0)
    n = len(frame)
    labels = pd.DataFrame({"status": np.zeros(n, np.int8)})
    for side in ("long", "short"):
        ret = rng.normal(0, 0.01, n)
        labels[f"{side}_y"] = np.sign(ret).astype(np.int8)
        labels[f"{side}_ret_net"] = ret
        labels[f"{side}_mae"] = np.abs(rng.normal(0.005, 0.003, n))
        labels[f"{side}_time_to_event_min"] = rng.integers(1, 361, n).astype(np.float64)
    model = fit_multi_target(
        frame.drop(columns="ts"), labels, label_spec_hash="bench", num_boost_round=5, seed=0,
        params={"num_leaves": 7, "min_data_in_leaf": 50, "learning_rate": 0.1},
    )  # fmt: skip
    preds = model.predict(frame, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, num_threads=1)
    panel = panel_from_market(m)
    return episode_from_panel(panel, s, frame, preds)


def run_episode(env: TradingEnv, actions: np.ndarray) -> tuple[int, float]:
    env.reset(seed=0)
    step = env.step
    n = 0
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = step(int(a))
        n += 1
        if terminated or truncated:
            break
    return n, time.perf_counter() - t0


def control_episodes(
    edge_strength: float, days: float, seed: int = 3
) -> tuple[Any, EpisodeData, EpisodeData]:
    """A control market (planted edge or null) and its ETHUSDT episode split 2/3 train, 1/3 test."""
    from core.synthetic import PLANTED_EDGE_STRENGTH, SyntheticParams
    from core.synthetic_edge import oracle_expected_moves

    symbols, s = ("BTCUSDT", "ETHUSDT"), "ETHUSDT"
    m = generate_market(symbols, START, int(days * 1440), seed, SyntheticParams(edge_strength=edge_strength))
    feats = compute_features({x: build_inputs(m.candles_1m[x], m.mark_1m[x], m.premium_1m[x], m.funding[x])
                              for x in symbols})  # fmt: skip
    frame = feats[s].to_pandas()
    drift = oracle_expected_moves(m, strength=PLANTED_EDGE_STRENGTH)[s]
    n = len(frame)
    preds = {
        "er_long": drift[:n],
        "q05_long": np.zeros(n),
        "e_mae_long": np.zeros(n),
        "e_hold_long": np.zeros(n),
    }
    ep = episode_from_panel(panel_from_market(m), s, frame, preds)
    cut = 2 * len(ep) // 3
    return m, ep.rows(0, cut), ep.rows(cut, len(ep))


def control_train_config(timesteps: int, seed: int = 3, **overrides: Any) -> Any:
    """The controls' PPO configuration (``rl.train.RLTrainConfig``; see RESULTS.md #17 for the tuning)."""
    from rl.train import RLTrainConfig

    return RLTrainConfig(timesteps=timesteps, seed=seed, **{**CONTROL_PPO, **overrides})


def control_run(
    edge_strength: float, days: float, timesteps: int, seed: int = 3, **overrides: Any
) -> dict[str, float | bool]:
    """Train PPO on the first 2/3 of a control market, evaluate on the last 1/3 (module docstring)."""
    from core.synthetic import PLANTED_EDGE_STRENGTH
    from core.synthetic_edge import oracle_backtest
    from rl.evaluate import evaluate_policy, evaluate_rl_gates, greedy_policy
    from rl.train import load_module, train_ppo

    m, train, test = control_episodes(edge_strength, days, seed)
    t = time.perf_counter()
    cfg = control_train_config(timesteps, seed, **overrides)
    result = train_ppo([train], cfg)
    wall = time.perf_counter() - t
    ev = evaluate_policy(
        [test], greedy_policy(load_module(result.module_dir)), decision_every=cfg.decision_every
    )
    gates = evaluate_rl_gates(ev.metrics, ev.chosen, {"profit_factor": float("nan")})
    oracle = oracle_backtest(m, strength=PLANTED_EDGE_STRENGTH, start_ms=int(test.ts[0]),
                             end_ms=int(test.ts[-1]) + 60_000)  # fmt: skip
    ratio = (
        ev.metrics["sharpe"] / oracle.sharpe if oracle.sharpe and np.isfinite(oracle.sharpe) else float("nan")
    )
    name = "planted" if edge_strength > 0 else "null"
    print(f"{name}: PPO {result.env_steps:,} env steps in {wall:.0f} s ({result.ppo_env_steps_per_s:,.0f} steps/s "
          f"in train()), last episode return mean {result.episode_return_mean:.4f}; out of sample "
          f"{len(test):,} bars: trades {ev.metrics['trades']:.0f}, PF {ev.metrics['profit_factor']:.3f}, "
          f"Sharpe {ev.metrics['sharpe']:.2f}, MDD {ev.metrics['max_drawdown']:.2%}, actions {ev.chosen}; "
          f"oracle Sharpe {oracle.sharpe:.2f} ({oracle.trades} trades), ratio {ratio:.3f}; "
          f"gates {'PASS' if gates.passed else 'fail: ' + ', '.join(gates.failed)}", flush=True)  # fmt: skip
    return {"steps_per_s": result.ppo_env_steps_per_s, "sharpe": ev.metrics["sharpe"], "ratio": ratio,
            "gates_passed": gates.passed, "wall_s": wall, "trades": ev.metrics["trades"],
            "pf": ev.metrics["profit_factor"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--timesteps", type=int, default=40_000, help="PPO env steps per control run")
    ap.add_argument("--control-days", type=float, default=6.0)
    ap.add_argument("--seeds", default="3,4,5", help="control markets (and PPO seeds), comma-separated")
    args = ap.parse_args()
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}")
    t = time.perf_counter()
    ep = build_episode(args.days)
    print(f"episode: {len(ep):,} 1m bars ({args.days} days) of {ep.symbol}, features and model outputs "
          f"precomputed in {time.perf_counter() - t:.1f} s")  # fmt: skip
    env = TradingEnv(ep, risk=RiskConfig())
    actions = np.random.default_rng(1).integers(0, 4, len(ep))
    run_episode(env, actions[:2_000])  # compile / load the kernels
    rates = []
    for r in range(args.repeats):
        n, dt = run_episode(env, actions)
        rates.append(n / dt)
        assert env.sim is not None
        print(f"run {r + 1}: {n:,} steps in {dt:.2f} s = {n / dt:,.0f} steps/s; trades {len(env.sim.trades()):,}, "
              f"actions executed {dict(zip(('HOLD', 'LONG', 'SHORT', 'CLOSE'), env.action_counts.tolist(), strict=True))}, "
              f"refusals {env.refusal_counts}")  # fmt: skip
    best = max(rates)
    print(f"env steps/s (one core, random actions): best of {args.repeats} {best:,.0f}, median "
          f"{float(np.median(rates)):,.0f} (target ≥ 20,000)")  # fmt: skip
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_episode(env, actions)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    if allowed is not None:
        os.sched_setaffinity(0, allowed)  # PPO: 2 cores
    import ray

    seeds = [int(x) for x in args.seeds.split(",")]
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    try:
        planted = [control_run(3.0, args.control_days, args.timesteps, seed) for seed in seeds]
        null = [control_run(0.0, args.control_days, args.timesteps, seed) for seed in seeds]
    finally:
        ray.shutdown()

    def num(x: object) -> float | None:
        return round(float(x), 3) if np.isfinite(float(x)) else None  # type: ignore[arg-type]

    def median(key: str) -> float:
        return float(np.median([float(r[key]) for r in planted]))

    print(
        f"seeds {seeds}: eval Sharpe {[num(r['sharpe']) for r in planted]}, "
        f"ratio to the oracle {[num(r['ratio']) for r in planted]} (the JSON carries the medians)"
    )
    # exactly the keys
    print(json.dumps({"env_steps_per_s": round(best), "ppo_env_steps_per_s": round(median("steps_per_s")),
                      "eval_sharpe": num(median("sharpe")), "oracle_sharpe_ratio": num(median("ratio")),
                      "null_gates_passed": any(bool(r["gates_passed"]) for r in null)}))  # fmt: skip


if __name__ == "__main__":
    main()
