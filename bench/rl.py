"""Benchmark of the RL environment (issue #17): environment steps per second on one core.

A realistic episode: ``--days`` (30) of 1m bars of a synthetic BTCUSDT market (``core.synthetic``),
its real features (``core.features``), the outputs of a small LightGBM multi-target model on them
(5 trees per output fitted here on the episode's own feature rows with a random target: the values
do not change what a step costs), the panel's marks, funding and 15m ATR, and the risk preset
(``RiskConfig()``). ``rl.env.TradingEnv`` then runs the whole episode ``--repeats`` times with
uniformly random actions drawn beforehand (random play trades often and hits the guards, the daily
loss limit above all: the slow paths of a step are exercised), pinned to one CPU. Printed: the build
time, steps/s of each run, trades and refusals; with ``--profile`` the top functions of one run
under cProfile. Target: ≥ 20,000 steps/s. Last line JSON: ``{"env_steps_per_s": ...}`` (the best run).

    python bench/rl.py [--days 30] [--repeats 3] [--cpu 0] [--profile]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
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
    print(json.dumps({"env_steps_per_s": round(best)}))


if __name__ == "__main__":
    main()
