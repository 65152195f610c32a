"""The batch worker (spec 001 §18): claims ``training_jobs`` and runs them, apart from the realtime path.

``BatchWorker`` runs in its own process (``raytrade worker``), never inside the API or the trading
actors: a long training job must not stall either. Each loop turn claims one queued job of a kind it
has a handler for (``storage.jobs.claim``: atomic, so several workers can share one queue), calls
the handler with a ``JobContext``, and marks the job done with the handler's report URI, or failed
with the exception's redacted one-line text.

Leases: before each claim the worker returns jobs whose workers died (their lease passed) to the
queue, or fails them after ``max_attempts`` claims (``storage.jobs.recover_expired``). While a job
runs, a heartbeat thread renews its lease every third of ``lease_s``; a worker killed mid-job stops
renewing it, so another worker takes the job once ``lease_s`` has passed.

Handlers are plain callables registered per kind on the worker instance (``register``); the worker
keeps no class-level state. ``promote_handler`` runs ``tune.promote`` for ``promote`` jobs; the
label, train and backtest handlers (``tune.jobs_handlers``) are registered by the composition root;
the types both sides use (``JobContext``, ``JobHandler``) live in ``tune.jobs_types``.

Schedules: a worker given a ``Schedule`` (``schedule``) queues that kind's job once per period
before each claim. The job's id is derived from the kind and the period's index, and the queue
refuses a second row with that id, so several workers on one database queue one job per period
between them (``enqueue_scheduled``). ``raytrade worker`` schedules a ``drift`` job every
``drift_every_s``.

Progress: a handler calls ``ctx.progress(fraction, message)``; the worker writes it to the job row
and publishes a ``TrainingUpdate`` on the bus (``Topic.TRAINING_UPDATE``), at most every
``progress_interval_s`` (start, done and failed are always published). The row is the record: a bus
that cannot take a message is logged and the job goes on.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.messages import Topic, TrainingUpdate
from storage import jobs
from storage.bus import Bus
from storage.jobs import Job
from storage.registry import ModelRegistry
from tune.job_configs import JOB_CONFIGS
from tune.jobs_types import JobContext, JobHandler
from tune.promote import PromotionConfig, promote_stored

log = logging.getLogger(__name__)

#: Longest wait between attempts to reach an unavailable database, seconds.
MAX_BACKOFF_S = 30.0
_SCHEDULE_NAMESPACE = uuid.UUID("5a0c3e7e-4f64-4d3b-9a0e-2d1f6b7c8e90")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Queue a ``kind`` job every ``every_s`` seconds (periods of epoch time: period k is
    ``[k · every_s, (k + 1) · every_s)``), with the config ``config()`` returns then; None skips
    the period (e.g. nothing to check yet)."""

    kind: str
    every_s: float
    config: Callable[[], Mapping[str, Any] | None]

    def __post_init__(self) -> None:
        if self.every_s <= 0:
            raise ValueError(f"every_s must be positive, got {self.every_s}")

    def job_id(self, now_ms: int) -> str:
        """The id of this schedule's job for the period holding ``now_ms``: the same on every worker."""
        every_ms = max(1, round(self.every_s * 1000))
        return str(uuid.uuid5(_SCHEDULE_NAMESPACE, f"{self.kind}:{every_ms}:{now_ms // every_ms}"))


def enqueue_scheduled(engine: sa.Engine, schedule: Schedule, now_ms: int) -> str | None:
    """Queue the schedule's job of the period holding ``now_ms`` unless it exists; return its id if queued.

    Safe to call from several workers at once: the id is the period's, and the second insert of an
    id fails on the primary key (PostgreSQL makes the second inserter wait for the first's commit).
    """
    job_id = schedule.job_id(now_ms)
    if jobs.get_job(engine, job_id) is not None:
        return None
    config = schedule.config()
    if config is None:
        return None
    try:
        return jobs.enqueue(
            engine, schedule.kind, validate_job_config(schedule.kind, config), now_ms=now_ms, job_id=job_id
        )
    except sa.exc.IntegrityError:  # another worker queued it first
        return None


