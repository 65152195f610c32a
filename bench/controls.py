"""Positive and negative controls: does the research flow promote a planted edge and refuse noise?

For each seed s in 1..K, two synthetic markets (``tune.controls.run_control``): one with the planted
lead-lag edge (``--strength``, default ``core.synthetic.PLANTED_EDGE_STRENGTH``, the demo's) and the
null market (no edge) of the same seed. On each the research flow runs as ``raytrade research`` does: features and
labels on Ray Data, rolling walk-forward folds (default 30 days: 3 folds of train 12 / validation 3 /
test 5 days, the three test windows tiling the last 15 days), a Ray Tune sweep of ``--configs``
configurations (``--configs``, default 4) of ``--rounds`` (60) rounds, the best refitted per fold and backtested on the test windows, the windows pooled into
one out-of-sample backtest, the baselines on the same folds, the promotion gates with no override.
The oracle of the planted edge (``core.synthetic_edge``) is run on the same pooled out-of-sample span:
recovery = the pipeline's pooled out-of-sample Sharpe ÷ the oracle's on the same minutes.

Prints one row per run, the size and per-run details (``size:``, ``runs:`` lines), then one JSON line
with exactly ``edge_seeds``, ``edge_promotions`` (every gate passed, no override), ``null_seeds``,
``null_promotions``, ``edge_recovery_median``, ``oracle_sharpe`` (median over the planted seeds) and
``wall_s``.

    python bench/controls.py [--seeds 5] [--days 30] [--train 12 --val 3 --test 5] [--configs 4]
                             [--rounds 60] [--strength 3.0] [--only planted|null] [--seed-list 5,3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.synthetic import PLANTED_EDGE_STRENGTH
from tune.controls import ControlResult, ControlSize, run_control


def _fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if not math.isfinite(x) else format(x, spec)


def _row(r: ControlResult) -> str:
    verdict = "PROMOTED" if r.promoted else "refused"
    failed = ", ".join(r.gates.failed) or "-"
    return (
        f"seed {r.seed:>2} {r.market:<7} {verdict:<8} failed: {failed:<60} OOS trades {r.oos_trades:>4}  "
        f"OOS Sharpe {_fmt(r.oos_sharpe):>7}  PF {_fmt(r.oos_profit_factor):>5}  "
        f"oracle Sharpe {_fmt(r.oracle_sharpe):>7} ({r.oracle_trades} trades)  recovery {_fmt(r.recovery):>5}  "
        f"{r.wall_s:.0f} s"
    )


def _detail(r: ControlResult) -> dict[str, object]:
    def num(x: float) -> float | None:
        return round(x, 4) if math.isfinite(x) else None

    return {
        "seed": r.seed, "market": r.market, "promoted": r.promoted, "failed": r.gates.failed,
        "oos_trades": r.oos_trades, "oos_sharpe": num(r.oos_sharpe), "oos_profit_factor": num(r.oos_profit_factor),
        "oracle_sharpe": num(r.oracle_sharpe), "recovery": num(r.recovery), "wall_s": round(r.wall_s, 1),
    }  # fmt: skip


def main() -> None:
    default = ControlSize()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="K: seeds 1..K, each planted and null")
    ap.add_argument("--days", type=float, default=default.days)
    ap.add_argument("--configs", type=int, default=default.configs, help="sweep configurations")
    ap.add_argument("--rounds", type=int, default=default.rounds, help="LightGBM boosting rounds")
    ap.add_argument("--folds", type=int, default=default.folds)
    ap.add_argument("--train", type=float, default=default.train_days, help="train window, days")
    ap.add_argument("--val", type=float, default=default.val_days, help="validation window, days")
    ap.add_argument("--test", type=float, default=default.test_days, help="test window, days")
    ap.add_argument("--strength", type=float, default=PLANTED_EDGE_STRENGTH)
    ap.add_argument("--cpus", type=int, default=2, help="local Ray CPUs")
    ap.add_argument("--seed-list", default=None, help="comma-separated seeds instead of 1..K")
    ap.add_argument("--only", choices=("planted", "null"), default=None, help="run one kind only")
    args = ap.parse_args()
    size = ControlSize(
        days=args.days, folds=args.folds, configs=args.configs, rounds=args.rounds, train_days=args.train,
        val_days=args.val, test_days=args.test,
    )  # fmt: skip

    import ray

    from pipelines.raydata import configure_data_context

    ray.init(num_cpus=args.cpus, object_store_memory=256 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")  # fmt: skip
    configure_data_context(progress=False)
    kinds = [("planted", args.strength), ("null", 0.0)]
    kinds = [k for k in kinds if args.only in (None, k[0])]
    print(f"{len(size.symbols)} symbols ({','.join(size.symbols)}) x {size.days:g} days, {size.sizing().describe()}, "
          f"{size.configs} configurations x {size.rounds} rounds; planted strength "
          f"{args.strength:g}; seeds {args.seed_list or f'1..{args.seeds}'}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(1, args.seeds + 1))
    results: list[ControlResult] = []
    with tempfile.TemporaryDirectory(prefix="raytrade-controls-") as tmp:
        for seed in seeds:
            for kind, strength in kinds:
                r = run_control(Path(tmp) / f"{kind}-{seed}", seed=seed, edge_strength=strength, size=size)
                results.append(r)
                print(_row(r), flush=True)
                if not r.gates.passed:
                    print(f"    gates: {r.gates.failure_text()}", flush=True)
    ray.shutdown()
    planted = [r for r in results if r.market == "planted"]
    null = [r for r in results if r.market == "null"]
    recoveries = [r.recovery for r in planted if math.isfinite(r.recovery)]
    oracles = [r.oracle_sharpe for r in planted if math.isfinite(r.oracle_sharpe)]
    out = {
        "edge_seeds": len(planted),
        "edge_promotions": sum(r.promoted for r in planted),
        "null_seeds": len(null),
        "null_promotions": sum(r.promoted for r in null),
        "edge_recovery_median": round(statistics.median(recoveries), 4) if recoveries else None,
        "oracle_sharpe": round(statistics.median(oracles), 3) if oracles else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    size_line = {"days": size.days, "folds": size.folds, "configs": size.configs, "rounds": size.rounds,
                 "symbols": list(size.symbols), "strength": args.strength}  # fmt: skip
    print(f"size: {json.dumps(size_line)}")
    print(f"runs: {json.dumps([_detail(r) for r in results])}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
