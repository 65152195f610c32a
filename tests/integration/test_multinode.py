"""Multi-node behaviour on one machine (issue #18): bench/cluster.py's scenario in a process of its own
(its own 3-node ``ray.cluster_utils.Cluster``; the session's local Ray is not touched): placement of
the execution actor on the head and of the ingest groups over several nodes, a worker node removed
mid-replay, its groups restarted elsewhere with 0 missing candles, the execution actor's book recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_a_lost_worker_node_loses_no_candles_and_placement_holds():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAYTRADE_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/cluster.py"), "--no-labeling", "--minutes", "24", "--speed", "40"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    where = result["placement"]
    assert result["nodes"] == 3
    assert where["execution"] == "head" and where["execution_after_restart"] == "head"
    assert len(set(where["ingest"])) >= 2, where  # spread over nodes
    removed = result["removed_node"]
    assert removed in where["ingest"] and removed not in where["ingest_after_loss"]
    assert result["restarted_groups"]
    assert result["missing_candles"] == 0, result["missing_examples"]
    assert result["candle_minutes_expected"] == 9 * 24
    book = result["execution_book"]
    assert book["restarts_recovered"] >= 1 and book["open_after"] == book["open_before"]
