"""The training_jobs queue and the batch worker on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
from model_fixtures import failing_gates_input, log_tiny, passing_gates_input

from core.messages import Topic, TrainingUpdate
from core.strategies import BASELINES
from storage import db, jobs
from storage.bus import InProcessBus
from storage.registry import ModelRegistry
from tune.worker import BatchWorker, JobContext, enqueue_job, promote_handler

T0 = 1_760_000_000_000


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


def test_an_expired_lease_returns_the_job_to_the_queue_then_fails_it_after_max_attempts(engine):
    job_id = jobs.enqueue(engine, "train", {}, now_ms=T0)
    first = jobs.claim(engine, now_ms=T0 + 10, lease_ms=1000, worker="w1")
    assert (first.attempts, first.lease_until_ms, first.worker) == (1, T0 + 1010, "w1")
    # a heartbeat keeps the lease; nothing expires before it passes
    assert jobs.heartbeat(engine, job_id, 1, lease_ms=1000, now_ms=T0 + 900)
    assert jobs.get_job(engine, job_id).lease_until_ms == T0 + 1900
    assert jobs.recover_expired(engine, max_attempts=2, now_ms=T0 + 1899) == (0, 0)
    # the worker dies: no more heartbeats; once the lease passed the job is queued again, attempts kept
    assert jobs.recover_expired(engine, max_attempts=2, now_ms=T0 + 1901) == (1, 0)
    queued = jobs.get_job(engine, job_id)
    assert (queued.status, queued.attempts, queued.started_at_ms, queued.lease_until_ms, queued.worker) == (
        "queued", 1, None, None, None,
    )  # fmt: skip
    assert queued.error == "attempt 1 lost its worker (lease expired); queued again"
    second = jobs.claim(engine, now_ms=T0 + 2000, lease_ms=1000, worker="w2")
    assert (second.job_id, second.attempts, second.worker) == (job_id, 2, "w2")
    # the lost first claim can neither renew nor finish the job the second claim holds
    assert not jobs.heartbeat(engine, job_id, 1, lease_ms=1000, now_ms=T0 + 2001)
    assert not jobs.complete(engine, job_id, attempt=1)
    assert not jobs.set_progress(engine, job_id, 0.5, attempt=1)
    # the second worker dies too: with max_attempts 2 the job fails and says why
    assert jobs.recover_expired(engine, max_attempts=2, now_ms=T0 + 3001) == (0, 1)
    failed = jobs.get_job(engine, job_id)
    assert (failed.status, failed.attempts, failed.ended_at_ms) == ("failed", 2, T0 + 3001)
    assert failed.error == "attempt 2 of 2 lost its worker (lease expired); giving up"
    assert jobs.claim(engine, now_ms=T0 + 4000) is None


def test_worker_renews_the_lease_while_a_job_runs_and_the_next_worker_recovers_a_dead_ones_job(engine):
    lease_seen: list[int | None] = []

    def slow(ctx: JobContext) -> str:
        for _ in range(4):
            time.sleep(0.3)
            lease_seen.append(jobs.get_job(engine, ctx.job.job_id).lease_until_ms)
        return "ok"

    job_id = jobs.enqueue(engine, "train", {})
    worker = BatchWorker(engine, name="w-live", lease_s=0.6)
    worker.register("train", slow)
    done = worker.run_once()
    assert (done.job_id, done.status, done.attempts, done.worker) == (job_id, "done", 1, "w-live")
    assert len(set(lease_seen)) >= 3 and lease_seen == sorted(lease_seen)  # renewed while it ran
    # a job left running by a worker that died (claimed, never renewed) goes to the next worker
    dead = jobs.enqueue(engine, "train", {})
    jobs.claim(engine, lease_ms=1, worker="w-dead")
    time.sleep(0.01)
    other = BatchWorker(engine, name="w-next", lease_s=5)
    other.register("train", lambda ctx: "again")
    finished = other.run_once()
    assert (finished.job_id, finished.status, finished.attempts, finished.worker, finished.error) == (
        dead, "done", 2, "w-next", None,
    )  # fmt: skip


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


# --- label, train and backtest jobs from the CLI ---------------------------------------------------

JOB_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
JOB_START = 1_736_121_600_000  # 2025-01-06 00:00 UTC
TRAIN_CONFIG = {
    "symbols": JOB_SYMBOLS,
    "folds": {"unit": "bars", "train": 1440, "val": 720, "test": 720, "folds": 2},
    "params": {"num_leaves": 7, "min_data_in_leaf": 50},
    "num_boost_round": 8,
    "seed": 3,
    "model_name": "jobs-model",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A data dir with a small synthetic lake (3 symbols × 4 days), a migrated SQLite database and the
    CLI (`raytrade db`, `raytrade jobs`) pointed at it; label horizon 60 bars to keep training small."""
    import typer
    from typer.testing import CliRunner

    from core.synthetic import generate_market
    from pipelines.market import write_synthetic_market
    from raytrade import cmd_db, cmd_models
    from raytrade.settings import load_settings
    from storage.lake import Lake

    root = tmp_path_factory.mktemp("jobs_ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("RAYTRADE_DATA_DIR", str(root / "data"))
        mp.setenv("RAYTRADE_LABEL__H_BARS", "60")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.setenv("COLUMNS", "400")  # error boxes unwrapped
        app = typer.Typer()
        cmd_db.register(app)
        cmd_models.register(app)
        runner = CliRunner()

        def cli(*args: str, code: int = 0) -> str:
            result = runner.invoke(app, list(args))
            assert result.exit_code == code, (result.output, result.exception)
            return " ".join(result.output.replace("│", " ").split())

        settings = load_settings()
        write_synthetic_market(
            generate_market(JOB_SYMBOLS, JOB_START, 4 * 1440, seed=5), Lake(settings.lake_root)
        )
        cli("db", "upgrade")
        before = mlflow.get_tracking_uri()
        yield cli, settings
        mlflow.set_tracking_uri(before)


def _enqueue(cli, kind: str, config: dict) -> str:
    import json

    out = cli("jobs", "enqueue", kind, "--config", json.dumps(config))
    assert out.startswith(f"queued {kind} job ")
    return out.split()[-1]


def _run_worker(settings) -> tuple[list[TrainingUpdate], ModelRegistry, sa.Engine]:
    """Run every queued job with the installation's handlers; return the bus updates, registry, engine."""
    from raytrade.cmd_models import worker_handlers

    engine = db.make_engine(settings.database_url)
    registry = ModelRegistry(
        settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
    )
    bus = InProcessBus()
    bus.subscribe(Topic.TRAINING_UPDATE, "t", "c", start="earliest")
    worker = BatchWorker(engine, bus=bus, progress_interval_s=0.0)
    for kind, handler in worker_handlers(settings, registry).items():
        worker.register(kind, handler)
    assert set(worker.kinds) == {"label", "train", "backtest", "promote", "drift", "bootstrap_history"}
    worker.run(exit_when_idle=True)
    return [d.message for d in bus.read(Topic.TRAINING_UPDATE, "t", "c", count=10_000)], registry, engine


def _lifecycle(updates: list[TrainingUpdate], job_id: str) -> list[tuple[str, float]]:
    return [(m.status, m.progress) for m in updates if m.job_id == job_id]


def _assert_queued_running_done(engine: sa.Engine, updates, job_id: str) -> jobs.Job:
    seen = _lifecycle(updates, job_id)
    assert seen[0] == ("running", 0.0) and seen[-1] == ("done", 1.0), seen
    running = [p for s, p in seen if s == "running"]
    assert (
        len(running) >= 3 and running == sorted(running) and 0 < running[-1] <= 1
    )  # progress as work proceeds
    job = jobs.get_job(engine, job_id)
    assert job.status == "done" and job.progress == 1.0 and job.error is None
    assert job.started_at_ms <= job.ended_at_ms
    return job


def test_label_job_from_the_cli_writes_labels_with_progress(workspace, ray_session):
    from pipelines.labels import labels_lake

    cli, settings = workspace
    job_id = _enqueue(cli, "label", {"symbols": JOB_SYMBOLS})
    engine = db.make_engine(settings.database_url)
    assert jobs.get_job(engine, job_id).status == "queued"
    updates, _registry, engine = _run_worker(settings)
    job = _assert_queued_running_done(engine, updates, job_id)
    store = labels_lake(settings.lake_root, settings.label)
    assert job.report_uri == store.root.resolve().as_uri()
    for symbol in JOB_SYMBOLS:
        labels = store.read("labels_1m", symbol)
        assert len(labels) == 4 * 1440 and (labels["status"] == 0).sum() > 3000
    engine.dispose()


def test_train_job_registers_a_version_with_fold_metrics_and_gate_inputs(workspace, ray_session):
    cli, settings = workspace
    label_id = _enqueue(cli, "label", {"symbols": JOB_SYMBOLS})
    train_id = _enqueue(cli, "train", TRAIN_CONFIG)
    updates, registry, engine = _run_worker(settings)
    assert jobs.get_job(engine, label_id).status == "done"
    job = _assert_queued_running_done(engine, updates, train_id)
    fold_messages = [m.message for m in updates if m.job_id == train_id and m.message.startswith("fold ")]
    assert fold_messages == ["fold 1/2 done", "fold 2/2 done"]  # progress as folds finish
    info = registry.version("jobs-model", job.report_uri.rsplit("/", 1)[-1])
    assert job.report_uri == info.uri and not info.is_production
    run = registry.client.get_run(info.run_id)
    assert run.data.params["job_id"] == train_id and run.data.params["num_boost_round"] == "8"
    assert {f"fold{i}_trades" for i in (0, 1)} <= set(run.data.metrics)
    gates_input = registry.read_run_json("jobs-model", info.version, "gates_input.json")
    folds = gates_input["candidate"]["folds"]
    assert [f["trades"] for f in folds] == [run.data.metrics[f"fold{f['fold']}_trades"] for f in folds]
    assert {b["name"] for b in gates_input["baselines"]} == set(BASELINES)
    model = registry.load_model(info.uri)
    assert model.label_spec_hash == settings.label.spec_hash()
    engine.dispose()


def test_backtest_job_stores_the_baseline_metrics(workspace):
    import json
    from urllib.parse import urlparse

    from core.metrics import summarize
    from pipelines.backtest import load_panel
    from pipelines.baselines import run_baselines
    from raytrade.cmd_backtest import sim_config
    from storage.lake import Lake

    cli, settings = workspace
    config = {"symbols": JOB_SYMBOLS[:2], "start": "2025-01-07", "end": "2025-01-09"}
    job_id = _enqueue(cli, "backtest", config)
    updates, _registry, engine = _run_worker(settings)
    job = _assert_queued_running_done(engine, updates, job_id)
    stored = json.loads(Path(urlparse(job.report_uri).path).read_text())
    assert stored["job_id"] == job_id and set(stored["summaries"]) == set(BASELINES)
    assert (Path(urlparse(job.report_uri).path).parent / "report.html").exists()
    lake = Lake(settings.lake_root)
    panel = load_panel(lake, JOB_SYMBOLS[:2], 1_736_208_000_000, 1_736_380_800_000)
    direct = run_baselines(lake, panel, list(BASELINES), sim=sim_config(settings), risk=settings.risk,
                           policy=settings.policy, label_spec=settings.label)  # fmt: skip
    for name, result in direct.items():
        expected = summarize(result.trades, result.equity)
        assert stored["summaries"][name]["trades"] == expected["trades"]
        assert stored["summaries"][name]["total_return"] == pytest.approx(expected["total_return"], abs=1e-12)
    engine.dispose()


def test_job_configs_are_checked_when_queued_and_failures_record_the_error(workspace):
    cli, settings = workspace
    out = cli("jobs", "enqueue", "train", "--config", '{"symbols": ["BTCUSDT"]}', code=2)
    assert "folds" in out and "Field required" in out
    out = cli(
        "jobs", "enqueue", "backtest", "--config", '{"symbols": ["BTCUSDT"], "strategies": ["moon"]}', code=2
    )
    assert "unknown baseline" in out
    out = cli("jobs", "enqueue", "label", "--config", '{"symbols": ["btc-usdt"]}', code=2)
    assert "invalid label job config" in out
    out = cli(
        "jobs",
        "enqueue",
        "train",
        "--config",
        '{"symbols": ["BTCUSDT"], "folds": {"train": 1, "test": 1}, "params": {"seed": 1}}',
        code=2,
    )
    assert "params may not set ['seed']" in out
    # valid configs whose data are missing: the jobs fail and say why
    no_candles = _enqueue(cli, "label", {"symbols": ["XRPUSDT"]})
    no_labels = _enqueue(cli, "train", {**TRAIN_CONFIG, "symbols": ["BTCUSDT"], "model_name": "never"})
    engine = db.make_engine(settings.database_url)
    from pipelines.labels import labels_lake

    labels = labels_lake(settings.lake_root, settings.label)
    if labels.coverage("labels_1m", "BTCUSDT") is not None:  # an earlier test labelled it: remove them
        import shutil

        shutil.rmtree(labels.symbol_dir("labels_1m", "BTCUSDT"))
    _updates, registry, engine = _run_worker(settings)
    failed = jobs.get_job(engine, no_candles)
    assert failed.status == "failed" and failed.error == (
        f"FileNotFoundError: no candles_1m in the lake at {settings.lake_root} for XRPUSDT"
    )
    failed = jobs.get_job(engine, no_labels)
    assert (
        failed.status == "failed"
        and "no labels of spec" in failed.error
        and "queue a label job first" in failed.error
    )
    assert "never" not in registry.registered_names()
    engine.dispose()
