"""Local means loopback: a running ``raytrade run`` shadow session (local Ray, Serve Predictor, ingest
and execution actors, replay venue) listens on 127.0.0.1 only, and none of its processes outlives it
— killed with SIGKILL (the reaper ends what Ray leaves) or stopped with SIGTERM (a clean stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from model_fixtures import install_production_model

from core.synthetic import generate_market
from pipelines.market import write_synthetic_market
from raytrade.proctree import alive, command_name, identities, is_loopback, listening_sockets, process_tree
from raytrade.settings import Settings
from storage.lake import Lake

pytestmark = [pytest.mark.slow]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
T0 = 1_736_121_600_000  # 2025-01-06 00:00 UTC
MINUTE = 60_000
HISTORY = 600
REPLAY = 600  # long enough to still be running when the test looks at it
START = T0 + HISTORY * MINUTE


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("loopback")
    settings = Settings(_env_file=None, data_dir=tmp, universe=SYMBOLS)
    write_synthetic_market(
        generate_market(list(SYMBOLS), T0, HISTORY + REPLAY + 5, seed=3), Lake(settings.lake_root)
    )
    install_production_model(settings, T0)
    return tmp


def start_run(data_dir: Path, log: Path) -> subprocess.Popen:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env |= {"RAYTRADE_DATA_DIR": str(data_dir), "RAYTRADE_UNIVERSE": ",".join(SYMBOLS),
            "RAYTRADE_RAY_NUM_CPUS": "2", "COLUMNS": "300"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "raytrade.cli", "run", "--venue", "replay", "--symbols", ",".join(SYMBOLS),
         "--start", str(START), "--end", str(START + REPLAY * MINUTE), "--speed", "1", "--mark-ticks", "6"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_running(
    run: subprocess.Popen, log: Path, timeout_s: float = 240.0, trading: bool = True
) -> set[int]:
    """Wait until the session trades (the Predictor replica and the ingest actors are up and the replay
    runs; with ``trading=False`` only until the Predictor replica is up: Ray started, the session still
    starting); return the process tree."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert run.poll() is None, f"raytrade run exited early:\n{log.read_text()}"
        tree = process_tree(run.pid)
        names = {command_name(p) for p in tree}
        if not trading and any("ServeReplica" in n for n in names):
            return tree
        if any("ServeReplica" in n for n in names) and any("IngestActor" in n for n in names):
            time.sleep(3.0)  # the venue resumes after every ingest connection is up
            return process_tree(run.pid)
        time.sleep(1.0)
    raise AssertionError(f"the shadow session did not come up in {timeout_s:.0f} s:\n{log.read_text()}")


def wait_gone(ids: set, timeout_s: float) -> set:
    deadline = time.monotonic() + timeout_s
    while (left := alive(ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_a_shadow_session_listens_on_loopback_only_and_a_sigkill_leaves_no_process(data_dir, tmp_path):
    log = tmp_path / "run.log"
    run = start_run(data_dir, log)
    try:
        tree = wait_running(run, log)
        sockets = listening_sockets(tree)
        names = {command_name(pid) for _, _, pid in sockets}
        assert any(n.endswith("gcs_server") for n in names) and any(n.endswith("raylet") for n in names), (
            sockets
        )
        assert len(sockets) >= 8, sockets  # GCS, raylet (2), agents, workers, the driver's venue …
        exposed = [(ip, port, command_name(pid)) for ip, port, pid in sockets if not is_loopback(ip)]
        assert exposed == [], f"listening beyond loopback: {exposed}"
        ids = identities(tree)
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        left = wait_gone(ids, timeout_s=30.0)
        assert left == set(), [(pid, command_name(pid)) for pid, _ in left]
    finally:
        if run.poll() is None:
            run.kill()


def test_sigterm_stops_the_session_cleanly_and_leaves_no_process(data_dir, tmp_path):
    """SIGTERM while the session is still starting (Ray up, the Predictor deployed, the ingest actors not
    yet): the command's handler, set before Ray started and kept through ray.init, stops it cleanly once
    it is up (Ray's own handler aborted the process: exit -6, seen on a loaded machine)."""
    log = tmp_path / "run.log"
    run = start_run(data_dir, log)
    try:
        wait_running(run, log, trading=False)
        run.send_signal(signal.SIGTERM)
        ids: set = set()
        deadline = time.monotonic() + 120.0
        while (
            run.poll() is None and time.monotonic() < deadline
        ):  # what it starts after the signal counts too
            ids |= identities(process_tree(run.pid))
            time.sleep(0.3)
        assert run.wait(5) == 0, log.read_text()
        assert "closes " in log.read_text()  # the session report was printed
        left = wait_gone(ids, timeout_s=30.0)
        assert left == set(), [(pid, command_name(pid)) for pid, _ in left]
    finally:
        if run.poll() is None:
            run.kill()
