"""``raytrade promote | rollback | models | jobs | worker``: the model registry and the batch queue.

``promote`` judges a registered version by the gate inputs stored with it (``gates_input.json`` on
its MLflow run, see ``tune.promote``) and moves the ``production`` alias when every gate passes, or
with ``--override "reason"`` (recorded). ``worker`` is the batch process of spec 001 §18: it runs
queued jobs apart from the realtime path; the handlers it knows are listed in ``worker_handlers``.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from core.time import ms_to_text
from raytrade.options import settings_or_exit
from raytrade.settings import Settings, redact_url
from storage import db, jobs

if TYPE_CHECKING:  # MLflow, LightGBM and Ray come with these: imported where a command uses them
    from storage.registry import ModelRegistry, ModelVersionInfo
    from tune.promote import GateReport
    from tune.worker import JobHandler

console = Console()
jobs_app = typer.Typer(no_args_is_help=True, help="Queue and inspect batch jobs (training_jobs).")

#: Run metrics shown by ``raytrade models NAME``, in this order, when a version has them.
SHOWN_METRICS = ("profit_factor", "max_drawdown", "sharpe", "trades", "total_return")


def _engine(settings: Settings) -> sa.Engine:
    engine = db.make_engine(settings.database_url)
    if not db.is_current(engine):
        engine.dispose()
        console.print("[red]the database is not at the current schema: run `raytrade db upgrade` first[/red]")
        raise typer.Exit(2)
    return engine


def _registry(settings: Settings, engine: sa.Engine | None) -> ModelRegistry:
    # MLflow draws a progress bar per artifact download; a CLI line per model is enough.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from storage.registry import ModelRegistry

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine)


def _actor(actor: str | None) -> str:
    return actor or getpass.getuser()


def _when(ts_ms: int | None) -> str:
    return "" if not ts_ms else ms_to_text(ts_ms, seconds=True)


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_report(report: GateReport) -> None:
    """Print every gate as a table row: verdict, value, threshold, reason."""
    table = Table(title=f"promotion gates: {report.candidate}")
    for column in ("gate", "verdict", "value", "threshold", "reason"):
        table.add_column(column, overflow="fold")
    for g in report.gates:
        verdict = "[green]pass[/green]" if g.passed else "[red]FAIL[/red]"
        value = "n/a" if g.value is None else _number(g.value)
        threshold = "" if g.threshold is None else _number(g.threshold)
        table.add_row(g.name, verdict, value, threshold, g.reason)
    console.print(table)


def promote_cmd(
    name: str = typer.Argument(..., help="registered model name (the strategy)"),
    version: str | None = typer.Option(None, "--version", help="version to promote; default: the newest"),
    override: str | None = typer.Option(
        None, "--override", help="promote even though gates fail, for this reason (recorded)"
    ),
    actor: str | None = typer.Option(None, "--actor", help="who promotes; default: the OS user"),
    gates: str | None = typer.Option(
        None, "--gates", help="gate thresholds as JSON, e.g. '{\"max_drawdown\": 0.15}' (PromotionConfig)"
    ),
) -> None:
    """Evaluate the promotion gates of a version and make it production if they pass (or on --override)."""
    from tune.promote import PromotionConfig, PromotionRefused, evaluate_stored, promote, resolve_version

    settings = settings_or_exit()
    try:
        cfg = PromotionConfig.model_validate(json.loads(gates or "{}"))
    except (json.JSONDecodeError, ValidationError) as e:
        raise typer.BadParameter(str(e), param_hint="--gates") from None
    engine = _engine(settings)
    try:
        registry = _registry(settings, engine)
        info = resolve_version(registry, name, version)
        report = evaluate_stored(registry, name, info.version, cfg)
        print_report(report)
        try:
            result = promote(registry, name, info.version, report, override=override, actor=_actor(actor))
        except PromotionRefused as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from None
        if result.kind == "unchanged":
            console.print(f"{name} version {result.version} already is production")
        else:
            how = "with override" if result.kind == "override" else "all gates passed"
            console.print(
                f"[green]{name} version {result.version} is production[/green] ({how}; "
                f"was {result.replaced or 'none'}); serving loads models:/{name}@production"
            )
    finally:
        engine.dispose()


def rollback_cmd(
    name: str = typer.Argument(..., help="registered model name"),
    reason: str | None = typer.Option(None, "--reason", help="why (recorded)"),
    actor: str | None = typer.Option(None, "--actor", help="who rolls back; default: the OS user"),
) -> None:
    """Move production back to the version the current one replaced."""
    from tune.promote import rollback as rollback_production

    settings = settings_or_exit()
    engine = _engine(settings)
    try:
        result = rollback_production(_registry(settings, engine), name, actor=_actor(actor), reason=reason)
        console.print(f"{name}: production {result.replaced} → {result.version}")
    finally:
        engine.dispose()


def _version_row(info: ModelVersionInfo) -> list[str]:
    metrics = [_number(info.metrics[m]) if m in info.metrics else "" for m in SHOWN_METRICS]
    promotion = info.promotion
    last = f"{promotion.get('kind', '')} by {promotion.get('actor', '')}" if promotion else ""
    aliases = ", ".join(info.aliases)
    return [info.version, aliases, _when(info.created_at_ms), *metrics, info.label_spec_hash or "", last]


def models_cmd(name: str | None = typer.Argument(None, help="registered model; default: list all")) -> None:
    """List registered models, or the versions of one with metrics and which is production."""
    settings = settings_or_exit()
    registry = _registry(settings, None)
    if name is None:
        table = Table(title=f"registered models ({settings.tracking_uri})")
        for column in ("name", "versions", "production", "previous"):
            table.add_column(column)
        for n in registry.registered_names():
            versions = registry.versions(n)
            production = next((v.version for v in versions if v.is_production), "")
            previous = next((v.version for v in versions if "previous" in v.aliases), "")
            table.add_row(n, str(len(versions)), production, previous)
        console.print(table)
        return
    versions = registry.versions(name)
    if not versions:
        console.print(f"[red]no registered model named {name!r}[/red]")
        raise typer.Exit(1)
    table = Table(title=f"{name}: versions")
    for column in ("version", "aliases", "created (UTC)", *SHOWN_METRICS, "label spec", "last promotion"):
        table.add_column(column, overflow="fold")
    for info in versions:
        style = "bold green" if info.is_production else None
        table.add_row(*_version_row(info), style=style)
    console.print(table)


@jobs_app.command("enqueue")
def jobs_enqueue(
    kind: str = typer.Argument(..., help=f"one of {', '.join(jobs.JOB_KINDS)}"),
    config: str = typer.Option("{}", "--config", help="the job's config as a JSON object"),
) -> None:
    """Queue a batch job; a worker (`raytrade worker`) picks it up."""
    from tune.worker import enqueue_job

    settings = settings_or_exit()
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"not JSON: {e}", param_hint="--config") from None
    engine = _engine(settings)
    try:
        job_id = enqueue_job(engine, kind, parsed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    finally:
        engine.dispose()
    console.print(f"queued {kind} job {job_id}")


@jobs_app.command("list")
def jobs_list(
    status: str | None = typer.Option(None, "--status", help=f"one of {', '.join(jobs.JOB_STATUSES)}"),
    limit: int = typer.Option(20, "--limit", min=1, help="newest jobs shown"),
) -> None:
    """List the newest batch jobs with status, progress and outcome."""
    settings = settings_or_exit()
    engine = _engine(settings)
    try:
        rows = jobs.list_jobs(engine, status=status, limit=limit)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--status") from None
    finally:
        engine.dispose()
    table = Table(title="batch jobs (newest first)")
    for column in ("job", "kind", "status", "progress", "created (UTC)", "ended (UTC)", "outcome"):
        table.add_column(column, overflow="fold")
    for j in rows:
        created, ended = _when(j.created_at_ms), _when(j.ended_at_ms)
        outcome = j.error or j.report_uri or ""
        table.add_row(j.job_id, j.kind, j.status, f"{j.progress:.0%}", created, ended, outcome)
    console.print(table)


def worker_handlers(
    settings: Settings, registry: ModelRegistry, *, after_ray_start: Callable[[], None] | None = None
) -> dict[str, JobHandler]:
    """The handler of every job kind this installation runs: label, train, backtest, promote, drift and
    bootstrap_history.

    ``after_ray_start`` runs each time a handler has started (or found) Ray: Ray replaces the
    driver's SIGTERM handler when it starts, and the worker puts its own back.
    """
    from raytrade.cmd_backtest import sim_config
    from raytrade.rayinit import start_ray
    from tune.jobs_handlers import JobEnvironment, job_handlers
    from tune.worker import promote_handler

    def ray_for_jobs() -> None:
        start_ray(settings, progress=False)
        if after_ray_start is not None:
            after_ray_start()

    env = JobEnvironment(
        lake_root=settings.lake_root,
        label_spec=settings.label,
        policy=settings.policy,
        risk=settings.risk,
        sim=sim_config(settings),
        registry=registry,
        reports_dir=(settings.data_dir / "reports" / "jobs").resolve(),
        start_ray=ray_for_jobs,
    )
    from raytrade.cmd_drift import ops_handlers
    from storage import db

    engine = registry.engine if registry.engine is not None else db.make_engine(settings.database_url)
    return {**job_handlers(env), "promote": promote_handler(registry), **ops_handlers(settings, engine)}


def worker_cmd(
    once: bool = typer.Option(False, "--once", help="run at most one queued job, then exit"),
    poll_s: float = typer.Option(2.0, "--poll-s", min=0.05, help="seconds between polls of an empty queue"),
) -> None:
    """Run the batch worker: claim queued jobs and run them until interrupted.

    SIGTERM stops it after the current job (exit 0, the job finished and recorded); Ctrl-C stops it
    at once and marks the job it was running failed. A worker that dies holds its job only until
    its lease (RAYTRADE_WORKER_LEASE_S) passes; then another worker takes it.
    """
    from storage.bus import open_bus
    from tune.worker import BatchWorker

    settings = settings_or_exit()
    engine = _engine(settings)
    bus = open_bus(settings.redis_url)
    worker = BatchWorker(
        engine,
        bus=bus,
        name=f"worker@{socket.gethostname()}:{os.getpid()}",
        poll_interval_s=poll_s,
        lease_s=settings.worker_lease_s,
        max_attempts=settings.worker_max_attempts,
    )

    def stop_after_current_job(_signum: int, _frame: object) -> None:
        console.print("SIGTERM: stopping after the current job")
        worker.stop()

    def keep_our_sigterm_handler() -> None:
        signal.signal(signal.SIGTERM, stop_after_current_job)

    registry = _registry(settings, engine)
    for kind, handler in worker_handlers(
        settings, registry, after_ray_start=keep_our_sigterm_handler
    ).items():
        worker.register(kind, handler)
    from raytrade.cmd_drift import drift_schedule

    if (drift_every := drift_schedule(settings)) is not None:  # RAYTRADE_DRIFT_EVERY_S
        worker.schedule(drift_every)
    console.print(f"worker for {', '.join(worker.kinds)} jobs on {redact_url(settings.database_url)}")
    previous_handler = signal.signal(signal.SIGTERM, stop_after_current_job)
    try:
        if once:
            job = worker.run_once()
            if job is None:
                console.print("no queued job")
            else:
                console.print(f"{job.kind} job {job.job_id}: {job.status} {job.error or ''}")
            if job is not None and job.status == "failed":
                raise typer.Exit(1)
        else:
            ran = worker.run()
            console.print(f"worker stopped after {ran} job(s)")
    except KeyboardInterrupt:
        console.print("worker interrupted")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        bus.close()
        engine.dispose()


def register(app: typer.Typer) -> None:
    app.command("promote")(promote_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("models")(models_cmd)
    app.add_typer(jobs_app, name="jobs")
    app.command("worker")(worker_cmd)