class PromoteJobConfig(BaseModel):
    """Config of a ``promote`` job: which version, an optional override reason, gate thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="registered model name")
    version: str | None = Field(None, description="version to promote; default: the newest")
    override: str | None = Field(None, description="promote despite failed gates, for this reason")
    actor: str = Field("worker", min_length=1, description="who asked for the promotion")
    gates: PromotionConfig = Field(default_factory=PromotionConfig)


#: Config models of the kinds that have one; ``enqueue_job`` validates against them.
JOB_CONFIG_MODELS: Mapping[str, type[BaseModel]] = MappingProxyType(
    {**JOB_CONFIGS, "promote": PromoteJobConfig}
)


def validate_job_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` checked against the kind's config model (as JSON), or as is for other kinds.

    Raises ValueError naming the problems.
    """
    model = JOB_CONFIG_MODELS.get(kind)
    if model is None:
        return dict(config)
    try:
        return model.model_validate(dict(config)).model_dump(mode="json", exclude_defaults=True)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"invalid {kind} job config: {problems}") from None


def enqueue_job(engine: sa.Engine, kind: str, config: Mapping[str, Any]) -> str:
    """Validate ``config`` for ``kind`` and queue the job; return its id."""
    return jobs.enqueue(engine, kind, validate_job_config(kind, config))


def promote_handler(registry: ModelRegistry) -> JobHandler:
    """Return the ``promote`` handler: evaluate the version's stored gate inputs, then promote it.

    A refusal (failed gates, no override) raises ``PromotionRefused``, so the job fails with the
    failed gates named in its error. The report URI is the gate report on the version's run.
    """

    def handle(ctx: JobContext) -> str | None:
        cfg = PromoteJobConfig.model_validate(dict(ctx.config))
        ctx.progress(0.1, f"evaluating gates of {cfg.name} {cfg.version or '(newest)'}")
        _report, result = promote_stored(
            registry, cfg.name, cfg.version, cfg=cfg.gates, override=cfg.override, actor=cfg.actor
        )
        ctx.progress(0.9, f"{cfg.name} version {result.version}: {result.kind}")
        return result.report_uri

    return handle


@dataclass(slots=True)
class _Progress:
    last_s: float = -float("inf")
    value: float = 0.0


