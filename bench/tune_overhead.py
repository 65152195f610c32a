"""Overhead of Ray Tune (with MLflow logging) over a plain loop for the same walk-forward evaluations.

The same configurations × folds are evaluated (a) by ``evaluate_config`` in a plain loop and (b) by
``run_sweep`` (FIFO, one trial at a time with one CPU and one LightGBM thread, as the loop, so the
difference is Tune's own cost), with each trial logging a nested MLflow run to a temporary SQLite store.
Fixed start-up (``ray.init``, ``ray.put`` of the data, Tuner construction up to the first trial's start)
is measured and reported separately; ``overhead = tune_s / plain_s − 1`` excludes it. A second Tune run
with two trials at once shows what the sweep gains on this machine (``tune_parallel_s``, start-up
excluded the same way). The last line printed is JSON.

    python bench/tune_overhead.py [--days 10] [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from core.config import LabelSpec
from core.synthetic import generate_market
from pipelines.features import features_for_group
from pipelines.labels import label_symbol
from pipelines.market import write_synthetic_market
from storage.lake import Lake
from tune.dataset import load_training_set
from tune.splits import WalkForwardConfig, walk_forward_folds
from tune.trainable import EvalConfig, evaluate_config, run_sweep

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START = 1_736_121_600_000
NUM_LEAVES = (15, 31)
LEARNING_RATES = (0.05, 0.1)


def build_lake(root: Path, days: int, spec: LabelSpec) -> None:
    write_synthetic_market(generate_market(SYMBOLS, START, days * 1440, seed=11), Lake(root))
    features_for_group(str(root), SYMBOLS)
    for symbol in SYMBOLS:
        label_symbol(str(root), symbol, spec.model_dump_json())


def timed_sweep(
    ref, folds, space, n_configs, work: Path, eval_cfg, concurrent: int, tag: str
) -> tuple[float, float]:
    """Return (start-up s, run s) of one sweep: start-up ends when the first trial starts."""
    started = time.time()
    _, table = run_sweep(
        ref, folds, space, num_samples=1, scheduler="fifo", storage_path=work / f"tune-{tag}",
        mlflow_tracking_uri=f"sqlite:///{work / f'mlflow-{tag}.db'}", experiment=f"bench-{tag}",
        eval_config=eval_cfg, max_concurrent_trials=concurrent,
    )  # fmt: skip
    ended = time.time()
    if len(table) != n_configs or (table["folds_done"] != len(folds)).any():
        raise RuntimeError(f"sweep {tag} did not finish every trial:\n{table}")
    first_trial = float(table["trial_started_unix_s"].min())
    return first_trial - started, ended - first_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    spec = LabelSpec(h_bars=60)
    eval_cfg = EvalConfig(num_boost_round=args.rounds, num_threads=1)
    wf = WalkForwardConfig(
        length_unit="bars",
        train_length=4 * 1440,
        val_length=1440,
        test_length=1440,
        horizon_bars=60,
        max_folds=3,
    )
    configs = [
        {"num_leaves": leaves, "learning_rate": rate, "min_data_in_leaf": 100}
        for leaves in NUM_LEAVES
        for rate in LEARNING_RATES
    ]
    with tempfile.TemporaryDirectory(prefix="tune-overhead-") as tmp:
        work = Path(tmp)
        build_lake(work / "lake", args.days, spec)
        data = load_training_set(work / "lake", SYMBOLS, spec)
        folds = walk_forward_folds(data.ts_ms, data.exit_ts_ms, wf)
        print(
            f"data: {data.X.shape[0]} rows × {data.X.shape[1]}; {len(folds)} folds × {len(configs)} configs"
        )

        evaluate_config(
            configs[0], data, folds[:1], eval_cfg.model_copy(update={"num_boost_round": 2})
        )  # warm-up
        t0 = time.perf_counter()
        plain_scores = [evaluate_config(c, data, folds, eval_cfg)["score"] for c in configs]
        plain_s = time.perf_counter() - t0
        print(f"plain loop: {plain_s:.2f} s, scores {plain_scores}")

        import ray
        from ray import tune

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ref = ray.put(data)
        ray_init_s = time.perf_counter() - t0
        space = {
            "num_leaves": tune.grid_search(list(NUM_LEAVES)),
            "learning_rate": tune.grid_search(list(LEARNING_RATES)),
            "min_data_in_leaf": 100,
        }
        startup_s, tune_s = timed_sweep(ref, folds, space, len(configs), work, eval_cfg, 1, "serial")
        print(f"tune (1 trial at a time): start-up {startup_s:.2f} s, run {tune_s:.2f} s")
        startup_par_s, tune_par_s = timed_sweep(
            ref, folds, space, len(configs), work, eval_cfg, 2, "parallel"
        )
        print(f"tune (2 trials at a time): start-up {startup_par_s:.2f} s, run {tune_par_s:.2f} s")
        ray.shutdown()

    print(
        json.dumps(
            {
                "plain_s": round(plain_s, 3),
                "tune_s": round(tune_s, 3),
                "overhead": round(tune_s / plain_s - 1.0, 4),
                "ray_init_s": round(ray_init_s, 3),
                "tune_startup_s": round(startup_s, 3),
                "tune_parallel_s": round(tune_par_s, 3),
                "tune_parallel_startup_s": round(startup_par_s, 3),
                "folds": len(folds),
                "configs": len(configs),
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
