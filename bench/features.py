"""Benchmark of feature schema v1: batch (whole histories) and incremental (one call per 1m close).

Synthetic market (core.synthetic): ``--symbols`` symbols incl. BTCUSDT x ``--days`` days of 1m bars
with taker, mark, premium and funding data. (a) batch: all 132 merged features of every bar of
every symbol, after a warm-up call (compilation excluded), on 1 core and on all numba threads.
(b) incremental: the same bars fed bar by bar through ``FeatureEngine.update`` (one compiled call
per 1m close for the whole group), end to end from Python, into a pre-touched output buffer. Checks that (a) and (b) agree, prints
the figures, and ends with one JSON line.

    python bench/features.py [--symbols 30] [--days 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.features import FeatureEngine, SymbolInputs, build_inputs, compute_features
from core.features_kernel import N_MERGED
from core.synthetic import generate_market
from core.time import parse_utc

UNIVERSE = (
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT", "DOTUSDT",
    "LINKUSDT", "LTCUSDT", "BCHUSDT", "SUIUSDT", "AAVEUSDT", "1000PEPEUSDT", "FILUSDT", "AXSUSDT", "ENAUSDT",
    "ZKUSDT", "XAUUSDT", "XAGUSDT", "HYPEUSDT", "ZECUSDT", "BNXUSDT", "ALPHAUSDT", "ZORAUSDT", "TRUMPUSDT",
    "PUMPUSDT", "NEARUSDT", "PAXGUSDT",
)  # fmt: skip


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=30)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of the batch; the best counts")
    args = ap.parse_args()
    symbols = UNIVERSE[: args.symbols]

    t0 = time.perf_counter()
    market = generate_market(symbols, parse_utc("2025-01-06"), args.days * 1440, seed=args.seed)
    inputs = {s: build_inputs(market.candles_1m[s], market.mark_1m[s], market.premium_1m[s], market.funding[s])
              for s in symbols}  # fmt: skip
    rows = sum(len(x) for x in inputs.values())
    print(
        f"data: {len(symbols)} symbols x {args.days} days = {rows:,} 1m bars ({time.perf_counter() - t0:.1f} s to generate)"
    )
    print(
        f"machine: {os.cpu_count()} cpus, numba threads {numba.get_num_threads()}, layer {numba.config.THREADING_LAYER}"
    )

    # warm-up: compile (or load the cache) on a small slice
    small = {s: SymbolInputs(x.ts_ms[:2000], x.values[:2000]) for s, x in inputs.items()}
    t0 = time.perf_counter()
    compute_features(small)
    compute_features(small, parallel=True)
    print(f"warm-up (compile or cache load): {time.perf_counter() - t0:.1f} s")

    serial_s, batch = _best(lambda: compute_features(inputs), args.repeat)
    del batch
    parallel_s, batch = _best(lambda: compute_features(inputs, parallel=True), args.repeat)
    serial_rate, parallel_rate = rows / serial_s, rows / parallel_s
    print(
        f"(a) batch, 1 core:  {serial_s:.3f} s, {serial_rate / 1e6:.2f} M merged rows/s ({N_MERGED} features each)"
    )
    print(
        f"(a) batch, {numba.get_num_threads()} threads: {parallel_s:.3f} s, {parallel_rate / 1e6:.2f} M merged rows/s"
    )

    engine = FeatureEngine(symbols)
    order = engine.symbols
    all_ts = np.unique(np.concatenate([inputs[s].ts_ms for s in order]))
    x = np.zeros((len(all_ts), len(order), inputs[order[0]].values.shape[1]))
    closed = np.zeros((len(all_ts), len(order)), bool)
    for k, s in enumerate(order):
        pos = np.searchsorted(all_ts, inputs[s].ts_ms)
        x[pos, k] = inputs[s].values
        closed[pos, k] = True
    # written once before timing, as an actor's reused buffers are: otherwise the first-touch page
    # faults of this 1.4 GB array (not the features) would dominate the figure
    online = np.full((len(all_ts), len(order), N_MERGED), np.nan)
    update = engine.update
    t0 = time.perf_counter()
    for i in range(len(all_ts)):
        update(int(all_ts[i]), x[i], closed[i], online[i])
    online_s = time.perf_counter() - t0
    us_per_symbol_bar = online_s / rows * 1e6
    print(f"(b) incremental: {len(all_ts):,} calls x {len(order)} symbols in {online_s:.2f} s: "
          f"{online_s / len(all_ts) * 1e6:.1f} us per call, {us_per_symbol_bar:.3f} us per symbol-bar")  # fmt: skip

    worst = 0.0
    for k, s in enumerate(order):
        a, b = online[:, k], batch[s].values
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            raise SystemExit(f"{s}: batch and incremental NaN differ")
        ok = ~np.isnan(a)
        worst = max(
            worst, float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300), initial=0.0))
        )
    if worst > 1e-9:
        raise SystemExit(f"batch and incremental differ: max relative {worst:g}")
    print(
        f"agreement: batch == incremental on {rows:,} rows x {N_MERGED} features, max relative difference {worst:g}"
    )
    print(
        json.dumps(
            {
                "batch_bars_per_s": round(parallel_rate),
                "online_us_per_symbol_bar": round(us_per_symbol_bar, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
