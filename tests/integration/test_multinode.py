"""Multi-node behaviour on one machine (issue #18): bench/cluster.py's scenario in a process of its own
(its own 3-node ``ray.cluster_utils.Cluster``; the session's local Ray is not touched): placement of
the execution actor on the head and of the ingest groups over several nodes, a worker node removed
mid-replay, its groups restarted elsewhere with 0 missing candles, the execution actor's book recovered;
the per-node selftest (``raytrade selftest --all-nodes``) passing on all three nodes against the session's
real PostgreSQL and Redis; a Tune trial whose node is removed retried on another node and finished; the
Serve Predictor's replicas (one per node) and a small Ray Data labeling run on more than one node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_a_lost_worker_node_loses_no_candles_and_placement_holds(fresh_pg_url, redis_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAYTRADE_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/cluster.py"), "--no-labeling", "--data-placement", "--minutes", "24", "--speed", "40",
         "--selftest-db-url", fresh_pg_url, "--selftest-redis-url", redis_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    *_, details, last = proc.stdout.strip().splitlines()
    assert details.startswith("all figures: "), details
    result = json.loads(details.removeprefix("all figures: "))
    keys = json.loads(last)  # the keys, exactly, agreeing with the figures
    assert keys == {
        k: result.get(k) for k in ("nodes", "placement", "missing_candles", "recovery_s", "labeling")
    }
    where = result["placement"]
    assert result["nodes"] == 3
    assert where["execution"] == "head" and where["execution_after_restart"] == "head"
    assert len(set(where["ingest"])) >= 2, where  # spread over nodes
    # the Predictor's 3 replicas (predictor_replicas=3): one on each node; the replay still produced signals
    assert sorted(where["predictor_replicas"]) == ["head", "worker1", "worker2"], where
    assert result["signals"] > 0 and result["closes"] > 0
    # Ray Data's labeling tasks (4 symbols) ran on more than one node
    data = where["data_tasks"]
    assert data["tasks"] == 4 and len(data["task_nodes"]) >= 2 and "?" not in data["task_nodes"], data
    removed = result["removed_node"]
    assert removed in where["ingest"] and removed not in where["ingest_after_loss"]
    assert result["restarted_groups"]
    assert result["missing_candles"] == 0, result["missing_examples"]
    assert result["candle_minutes_expected"] == 9 * 24
    book = result["execution_book"]
    assert book["restarts_recovered"] >= 1 and book["open_after"] == book["open_before"]
    # every node reached PostgreSQL, Redis and MLflow and wrote the lake
    selftest = result["selftest"]
    assert selftest["nodes"] == 3 and selftest["checks"] == 12 and selftest["failed"] == [], selftest
    assert selftest["services"] == {"database": "postgresql", "bus": "redis"}
    # the trial whose node was removed ran again on the other node, from its checkpoint, and finished
    trial = result["tune"]
    assert trial["trial_retried"] and trial["failures"] == 1 and trial["finished"], trial
    assert (
        trial["attempt_nodes"][0] == trial["removed_node"] != trial["final_node"] == trial["attempt_nodes"][1]
    )
    assert trial["resumed_at_step"][1] >= 1 and trial["errors"] == 0
