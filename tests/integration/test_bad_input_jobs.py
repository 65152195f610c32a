"""Bad input and bad luck for the batch queue and the configuration (issue 14 §3 and §7).

Real `raytrade worker` processes on a real PostgreSQL: one SIGKILLed mid-job loses its job only until
its lease passes, SIGTERM lets the current job finish, two workers starting together on a fresh data
folder both live. Configuration mistakes fail at start with one line naming the key, exit 2, and
leave every store as it was.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import db, jobs
from tune.worker import enqueue_job

RAYTRADE = [sys.executable, "-m", "raytrade.cli"]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START_MS = 1_736_121_600_000  # 2025-01-06 00:00 UTC
BACKTEST = {"symbols": SYMBOLS[:2], "start": "2025-01-07", "end": "2025-01-09"}


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic lake (3 symbols × 4 days) that every worker of this module reads."""
    from core.synthetic import generate_market
    from pipelines.market import write_synthetic_market
    from storage.lake import Lake

    root = tmp_path_factory.mktemp("bad_input_jobs") / "lake"
    write_synthetic_market(generate_market(SYMBOLS, START_MS, 4 * 1440, seed=5), Lake(root))
    return root


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env.update(
        RAYTRADE_DATA_DIR=str(data_dir),
        RAYTRADE_UNIVERSE=",".join(SYMBOLS),
        RAYTRADE_LABEL__H_BARS="60",
        RAYTRADE_RAY_NUM_CPUS="1",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        COLUMNS="400",
    )
    env.update(extra)
    return env


@pytest.fixture
def queue(
    tmp_path: Path, fresh_pg_url: str, lake_root: Path
) -> Iterator[tuple[sa.Engine, Callable[..., dict]]]:
    """A migrated PostgreSQL database and an environment builder for worker processes on it."""
    engine = db.make_engine(fresh_pg_url)
    db.upgrade(engine)

    def env(**extra: str) -> dict[str, str]:
        return _env(
            tmp_path / "data", RAYTRADE_DB_URL=fresh_pg_url, RAYTRADE_LAKE_PATH=str(lake_root), **extra
        )

    yield engine, env
    engine.dispose()


def _lake_checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _jobs_table(engine: sa.Engine) -> tuple[int, str]:
    """Row count and a checksum of the queue's identity columns (ids, kinds, configs)."""
    t = jobs.training_jobs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.job_id, t.c.kind, t.c.config).order_by(t.c.job_id)).all()
    return len(rows), hashlib.sha256(
        repr([(str(r[0]), r[1], sorted(r[2].items())) for r in rows]).encode()
    ).hexdigest()


def _start_worker(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RAYTRADE, "worker", "--poll-s", "0.2", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its Ray processes can be ended with it
    )


def _wait_for(
    engine: sa.Engine, job_id: str, ready: Callable[[jobs.Job], bool], timeout_s: float
) -> jobs.Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = jobs.get_job(engine, job_id)
        if job is not None and ready(job):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not get there in {timeout_s} s: {jobs.get_job(engine, job_id)}")


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _kill_mid_job(engine: sa.Engine, env: dict[str, str], cwd: Path) -> tuple[str, jobs.Job, int]:
    """Queue a backtest job, let a worker claim it, SIGKILL the worker; return the job id, row and pid."""
    job_id = enqueue_job(engine, "backtest", BACKTEST)
    first = _start_worker(env, cwd)
    try:
        running = _wait_for(engine, job_id, lambda j: j.status == "running", timeout_s=120)
        os.kill(first.pid, signal.SIGKILL)  # the worker, not its session: a machine lost mid-job
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        _end(first)
    left = jobs.get_job(engine, job_id)
    assert running.status == left.status == "running", "the job finished before the worker was killed"
    assert (left.attempts, left.worker) == (1, f"worker@{os.uname().nodename}:{first.pid}")
    assert left.lease_until_ms is not None and left.ended_at_ms is None
    return job_id, left, first.pid


def _after_lease(job: jobs.Job) -> None:
    assert job.lease_until_ms is not None
    time.sleep(max(0.0, job.lease_until_ms / 1000 - time.time()) + 0.2)


