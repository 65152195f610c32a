"""Multi-node behaviour on one machine (issue #18): a head and two worker nodes (``ray.cluster_utils.Cluster``),
each a raylet of its own with distinct resources, and a shadow replay across them.

1. Placement (``raytrade.placement``): the head defines ``execution: 1`` and one ``ingest_slot``, each
   worker two ``ingest_slot`` and a ``node_wN`` marker. The execution actor must run on the head and
   the ingest actors (one per symbol group, SPREAD) on more than one node. The Serve ``Predictor`` runs
   one replica per node (``predictor_replicas``; Serve spreads replicas, best effort): the node of each
   replica is recorded (``placement.predictor_replicas``).
2. Node loss: once the replay is ``--kill-at`` minutes in, a worker node hosting ingest groups is
   removed (its raylet and workers killed). ``restart_lost_ingest`` starts those groups again on a
   node with a free slot; warming up, each writes the candles after the database's last one
   (``actors.ingest``), so the gap it was away leaves no hole. ``recovery_s``: node removed → the
   lost groups streaming again. The execution actor is then killed too (Ray restarts it on the head)
   and must recover its book (``restarts_recovered``, same open positions).
3. ``missing_candles``: every symbol-minute of the replay window absent from ``candles_1m`` (must be 0).
4. Selftest on every node (``raytrade.selftest.run_node_selftest``, what ``raytrade selftest --all-nodes``
   runs) once the three nodes are up: database, bus, MLflow and lake checked from a task pinned to each
   node. Against ``--selftest-db-url`` / ``--selftest-redis-url`` when given (the multi-node test passes
   its real PostgreSQL and Redis), else the replay's SQLite and the in-process bus.
5. A Tune trial retried after a node loss: two more worker nodes each with one ``tune_slot``; a
   checkpointing function trainable asking for a ``tune_slot`` runs under the sweep's failure config
   (``tune.trainable.MAX_TRIAL_FAILURES``); the node running it is removed mid-trial, and the trial
   must be run again on the other node from its last checkpoint and finish.
6. Labeling throughput (``pipelines.labels.label_universe``, Ray Data): the same lake labelled on a
   one-node cluster (1 CPU) and on a two-node cluster (1 CPU each), bars per second; beside them the
   same symbols labelled one after another in this process (``in_process``: no Ray, and the cores one
   symbol keeps busy). On the two-node cluster, the nodes that ran the Ray Data tasks of the measured run
   (``2_node.task_nodes``: tasks per node, from the GCS's task events). Skipped with ``--no-labeling``.
7. Ray Data on every node, cheaply (``--data-placement``, what the multi-node test runs): once the replay
   and the Tune run are over, 4 symbols x 2 days labelled on the shadow cluster's remaining nodes (no
   cluster of its own to start); ``placement.data_tasks`` counts the tasks each node ran.

Prints every figure on an ``all figures:`` line (selftest, tune, the book, ...), then ends with one JSON
line of the issue's keys exactly: nodes, placement (where each actor kind ran), missing_candles,
recovery_s, labeling.

    python bench/cluster.py [--minutes 24] [--speed 40] [--kill-at 8] [--no-labeling]
        [--label-symbols 8] [--label-days 20] [--data-placement]
        [--selftest-db-url URL] [--selftest-redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
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
#: the keys of the final JSON line (issue 18: nodes, where each actor kind ran, the gap after a node loss,
#: recovery time, labeling throughput on two nodes against one; null with --no-labeling)
RESULT_KEYS = ("nodes", "placement", "missing_candles", "recovery_s", "labeling")
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


def predictor_replica_nodes(names: dict[str, str]) -> list[str]:
    """The node of every alive replica of the Predictor deployment (the GCS's actor table: no dashboard)."""
    from ray._private.state import actors

    from serve.predictor import APP_NAME, DEPLOYMENT_NAME

    replica_class = f"ServeReplica:{APP_NAME}:{DEPLOYMENT_NAME}"
    return sorted(names.get(a["Address"]["NodeID"], "?") for a in actors().values()
                  if a["ActorClassName"] == replica_class and a["State"] == "ALIVE")  # fmt: skip


def data_task_ids() -> dict[bytes, str]:
    """Every Ray Data map task the GCS has events of, and the node it ran on (hex id; "" if not yet known)."""
    from ray._private.state import state

    return {e.task_id: e.state_updates.node_id.hex() for e in state._get_all_task_events()
            if e.task_info.func_or_class_name == "_map_task"}  # fmt: skip


def selftest_scenario(settings: Settings, names: dict[str, str]) -> dict[str, Any]:
    """``run_node_selftest`` on every alive node: how many nodes answered, and every failed check."""
    import ray

    from raytrade.selftest import run_node_selftest

    by_short = {node_id[:8]: name for node_id, name in names.items()}
    t = time.perf_counter()
    rows = run_node_selftest(settings, timeout_s=30.0)
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    return {
        "nodes": len({r.node for r in rows}), "alive": alive, "checks": len(rows),
        "components": sorted({r.component for r in rows}),
        "failed": [f"{r.component}@{by_short.get(r.node, r.node)} ({r.ip}): {r.detail}" for r in rows if not r.ok],
        "services": {"database": settings.database_url.split(":", 1)[0].split("+")[0],
                     "bus": "redis" if settings.redis_url else "in-process"},
        "seconds": round(time.perf_counter() - t, 1),
    }  # fmt: skip


def _retried_trainable(config: dict[str, Any]) -> None:
    """Count to ``steps``, one checkpoint per step; each attempt leaves a mark (node, first step)."""
    import ray
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int((Path(d) / "step").read_text())
    node = ray.get_runtime_context().get_node_id()
    Path(config["marks"], f"{time.time_ns()}-{node}-{start}").touch()
    for step in range(start, config["steps"]):
        time.sleep(config["step_s"])
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "step").write_text(str(step + 1))
            tune.report({"step": step + 1, "node": node}, checkpoint=tune.Checkpoint.from_directory(d))