@dataclass(slots=True)
class BatchWorker:
    """Claims jobs of the registered kinds and runs them one at a time.

    ``clock_ms`` supplies job timestamps (epoch ms); tests replace it. ``name`` identifies the worker
    in logs and in the lease it holds. ``lease_s``: how long a claim holds a job without a
    heartbeat; ``max_attempts``: claims of one job before an expired lease fails it.
    """

    engine: sa.Engine
    bus: Bus | None = None
    name: str = "batch-worker"
    poll_interval_s: float = 1.0
    progress_interval_s: float = 0.5
    lease_s: float = jobs.DEFAULT_LEASE_MS / 1000
    max_attempts: int = jobs.DEFAULT_MAX_ATTEMPTS
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    _handlers: dict[str, JobHandler] = field(default_factory=dict, init=False)
    _schedules: list[Schedule] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def register(self, kind: str, handler: JobHandler) -> None:
        """Run jobs of ``kind`` with ``handler`` (replaces an earlier one)."""
        if kind not in jobs.JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(jobs.JOB_KINDS)}")
        self._handlers[kind] = handler

    def schedule(self, schedule: Schedule) -> None:
        """Queue ``schedule``'s job once per period, checked before each claim (module doc)."""
        if schedule.kind not in jobs.JOB_KINDS:
            raise ValueError(
                f"unknown job kind {schedule.kind!r}; expected one of {', '.join(jobs.JOB_KINDS)}"
            )
        self._schedules.append(schedule)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def enqueue_due(self) -> list[str]:
        """Queue the current period's job of every schedule that has none yet; return the ids queued.

        A schedule whose config cannot be built or is refused is logged and skipped; the claim goes on.
        """
        queued = []
        for schedule in self._schedules:
            try:
                job_id = enqueue_scheduled(self.engine, schedule, self.clock_ms())
            except (ValueError, OSError) as e:
                log.warning("%s: could not queue the scheduled %s job: %s", self.name, schedule.kind, e)
                continue
            if job_id is not None:
                log.info("%s: queued the scheduled %s job %s", self.name, schedule.kind, job_id)
                queued.append(job_id)
        return queued

    def run_once(self) -> Job | None:
        """Queue due scheduled jobs, claim one job and run it to done or failed; return its final row,
        or None when none was queued."""
        self.enqueue_due()
        if not self.kinds:
            return None
        requeued, failed = jobs.recover_expired(
            self.engine, max_attempts=self.max_attempts, now_ms=self.clock_ms()
        )
        if requeued or failed:
            log.warning(
                "%s: %d job(s) lost their worker: %d queued again, %d failed after %d attempts",
                self.name, requeued + failed, requeued, failed, self.max_attempts,
            )  # fmt: skip
        job = jobs.claim(
            self.engine, self.kinds, now_ms=self.clock_ms(), lease_ms=self._lease_ms, worker=self.name
        )
        if job is None:
            return None
        log.info("%s: running %s job %s (attempt %d)", self.name, job.kind, job.job_id, job.attempts)
        beating = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(job, beating), name=f"{self.name}-heartbeat", daemon=True
        )
        beat.start()
        try:
            return self._run_claimed(job)
        finally:
            beating.set()
            beat.join()

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    def _heartbeat(self, job: Job, finished: threading.Event) -> None:
        while not finished.wait(self.lease_s / 3):
            try:
                held = jobs.heartbeat(
                    self.engine, job.job_id, job.attempts, lease_ms=self._lease_ms, now_ms=self.clock_ms()
                )
            except sa.exc.SQLAlchemyError as e:  # the next beat may get through before the lease passes
                log.warning("%s: heartbeat of job %s failed: %s", self.name, job.job_id, e)
                continue
            if not held:
                log.warning(
                    "%s: lost the lease of job %s; its outcome will not be recorded", self.name, job.job_id
                )
                return

    def _run_claimed(self, job: Job) -> Job | None:
        state = _Progress()
        self._publish(job.job_id, "running", 0.0, f"{job.kind} started")

        def progress(fraction: float, message: str = "") -> None:
            self._progress(job, state, fraction, message)

        try:
            report_uri = self._handlers[job.kind](JobContext(job, progress))
        except BaseException as e:  # a failed job is a result; interrupts are recorded, then re-raised
            text = jobs.error_text(e)
            # a throttled update may be unsaved
            jobs.set_progress(self.engine, job.job_id, state.value, attempt=job.attempts)
            jobs.fail(self.engine, job.job_id, text, now_ms=self.clock_ms(), attempt=job.attempts)
            self._publish(job.job_id, "failed", state.value, text)
            log.warning("%s: %s job %s failed: %s", self.name, job.kind, job.job_id, text)
            if not isinstance(e, Exception):
                raise
        else:
            jobs.complete(
                self.engine, job.job_id, report_uri=report_uri, now_ms=self.clock_ms(), attempt=job.attempts
            )
            self._publish(job.job_id, "done", 1.0, report_uri or "")
        return jobs.get_job(self.engine, job.job_id)

    def run(self, *, max_jobs: int | None = None, exit_when_idle: bool = False) -> int:
        """Run jobs until ``stop()`` (or ``max_jobs`` ran, or the queue is empty with ``exit_when_idle``).

        Polls every ``poll_interval_s`` while the queue is empty. A database that cannot be reached
        is retried with backoff (up to ``MAX_BACKOFF_S``) rather than ending the worker. Returns the
        number of jobs run.
        """
        ran, backoff_s = 0, self.poll_interval_s
        while not self._stop.is_set() and (max_jobs is None or ran < max_jobs):
            try:
                job = self.run_once()
            except sa.exc.OperationalError as e:
                log.warning("%s: database unavailable (%s); retrying in %.1f s", self.name, e.orig, backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(2 * backoff_s, MAX_BACKOFF_S)
                continue
            backoff_s = self.poll_interval_s
            if job is not None:
                ran += 1
                continue
            if exit_when_idle:
                break
            self._stop.wait(self.poll_interval_s)
        return ran

    def stop(self) -> None:
        """Ask ``run`` to return after the current job."""
        self._stop.set()

    def _progress(self, job: Job, state: _Progress, fraction: float, message: str) -> None:
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {fraction}")
        state.value = fraction
        now = time.monotonic()
        if now - state.last_s < self.progress_interval_s:
            return
        state.last_s = now
        jobs.set_progress(self.engine, job.job_id, fraction, attempt=job.attempts)
        self._publish(job.job_id, "running", fraction, message)

    def _publish(self, job_id: str, status: str, progress: float, message: str) -> None:
        if self.bus is None:
            return
        try:
            msg = TrainingUpdate(
                ts_ms=self.clock_ms(), job_id=job_id, status=status, progress=progress, message=message
            )
            self.bus.publish(Topic.TRAINING_UPDATE, msg)
        except Exception as e:  # the job row is the record; the bus only informs
            log.warning("%s: could not publish progress of job %s: %s", self.name, job_id, e)