@pytest.mark.slow
def test_a_job_whose_worker_was_killed_goes_back_to_the_queue_and_another_worker_finishes_it(queue, tmp_path):
    engine, env = queue
    lake_before = _lake_checksums(Path(env()["RAYTRADE_LAKE_PATH"]))
    worker_env = env(RAYTRADE_WORKER_LEASE_S="2")
    job_id, left, _pid = _kill_mid_job(engine, worker_env, tmp_path)
    jobs_before = _jobs_table(engine)
    assert jobs_before[0] == 1

    _after_lease(left)
    second = subprocess.run(
        [*RAYTRADE, "worker", "--once"],
        env=worker_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert f"backtest job {job_id}: done" in " ".join(second.stdout.split())
    done = jobs.get_job(engine, job_id)
    assert (done.status, done.attempts, done.error, done.lease_until_ms) == ("done", 2, None, None)
    assert done.worker is not None and done.worker != left.worker and done.report_uri.endswith("report.json")
    assert _jobs_table(engine) == jobs_before  # the same one job, nothing added
    assert _lake_checksums(Path(env()["RAYTRADE_LAKE_PATH"])) == lake_before


@pytest.mark.slow
def test_a_job_that_lost_its_worker_max_attempts_times_fails_saying_so(queue, tmp_path):
    engine, env = queue
    worker_env = env(RAYTRADE_WORKER_LEASE_S="2", RAYTRADE_WORKER_MAX_ATTEMPTS="1")
    job_id, left, _pid = _kill_mid_job(engine, worker_env, tmp_path)
    jobs_before = _jobs_table(engine)

    _after_lease(left)
    second = subprocess.run(
        [*RAYTRADE, "worker", "--once"],
        env=worker_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert "no queued job" in second.stdout
    failed = jobs.get_job(engine, job_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == "attempt 1 of 1 lost its worker (lease expired); giving up"
    assert failed.ended_at_ms is not None and failed.ended_at_ms >= left.lease_until_ms
    assert _jobs_table(engine) == jobs_before


@pytest.mark.slow
def test_sigterm_after_ray_started_finishes_the_current_job_and_exits_0(queue, tmp_path):
    engine, env = queue
    job_id = enqueue_job(engine, "label", {"symbols": SYMBOLS})
    worker = _start_worker(env(), tmp_path)
    try:
        # progress 0.05 is written once the handler has started Ray (which installs its own SIGTERM handler)
        _wait_for(
            engine,
            job_id,
            lambda j: j.progress >= 0.05 or j.status != "running" and j.status != "queued",
            300,
        )
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=300)
    finally:
        _end(worker)
    job = jobs.get_job(engine, job_id)
    assert worker.returncode == 0, err
    assert (job.status, job.error, job.progress) == ("done", None, 1.0)
    text = " ".join(out.split())
    assert "SIGTERM: stopping after the current job" in text and "worker stopped after 1 job(s)" in text
    assert "SystemExit" not in out + err


@pytest.mark.slow
def test_two_workers_started_together_on_a_fresh_data_folder_both_start(queue, tmp_path):
    _engine, env = queue
    data_dir = Path(env()["RAYTRADE_DATA_DIR"])
    assert not data_dir.exists()  # no MLflow store yet: both workers reach for creating it
    procs = [
        subprocess.Popen(
            [*RAYTRADE, "worker", "--once"], env=env(), cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]  # fmt: skip
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in outcomes:
        assert code == 0, err
        assert "no queued job" in out
    assert (data_dir / "mlflow.db").is_file()


# --- configuration errors: one line naming the key, exit 2, nothing touched ----------------------


def _config_error(tmp_path: Path, args: list[str], **extra: str) -> str:
    data_dir = tmp_path / "data"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    env = _env(data_dir, **extra)
    proc = subprocess.run(
        [*RAYTRADE, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no database, no data folder made
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (
            ["db", "upgrade"],
            {"RAYTRADE_DB_URL": "postgresql://trader:PLANTEDpw@db.example:notaport/raytrade"},
            "invalid settings: RAYTRADE_DB_URL: malformed database URL; expected e.g. sqlite:///data/raytrade.db "
            "or postgresql://host:5432/raytrade (user and password before the host)",
        ),
        (
            ["jobs", "list"],
            {"RAYTRADE_DB_URL": "postgresql://trader:PLANTEDpw@db.example:5432"},
            "invalid settings: RAYTRADE_DB_URL: the PostgreSQL URL names no database (postgresql://…/<database>)",
        ),
        (
            ["worker", "--once"],
            {"RAYTRADE_REDIS_URL": "redis://:PLANTEDpw@127.0.0.1:six/0"},
            "invalid settings: RAYTRADE_REDIS_URL: malformed URL: the port must be a number from 1 to 65535",
        ),
        (
            ["config", "show"],
            {"RAYTRADE_LABEL__K_SL": "4"},
            "invalid settings: RAYTRADE_LABEL__RISK_MAE_ATR, RAYTRADE_LABEL__K_SL: risk_mae_atr (3.0) must be "
            "≥ k_sl (4.0): RISK is beyond the stop",
        ),
        (
            ["selftest"],
            {"RAYTRADE_WORKER_MAX_ATTEMPTS": "0"},
            "invalid settings: RAYTRADE_WORKER_MAX_ATTEMPTS: Input should be greater than or equal to 1 (got '0')",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key_and_never_its_password(tmp_path, args, extra, expected):
    line = _config_error(tmp_path, args, **extra)
    assert line == expected
    assert "PLANTED" not in line


def test_a_data_folder_that_is_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    proc = subprocess.run(
        [*RAYTRADE, "db", "upgrade"],
        env=_env(blocker),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"invalid settings: RAYTRADE_DATA_DIR: {blocker} is a file, not a folder (got '{blocker}')"
    )
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_an_unknown_key_in_dot_env_is_named_as_written(tmp_path):
    (tmp_path / ".env").write_text("RAYTRADE_TYPO=1\n")
    line = _config_error(tmp_path, ["config", "show"])
    assert line == "invalid settings: RAYTRADE_TYPO: unknown setting"