def add_tune_nodes(cluster: Any, names: dict[str, str]) -> list[Any]:
    """Two more worker nodes with one ``tune_slot`` each (from the main thread: Ray's node start sets signals)."""
    spares = [cluster.add_node(**NODE, num_cpus=1, resources={"tune_slot": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    names.update({n.node_id: f"tune{k + 1}" for k, n in enumerate(spares)})
    return spares


def tune_scenario(
    cluster: Any, spares: list[Any], tmp: Path, names: dict[str, str], steps: int = 6, step_s: float = 1.0
) -> dict[str, Any]:
    """A one-trial Tune run on a worker node (``tune_slot``), that node removed at step 2: the trial must
    be retried on the other ``tune_slot`` node (the sweep's ``FailureConfig``), resume from its checkpoint
    and finish."""
    from ray import tune

    from tune.trainable import MAX_TRIAL_FAILURES

    marks = tmp / "tune-marks"
    marks.mkdir()
    tuner = tune.Tuner(
        tune.with_resources(_retried_trainable, {"cpu": 1, "tune_slot": 1}),
        param_space={"steps": steps, "step_s": step_s, "marks": str(marks)},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name="retried", storage_path=str(tmp / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_FAILURES)),
    )  # fmt: skip
    grid: list[Any] = []
    t = time.perf_counter()
    runner = threading.Thread(target=lambda: grid.append(tuner.fit()), name="tune-fit", daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while not list(marks.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    first = sorted(marks.iterdir())
    if not first:
        raise SystemExit("the Tune trial did not start")
    time.sleep(2.5 * step_s)  # a checkpoint or two written
    victim = next(n for n in spares if n.node_id == first[0].name.split("-")[1])
    t_loss = time.perf_counter()
    cluster.remove_node(victim, allow_graceful=False)
    runner.join(timeout=180)
    if runner.is_alive() or not grid:
        raise SystemExit("the Tune run did not finish after the node loss")
    result = grid[0][0]
    attempts = [m.name.split("-") for m in sorted(marks.iterdir())]
    final_node = (result.metrics or {}).get("node", "")
    return {
        "trial_retried": len(attempts) > 1 and attempts[-1][1] != victim.node_id,
        "failures": len(attempts) - 1, "max_failures": MAX_TRIAL_FAILURES,
        "attempt_nodes": [names.get(a[1], "?") for a in attempts],
        "resumed_at_step": [int(a[2]) for a in attempts], "removed_node": names[victim.node_id],
        "finished": result.error is None and (result.metrics or {}).get("step") == steps,
        "final_step": (result.metrics or {}).get("step"), "final_node": names.get(final_node, "?"),
        "errors": grid[0].num_errors, "loss_to_end_s": round(time.perf_counter() - t_loss, 1),
        "wall_s": round(time.perf_counter() - t, 1),
    }  # fmt: skip


def _capture(into: list[Any], fn: Any, *args: Any) -> None:
    try:
        into.append(fn(*args))
    except BaseException as e:  # handed to the main thread
        into.append(e)


def shadow_scenario(
    tmp: Path,
    minutes: int,
    speed: float,
    kill_at: int,
    selftest_settings: Settings | None = None,
    data_placement: bool = False,
) -> dict[str, Any]:
    import ray
    import sqlalchemy as sa

    from raytrade.placement import actor_node, restart_lost_ingest
    from raytrade.realtime import ShadowOptions, ShadowSession
    from storage.schema import candles_1m

    start, end = T0 + HISTORY * MINUTE, T0 + (HISTORY + minutes) * MINUTE
    settings = Settings(
        _env_file=None, data_dir=tmp, universe=SYMBOLS,
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100), predictor_replicas=3,
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
    try:
        out["selftest"] = selftest_scenario(selftest_settings or settings, names)
    except BaseException:
        stop_cluster(cluster)
        raise
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
        replica_nodes = predictor_replica_nodes(names)  # serve.run returned: every replica is up
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
        # the execution actor dies too (Ray restarts it, on the head): its book comes back from the database.
        # The replay is paused meanwhile (a few wall seconds, below the streams' silence limits): at 40x
        # positions would keep closing while the actor restarts, and the books would differ by those fills.
        session.venue.pause()
        time.sleep(1.0)  # what was sent before the pause reaches the actor
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
        session.venue.resume()
        execution_after = names.get(actor_node(session.execution), "?")
        # the Tune scenario on nodes of its own while the rest of the replay runs
        spares = add_tune_nodes(cluster, names)
        tuned: list[dict[str, Any] | BaseException] = []
        tuning = threading.Thread(
            target=_capture, args=(tuned, tune_scenario, cluster, spares, tmp, names), daemon=True
        )
        tuning.start()
        if not session.wait(timeout_s=minutes * 60 / speed * 4 + 120):
            raise SystemExit("the replay did not finish in time")
        report = session.stop()
        tuning.join(timeout=300)
        if not tuned or isinstance(tuned[0], BaseException):
            raise SystemExit(f"the Tune scenario failed: {tuned[0] if tuned else 'did not finish'}")
        out["tune"] = tuned[0]
        data_tasks = None
        if data_placement:  # Ray Data on the nodes still up (the ingest actors ask for no CPU)
            from bench.realtime import universe

            data_names = universe(4)
            lake_root = tmp / "data-lake"
            write_synthetic_market(generate_market(data_names, T0, 2 * 1440, seed=9), Lake(lake_root))
            data_tasks = label_task_nodes(lake_root, data_names, names)
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
                      "predictor_replicas": replica_nodes, "data_tasks": data_tasks},
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
    meta = {"symbols": symbols, "days": days, "cpus_per_node": 1, "machine_cores": os.cpu_count()}
    # the same work in this process, one symbol after another, without Ray: the single-core baseline, and
    # how many cores one symbol's task keeps busy (CPU seconds / wall seconds; parquet I/O is threaded)
    from pipelines.labels import label_symbol
    from pipelines.raydata import prepare_symbol_worker

    prepare_symbol_worker()
    spec_json = LabelSpec().model_dump_json()
    label_symbol(str(lake_root), names[0], spec_json)  # numba kernels compiled
    t, cpu = time.perf_counter(), time.process_time()
    bars = sum(label_symbol(str(lake_root), s, spec_json)["bars"] for s in names)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    out: dict[str, Any] = {"in_process": {"bars_per_s": round(bars / wall), "seconds": round(wall, 2),
                                          "cores_busy": round(cpu / wall, 2)}}  # fmt: skip
    cluster, _ = start_cluster(0, {}, {})
    try:
        label_universe(lake_root, names[:2], LabelSpec())  # workers warm (numba kernels loaded)
        report = label_universe(lake_root, names, LabelSpec())
    finally:
        stop_cluster(cluster)
    out["1_node"] = {
        "bars_per_s": round(report.total_bars / report.seconds),
        "seconds": round(report.seconds, 2),
    }
    out["2_node"] = two_node_labeling(lake_root, names, warm=True)
    out["speedup"] = round(out["2_node"]["bars_per_s"] / out["1_node"]["bars_per_s"], 2)
    return out | meta


def two_node_labeling(lake_root: Path, names: list[str], warm: bool) -> dict[str, Any]:
    """``label_universe`` on a head and one worker node (1 CPU each): throughput, and how many of the
    measured run's Ray Data tasks each node ran (``warm``: a two-symbol run first, not counted)."""
    from pipelines.labels import label_universe

    cluster, workers = start_cluster(1, {}, {})
    try:
        if warm:
            label_universe(lake_root, names[:2], LabelSpec())  # workers warm (numba kernels loaded)
        return label_task_nodes(
            lake_root, names, {cluster.head_node.node_id: "head", workers[0].node_id: "worker1"}
        )
    finally:
        stop_cluster(cluster)


def label_task_nodes(lake_root: Path, names: list[str], node_names: dict[str, str]) -> dict[str, Any]:
    """``label_universe`` on the connected cluster: throughput, and how many of its Ray Data tasks each
    node ran (named by ``node_names``)."""
    from pipelines.labels import label_universe

    before = set(data_task_ids())
    report = label_universe(lake_root, names, LabelSpec())
    deadline = time.monotonic() + 10  # task events reach the GCS once a second
    while True:
        ran = {t: n for t, n in data_task_ids().items() if t not in before}
        if (len(ran) >= len(names) and all(ran.values())) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    task_nodes: dict[str, int] = {}
    for node in ran.values():
        name = node_names.get(node, "?")
        task_nodes[name] = task_nodes.get(name, 0) + 1
    return {"bars_per_s": round(report.total_bars / report.seconds), "seconds": round(report.seconds, 2),
            "tasks": len(ran), "task_nodes": dict(sorted(task_nodes.items()))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=int, default=24, help="minutes replayed")
    ap.add_argument("--speed", type=float, default=40.0, help="venue ms per wall ms")
    ap.add_argument("--kill-at", type=int, default=8, help="replay minute at which a worker node is removed")
    ap.add_argument("--no-labeling", action="store_true", help="skip the labeling throughput comparison")
    ap.add_argument("--label-symbols", type=int, default=8)
    ap.add_argument("--label-days", type=int, default=20)
    ap.add_argument("--data-placement", action="store_true",
                    help="after the replay, label 4 symbols x 2 days on the shadow cluster: where its tasks ran")  # fmt: skip
    ap.add_argument("--selftest-db-url", help="database the per-node selftest checks (migrated here first)")
    ap.add_argument("--selftest-redis-url", help="Redis the per-node selftest checks")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raytrade-bench-cluster-") as tmp:
        selftest_settings = None
        if args.selftest_db_url or args.selftest_redis_url:
            selftest_settings = Settings(_env_file=None, data_dir=Path(tmp) / "selftest",
                                         db_url=args.selftest_db_url, redis_url=args.selftest_redis_url)  # fmt: skip
            engine = db.make_engine(selftest_settings.database_url)
            db.upgrade(engine)
            engine.dispose()
        result = shadow_scenario(
            Path(tmp), args.minutes, args.speed, args.kill_at, selftest_settings, args.data_placement
        )
        if not args.no_labeling:
            result["labeling"] = labeling(Path(tmp), args.label_symbols, args.label_days)
    result["wall_s"] = round(time.perf_counter() - t, 1)
    print("all figures: " + json.dumps(result))
    print(json.dumps({k: result.get(k) for k in RESULT_KEYS}))  # the keys, exactly


if __name__ == "__main__":
    main()
