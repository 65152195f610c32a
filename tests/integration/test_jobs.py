"""The training_jobs queue and the batch worker on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
from model_fixtures import failing_gates_input, log_tiny, passing_gates_input

from core.messages import Topic, TrainingUpdate
from storage import db, jobs
from storage.bus import InProcessBus
from storage.registry import ModelRegistry
from tune.worker import BatchWorker, JobContext, enqueue_job, promote_handler

T0 = 1_760_000_000_000


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    e = db.make_engine(db_url)
    db.upgrade(e)
    yield e
    e.dispose()


def clock(start: int = T0):
    t = iter(range(start, start + 10_000_000, 1000))
    return lambda: next(t)


# --- the queue ------------------------------------------------------------------------------------


def test_job_lifecycle_queued_running_done(engine):
    job_id = jobs.enqueue(engine, "train", {"symbols": ["BTCUSDT"], "num_boost_round": 5}, now_ms=T0)
    job = jobs.get_job(engine, job_id)
    assert (job.status, job.kind, job.progress, job.created_at_ms) == ("queued", "train", 0.0, T0)
    assert job.config == {"symbols": ["BTCUSDT"], "num_boost_round": 5} and job.started_at_ms is None

    claimed = jobs.claim(engine, now_ms=T0 + 5)
    assert claimed is not None and claimed.job_id == job_id
    assert (claimed.status, claimed.started_at_ms) == ("running", T0 + 5)
    assert jobs.claim(engine) is None  # nothing else queued

    assert jobs.set_progress(engine, job_id, 0.25)
    assert jobs.get_job(engine, job_id).progress == 0.25
    assert jobs.complete(engine, job_id, report_uri="runs:/abc/report.html", now_ms=T0 + 9)
    done = jobs.get_job(engine, job_id)
    assert (done.status, done.progress, done.ended_at_ms, done.report_uri) == (
        "done",
        1.0,
        T0 + 9,
        "runs:/abc/report.html",
    )
    # a finished job stays finished
    assert not jobs.set_progress(engine, job_id, 0.5)
    assert not jobs.fail(engine, job_id, "late failure")
    assert jobs.get_job(engine, job_id).status == "done"


def test_failed_job_keeps_a_redacted_one_line_error(engine):
    job_id = jobs.enqueue(engine, "backtest", {})
    jobs.claim(engine)
    err = RuntimeError(
        "could not reach postgresql://trader:hunter2@db:5432/rt\n  api_key=abcd1234 secret: 's3cr3t' password=pw"
    )
    assert jobs.fail(engine, job_id, err, now_ms=T0)
    job = jobs.get_job(engine, job_id)
    assert job.status == "failed" and job.ended_at_ms == T0
    assert job.error.startswith("RuntimeError: could not reach postgresql://trader:***@db:5432/rt")
    for secret in ("hunter2", "abcd1234", "s3cr3t", "pw "):
        assert secret not in job.error + " "
    assert "\n" not in job.error and "Traceback" not in job.error


def test_enqueue_validates_kind_and_config(engine):
    with pytest.raises(ValueError, match="unknown job kind"):
        jobs.enqueue(engine, "mine_bitcoin", {})
    with pytest.raises(ValueError, match="NaN"):
        jobs.enqueue(engine, "train", {"x": float("nan")})
    with pytest.raises(ValueError, match="JSON object"):
        jobs.enqueue(engine, "train", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        enqueue_job(engine, "promote", {"version": "1"})
    with pytest.raises(ValueError, match="max_drawdown"):
        enqueue_job(engine, "promote", {"name": "m", "gates": {"max_drawdown": 2}})
    job_id = enqueue_job(engine, "promote", {"name": "m", "override": "manual"})
    assert jobs.get_job(engine, job_id).config == {"name": "m", "override": "manual"}
    assert jobs.list_jobs(engine) and jobs.list_jobs(engine, status="failed") == []


def test_jobs_are_claimed_oldest_first_and_only_of_the_kinds_asked(engine):
    a = jobs.enqueue(engine, "train", {}, now_ms=T0 + 2)
    b = jobs.enqueue(engine, "label", {}, now_ms=T0 + 1)
    c = jobs.enqueue(engine, "train", {}, now_ms=T0 + 3)
    assert jobs.claim(engine, kinds=["promote"]) is None
    assert jobs.claim(engine, kinds=[]) is None
    assert jobs.claim(engine, kinds=["train"]).job_id == a
    assert jobs.claim(engine).job_id == b
    assert jobs.claim(engine).job_id == c
    assert [j.job_id for j in jobs.list_jobs(engine, status="running")] == [c, a, b]


def test_two_workers_in_threads_never_claim_the_same_job(engine):
    ids = {jobs.enqueue(engine, "train", {"i": i}) for i in range(40)}
    seen: list[list[str]] = [[], [], [], []]
    lock = threading.Lock()
    active: set[str] = set()

    def handler_for(bucket: list[str]):
        def handle(ctx: JobContext) -> str:
            with lock:
                assert ctx.job.job_id not in active  # nobody else runs it right now
                active.add(ctx.job.job_id)
            bucket.append(ctx.job.job_id)
            with lock:
                active.discard(ctx.job.job_id)
            return f"report-{ctx.job.job_id}"

        return handle

    workers = []
    for bucket in seen:
        w = BatchWorker(engine, poll_interval_s=0.01)
        w.register("train", handler_for(bucket))
        workers.append(w)
    threads = [threading.Thread(target=w.run, kwargs={"exit_when_idle": True}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    claimed = [j for bucket in seen for j in bucket]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    assert sum(1 for bucket in seen if bucket) >= 2  # the workers really did share the queue
    assert {j.status for j in jobs.list_jobs(engine, limit=100)} == {"done"}


# --- the worker -----------------------------------------------------------------------------------


def test_worker_reports_progress_to_the_row_and_the_bus(engine):
    bus = InProcessBus()
    bus.subscribe(Topic.TRAINING_UPDATE, "ui", "c1", start="earliest")
    worker = BatchWorker(engine, bus=bus, progress_interval_s=0.0, clock_ms=clock())
    seen_progress: list[float] = []

    def train(ctx: JobContext) -> str:
        ctx.progress(0.5, "half way")
        seen_progress.append(jobs.get_job(engine, ctx.job.job_id).progress)
        ctx.progress(0.75)
        return "runs:/r/report.json"

    worker.register("train", train)
    job_id = jobs.enqueue(engine, "train", {"x": 1})
    done = worker.run_once()
    assert done.job_id == job_id and done.status == "done" and done.report_uri == "runs:/r/report.json"
    assert seen_progress == [0.5]
    msgs = [d.message for d in bus.read(Topic.TRAINING_UPDATE, "ui", "c1")]
    assert all(isinstance(m, TrainingUpdate) and m.job_id == job_id for m in msgs)
    expected = [("running", 0.0), ("running", 0.5), ("running", 0.75), ("done", 1.0)]
    assert [(m.status, m.progress) for m in msgs] == expected
    assert msgs[1].message == "half way" and msgs[-1].message == "runs:/r/report.json"
    assert worker.run_once() is None


def test_worker_marks_a_failing_job_failed_with_its_error_and_publishes_it(engine):
    bus = InProcessBus()
    bus.subscribe(Topic.TRAINING_UPDATE, "ui", "c1", start="earliest")
    worker = BatchWorker(engine, bus=bus, progress_interval_s=0.0)

    def broken(ctx: JobContext) -> str:
        ctx.progress(0.3)
        raise ValueError("labels missing for ETHUSDT (token=abc123)")

    worker.register("label", broken)
    jobs.enqueue(engine, "label", {})
    failed = worker.run_once()
    assert failed.status == "failed" and failed.progress == 0.3
    assert failed.error == "ValueError: labels missing for ETHUSDT (token=***)"
    last = bus.read(Topic.TRAINING_UPDATE, "ui", "c1")[-1].message
    assert (last.status, last.progress, last.message) == ("failed", 0.3, failed.error)


def test_worker_records_an_interrupt_as_a_failure_and_reraises(engine):
    worker = BatchWorker(engine)

    def interrupted(ctx: JobContext) -> None:
        raise KeyboardInterrupt

    worker.register("backtest", interrupted)
    job_id = jobs.enqueue(engine, "backtest", {})
    with pytest.raises(KeyboardInterrupt):
        worker.run_once()
    assert jobs.get_job(engine, job_id).status == "failed"


def test_worker_leaves_kinds_it_cannot_run_queued_and_bus_trouble_does_not_fail_jobs(engine):
    bus = InProcessBus()
    bus.close()  # every publish raises
    worker = BatchWorker(engine, bus=bus)
    worker.register("label", lambda ctx: None)
    train = jobs.enqueue(engine, "train", {})
    label = jobs.enqueue(engine, "label", {})
    assert worker.run(exit_when_idle=True) == 1
    assert jobs.get_job(engine, train).status == "queued"
    assert jobs.get_job(engine, label).status == "done"
    with pytest.raises(ValueError, match="unknown job kind"):
        worker.register("dance", lambda ctx: None)


# --- promote jobs ---------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: sa.Engine) -> Iterator[ModelRegistry]:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield ModelRegistry(uri, artifact_root=tmp_path / "mlartifacts", engine=engine)
    mlflow.set_tracking_uri(before)


def test_promote_jobs_promote_or_fail_naming_the_gates(engine, registry):
    for seed, gates in ((0, passing_gates_input()), (1, failing_gates_input())):
        log_tiny(registry, "m", seed, gates_input=gates)
    worker = BatchWorker(engine)
    worker.register("promote", promote_handler(registry))
    enqueue_job(engine, "promote", {"name": "m", "version": "1", "actor": "ci"})
    ok = worker.run_once()
    assert (
        ok.status == "done"
        and ok.report_uri.startswith("runs:/")
        and ok.report_uri.endswith("_gate_report.json")
    )
    assert registry.production_version("m").version == "1"

    enqueue_job(engine, "promote", {"name": "m"})  # the newest: version 2, which fails two gates
    refused = worker.run_once()
    assert refused.status == "failed" and refused.error.startswith(
        "PromotionRefused: m version 2 not promoted"
    )
    assert "oos_profit_factor" in refused.error and "oos_max_drawdown" in refused.error
    assert registry.production_version("m").version == "1"

    enqueue_job(
        engine, "promote", {"name": "m", "version": "2", "override": "approved by risk", "actor": "ops"}
    )
    assert worker.run_once().status == "done"
    assert registry.production_version("m").promotion["override"] == "approved by risk"


def test_worker_waits_out_an_unreachable_database_instead_of_dying(tmp_path: Path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: every claim fails
    worker = BatchWorker(engine, poll_interval_s=0.01)
    worker.register("train", lambda ctx: None)
    timer = threading.Timer(0.3, worker.stop)
    timer.start()
    assert worker.run() == 0
    timer.join()
    engine.dispose()
