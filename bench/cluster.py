"""Multi-node behaviour on one machine (issue #18): a head and two worker nodes (``ray.cluster_utils.Cluster``),
each a raylet of its own with distinct resources, and a shadow replay across them.

1. Placement (``raytrade.placement``): the head defines ``execution: 1`` and one ``ingest_slot``, each
   worker two ``ingest_slot`` and a ``node_wN`` marker. The execution actor must run on the head and
   the ingest actors (one per symbol group, SPREAD) on more than one node.
2. Node loss: once the replay is ``--kill-at`` minutes in, a worker node hosting ingest groups is
   removed (its raylet and workers killed). ``restart_lost_ingest`` starts those groups again on a
   node with a free slot; warming up, each writes the candles after the database's last one
   (``actors.ingest``), so the gap it was away leaves no hole. ``recovery_s``: node removed → the
   lost groups streaming again. The execution actor is then killed too (Ray restarts it on the head)
   and must recover its book (``restarts_recovered``, same open positions).
3. ``missing_candles``: every symbol-minute of the replay window absent from ``candles_1m`` (must be 0).
4. Labeling throughput (``pipelines.labels.label_universe``, Ray Data): the same lake labelled on a
   one-node cluster (1 CPU) and on a two-node cluster (1 CPU each), bars per second. Skipped with
   ``--no-labeling`` (the multi-node test).

Ends with one JSON line: nodes, where each actor kind ran, missing_candles, recovery_s, labeling.

    python bench/cluster.py [--minutes 24] [--speed 40] [--kill-at 8] [--no-labeling]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.realtime import MODEL, bench_model
from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.synthetic import generate_market
from pipelines.market import write_synthetic_market
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from storage.registry import ModelRegistry

SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "AVAXUSDT",
    "LINKUSDT",
)
T0 = 1_736_121_600_000  # 2025-01-06 00:00 UTC
MINUTE = 60_000
HISTORY = 400
NODE = {"object_store_memory": 100 * 1024 * 1024, "include_dashboard": False}


def start_cluster(workers: int, head_resources: dict[str, float], worker_resources: dict[str, float]) -> Any:
    """A head and ``workers`` worker nodes on this machine, 1 CPU each; the driver connected."""
    import ray
    from ray.cluster_utils import Cluster

    # a lost node is declared dead after ~3 s of missed health checks (Ray's default: ~15-30 s)
    os.environ.setdefault("RAY_health_check_period_ms", "1000")
    os.environ.setdefault("RAY_health_check_timeout_ms", "1000")
    os.environ.setdefault("RAY_health_check_failure_threshold", "3")

    cluster = Cluster(
        initialize_head=True, head_node_args={**NODE, "num_cpus": 1, "resources": head_resources}
    )
    nodes = [
        cluster.add_node(**NODE, num_cpus=1, resources={**worker_resources, f"node_w{k + 1}": 1})
        for k in range(workers)
    ]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="raytrade", log_to_driver=False, configure_logging=False)
    from pipelines.raydata import configure_data_context

    configure_data_context(progress=False)
    return cluster, nodes


def stop_cluster(cluster: Any) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


def shadow_scenario(tmp: Path, minutes: int, speed: float, kill_at: int) -> dict[str, Any]:
    import ray
    import sqlalchemy as sa

    from raytrade.placement import actor_node, restart_lost_ingest
    from raytrade.realtime import ShadowOptions, ShadowSession
    from storage.schema import candles_1m

    start, end = T0 + HISTORY * MINUTE, T0 + (HISTORY + minutes) * MINUTE
    settings = Settings(
        _env_file=None, data_dir=tmp, universe=SYMBOLS,
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),
    )  # fmt: skip
    write_synthetic_market(
        generate_market(list(SYMBOLS), T0, HISTORY + minutes + 5, seed=5), Lake(settings.lake_root)
    )
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    registry = ModelRegistry(
        settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
    )
    info = registry.log_model(bench_model(), registered_name=MODEL, experiment="bench",
                              train_start_ms=T0 - 86_400_000, train_end_ms=T0)  # fmt: skip
    registry.set_production(MODEL, info.version)

    cluster, workers = start_cluster(2, {"execution": 1, "ingest_slot": 1}, {"ingest_slot": 2})
    head_id = cluster.head_node.node_id
    names = {head_id: "head", **{w.node_id: f"worker{k + 1}" for k, w in enumerate(workers)}}
    out: dict[str, Any] = {"nodes": len(ray.nodes())}
    options = ShadowOptions(symbols=SYMBOLS, model_name=MODEL, group_size=3, start_ms=start, end_ms=end,
                            speed=speed, mark_ticks_per_minute=6, predictor_poll_s=0.0,
                            session_id="cluster-bench")  # fmt: skip
    session = ShadowSession(settings, options)
    try:
        t = time.perf_counter()
        session.start()
        out["up_s"] = round(time.perf_counter() - t, 1)
        ingest_before = [names.get(actor_node(a), "?") for a in session.ingest]
        execution_node = names.get(actor_node(session.execution), "?")
        # the node to lose: a worker hosting ingest groups
        victim_name = next(n for n in ingest_before if n.startswith("worker"))
        victim = next(w for w in workers if names[w.node_id] == victim_name)
        if not session.venue.wait_until(start + kill_at * MINUTE, 120.0):
            raise SystemExit("the replay did not reach the node loss")
        t_loss = time.perf_counter()
        cluster.remove_node(victim, allow_graceful=False)
        restarted: list[int] = []
        while not restarted and time.perf_counter() - t_loss < 60:
            restarted = restart_lost_ingest(session, timeout_s=2.0)
        recovery_s = time.perf_counter() - t_loss
        ingest_after = [names.get(actor_node(a), "?") for a in session.ingest]
        # the execution actor dies too (Ray restarts it, on the head): its book comes back from the database
        before = ray.get(session.execution.summary.remote())
        pid = ray.get(session.execution.pid.remote())
        ray.kill(session.execution, no_restart=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                if ray.get(session.execution.pid.remote(), timeout=10) == pid:  # the old process, still going
                    time.sleep(0.2)
                    continue
                after = ray.get(session.execution.summary.remote(), timeout=10)
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        execution_after = names.get(actor_node(session.execution), "?")
        if not session.wait(timeout_s=minutes * 60 / speed * 4 + 120):
            raise SystemExit("the replay did not finish in time")
        report = session.stop()
    finally:
        session.shutdown()
        stop_cluster(cluster)
    with engine.connect() as c:
        rows = c.execute(sa.select(candles_1m.c.symbol, candles_1m.c.ts).where(candles_1m.c.ts >= start,
                                                                             candles_1m.c.ts < end)).all()  # fmt: skip
    engine.dispose()
    have = {(s, int(ts)) for s, ts in rows}
    expected = [(s, int(m)) for s in SYMBOLS for m in np.arange(start, end, MINUTE)]
    missing = [e for e in expected if e not in have]
    return out | {
        "placement": {"execution": execution_node, "ingest": ingest_before,
                      "ingest_after_loss": ingest_after, "execution_after_restart": execution_after,
                      "serve_tune_data": "any node (CPU only)"},
        "removed_node": victim_name, "restarted_groups": restarted, "recovery_s": round(recovery_s, 2),
        "missing_candles": len(missing), "missing_examples": missing[:5],
        "candle_minutes_expected": len(expected),
        "execution_book": {"open_before": before["open_positions"], "open_after": after["open_positions"],
                           "restarts_recovered": after["restarts_recovered"]},
        "closes": report["closes"], "signals": report["signals"],
    }  # fmt: skip


def labeling(tmp: Path, symbols: int, days: int) -> dict[str, Any]:
    from bench.realtime import universe
    from pipelines.labels import label_universe

    names = universe(symbols)
    lake_root = tmp / "label-lake"
    write_synthetic_market(generate_market(names, T0, days * 1440, seed=9), Lake(lake_root))
    out = {}
    for nodes in (1, 2):
        cluster, _ = start_cluster(nodes - 1, {}, {})
        try:
            label_universe(lake_root, names[:2], LabelSpec())  # workers warm (numba kernels loaded)
            report = label_universe(lake_root, names, LabelSpec())
        finally:
            stop_cluster(cluster)
        out[f"{nodes}_node"] = {
            "bars_per_s": round(report.total_bars / report.seconds),
            "seconds": round(report.seconds, 2),
        }
    out["speedup"] = round(out["2_node"]["bars_per_s"] / out["1_node"]["bars_per_s"], 2)
    return out | {"symbols": symbols, "days": days, "cpus_per_node": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=int, default=24, help="minutes replayed")
    ap.add_argument("--speed", type=float, default=40.0, help="venue ms per wall ms")
    ap.add_argument("--kill-at", type=int, default=8, help="replay minute at which a worker node is removed")
    ap.add_argument("--no-labeling", action="store_true", help="skip the labeling throughput comparison")
    ap.add_argument("--label-symbols", type=int, default=8)
    ap.add_argument("--label-days", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raytrade-bench-cluster-") as tmp:
        result = shadow_scenario(Path(tmp), args.minutes, args.speed, args.kill_at)
        if not args.no_labeling:
            result["labeling"] = labeling(Path(tmp), args.label_symbols, args.label_days)
    result["wall_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
