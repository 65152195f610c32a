"""The batch job queue on ``training_jobs`` (spec 001 §18): enqueue, claim, progress, done or failed.

A job goes ``queued`` → ``running`` (``started_at``, ``progress`` 0…1 as work proceeds) → ``done``
(``ended_at``, ``report_uri``) or ``failed`` (``ended_at``, ``error``). Every transition is one
conditional UPDATE on the current status, so a job finishes once and only its claimer moves it.

Claiming is atomic, so two workers never run the same job:

- PostgreSQL: ``UPDATE … WHERE job_id = (SELECT job_id … WHERE status = 'queued' ORDER BY created_at
  LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING …``: concurrent claimers skip each other's row instead
  of waiting for it.
- SQLite: the same single UPDATE (without the locking clause, which SQLite lacks) guarded by
  ``status = 'queued'``: SQLite runs one write transaction at a time and an UPDATE takes the write
  lock before it reads, so the second claimer sees the row already running.

Leases: a claim takes a lease (``lease_until``, ``worker``) and counts an attempt; the worker renews
the lease by heartbeat (``heartbeat``) while the job runs. A worker that dies (killed, machine lost)
stops renewing it, and ``recover_expired`` (called by every worker before it claims) returns a job
whose lease passed to the queue, or fails it once it has been claimed ``max_attempts`` times. A
transition given the claim's ``attempt`` applies only while that claim still holds the job, so a
worker that lost its lease cannot finish a job another worker has taken since.

Oldest queued job first. A worker claims only kinds it can run (``kinds``), so a job waits for a
worker that has its handler instead of failing on one that has not.

Error texts are one line, ``<ExceptionType>: <message>``, without traceback, with URL passwords and
``key=value`` secrets masked, and at most ``MAX_ERROR_CHARS`` long: the UI shows them to anyone.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from storage.schema import training_jobs

__all__ = [
    "JOB_KINDS",
    "JOB_STATUSES",
    "DEFAULT_LEASE_MS",
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_ERROR_CHARS",
    "Job",
    "claim",
    "complete",
    "enqueue",
    "error_text",
    "fail",
    "get_job",
    "heartbeat",
    "list_jobs",
    "recover_expired",
    "set_progress",
]

#: Kinds of batch work (spec 001 §18.1: bootstrap_history, label_recent, train_model,
#: walkforward_backtest, compute_drift, promote_model).
JOB_KINDS: tuple[str, ...] = ("bootstrap_history", "label", "train", "backtest", "drift", "promote")
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed")
MAX_ERROR_CHARS = 2000
#: How long a claim holds a job without a heartbeat, ms.
DEFAULT_LEASE_MS = 60_000
#: Claims of one job before an expired lease fails it instead of queueing it again.
DEFAULT_MAX_ATTEMPTS = 3

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)[^@\s]+@")
_KEY_VALUE_SECRET = re.compile(
    r"(?P<key>\b[\w-]*(?:password|passwd|secret|token|api[_-]?key|signature)[\w-]*\b\s*[=:]\s*)"
    r"(?P<quote>['\"]?)[^\s'\",;&)\]}]+",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Job:
    """One row of ``training_jobs``; times in epoch ms."""

    job_id: str
    kind: str
    status: str
    created_at_ms: int
    started_at_ms: int | None
    ended_at_ms: int | None
    progress: float
    config: Mapping[str, Any]
    report_uri: str | None
    error: str | None
    attempts: int = 0
    lease_until_ms: int | None = None
    worker: str | None = None


def _job(r: sa.Row[Any]) -> Job:
    return Job(
        job_id=str(r.job_id),
        kind=r.kind,
        status=r.status,
        created_at_ms=int(r.created_at),
        started_at_ms=None if r.started_at is None else int(r.started_at),
        ended_at_ms=None if r.ended_at is None else int(r.ended_at),
        progress=float(r.progress),
        config=dict(r.config or {}),
        report_uri=r.report_uri,
        error=r.error,
        attempts=int(r.attempts),
        lease_until_ms=None if r.lease_until is None else int(r.lease_until),
        worker=r.worker,
    )


def _now_ms(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


def enqueue(
    engine: sa.Engine,
    kind: str,
    config: Mapping[str, Any],
    *,
    now_ms: int | None = None,
    job_id: str | None = None,
) -> str:
    """Queue a job of ``kind`` with ``config`` (a JSON object without NaN or infinity); return its id.

    Raises ValueError for an unknown kind or a config that is not such an object. What a kind's
    config must hold is checked by whoever enqueues it (``tune.worker.enqueue_job``). A given
    ``job_id`` (a UUID) that is already taken raises ``sqlalchemy.exc.IntegrityError``: a caller
    that derives it from a period queues at most one job per period (``tune.worker.Schedule``).
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}")
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise ValueError("job config must be a JSON object with string keys")
    try:
        text = json.dumps(dict(config), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"job config is not JSON without NaN/inf: {e}") from None
    job_id = str(uuid.uuid4()) if job_id is None else str(uuid.UUID(job_id))
    with engine.begin() as conn:
        conn.execute(
            sa.insert(training_jobs).values(
                job_id=job_id,
                kind=kind,
                created_at=_now_ms(now_ms),
                status="queued",
                progress=0.0,
                config=json.loads(text),
            )
        )
    return job_id


def claim(
    engine: sa.Engine,
    kinds: Collection[str] | None = None,
    *,
    now_ms: int | None = None,
    lease_ms: int = DEFAULT_LEASE_MS,
    worker: str | None = None,
) -> Job | None:
    """Atomically move the oldest queued job (of ``kinds``, default any) to running; None when none is queued.

    The claim counts one more attempt and holds a lease of ``lease_ms`` for ``worker``; renew it
    with ``heartbeat``.
    """
    if lease_ms <= 0:
        raise ValueError(f"lease_ms must be positive, got {lease_ms}")
    if kinds is not None and not kinds:
        return None
    t = training_jobs
    q = t.alias("queued_job")  # an alias, so the subquery is not correlated to the updated table
    pick = sa.select(q.c.job_id).where(q.c.status == "queued")
    if kinds is not None:
        pick = pick.where(q.c.kind.in_(sorted(kinds)))
    pick = pick.order_by(q.c.created_at, q.c.job_id).limit(1)
    if engine.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    now = _now_ms(now_ms)
    stmt = (
        sa.update(t)
        .where(t.c.job_id == pick.scalar_subquery(), t.c.status == "queued")
        .values(
            status="running",
            started_at=now,
            progress=0.0,
            attempts=t.c.attempts + 1,
            lease_until=now + lease_ms,
            worker=worker,
        )
        .returning(*t.c)
    )
    with engine.begin() as conn:
        row = conn.execute(stmt).first()
    return _job(row) if row is not None else None


def heartbeat(
    engine: sa.Engine,
    job_id: str,
    attempt: int,
    *,
    lease_ms: int = DEFAULT_LEASE_MS,
    now_ms: int | None = None,
) -> bool:
    """Extend the lease of claim ``attempt`` on a running job to now + ``lease_ms``.

    Return False when that claim no longer holds the job (it finished, or its lease expired and the
    job was queued again or failed).
    """
    return _transition(engine, job_id, {"lease_until": _now_ms(now_ms) + lease_ms}, attempt)


def recover_expired(
    engine: sa.Engine, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS, now_ms: int | None = None
) -> tuple[int, int]:
    """Return running jobs whose lease passed to the queue, or fail those claimed ``max_attempts`` times.

    A queued job keeps its attempt count and says in ``error`` which attempt lost its worker.
    Returns (jobs queued again, jobs failed).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    t = training_jobs
    now = _now_ms(now_ms)
    expired = sa.and_(t.c.status == "running", t.c.lease_until.is_not(None), t.c.lease_until < now)
    lost = sa.literal("attempt ") + sa.cast(t.c.attempts, sa.Text)
    with engine.begin() as conn:
        failed = conn.execute(
            sa.update(t)
            .where(expired, t.c.attempts >= max_attempts)
            .values(
                status="failed",
                ended_at=now,
                lease_until=None,
                error=lost + sa.literal(f" of {max_attempts} lost its worker (lease expired); giving up"),
            )
        ).rowcount
        requeued = conn.execute(
            sa.update(t)
            .where(expired, t.c.attempts < max_attempts)
            .values(
                status="queued",
                started_at=None,
                progress=0.0,
                lease_until=None,
                worker=None,
                error=lost + sa.literal(" lost its worker (lease expired); queued again"),
            )
        ).rowcount
    return int(requeued), int(failed)


def set_progress(engine: sa.Engine, job_id: str, progress: float, *, attempt: int | None = None) -> bool:
    """Record the progress (0…1) of a running job; return False when the job is not running.

    With ``attempt``, only while that claim holds the job (see ``heartbeat``).
    """
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not math.isfinite(progress):
        raise ValueError(f"progress must be a finite number in [0, 1], got {progress!r}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return _transition(engine, job_id, {"progress": float(progress)}, attempt)


def complete(
    engine: sa.Engine,
    job_id: str,
    *,
    report_uri: str | None = None,
    now_ms: int | None = None,
    attempt: int | None = None,
) -> bool:
    """Mark a running job done (progress 1); return False when it was not running (or not ``attempt``'s)."""
    values = {
        "status": "done",
        "progress": 1.0,
        "ended_at": _now_ms(now_ms),
        "report_uri": report_uri,
        "lease_until": None,
        "error": None,
    }
    return _transition(engine, job_id, values, attempt)


def fail(
    engine: sa.Engine,
    job_id: str,
    error: BaseException | str,
    *,
    now_ms: int | None = None,
    attempt: int | None = None,
) -> bool:
    """Mark a running job failed with a redacted one-line error; return False when it was not running."""
    text = error_text(error)
    values = {"status": "failed", "ended_at": _now_ms(now_ms), "error": text, "lease_until": None}
    return _transition(engine, job_id, values, attempt)


def _transition(
    engine: sa.Engine, job_id: str, values: Mapping[str, Any], attempt: int | None = None
) -> bool:
    t = training_jobs
    where = [t.c.job_id == job_id, t.c.status == "running"]
    if attempt is not None:
        where.append(t.c.attempts == attempt)
    with engine.begin() as conn:
        result = conn.execute(sa.update(t).where(*where).values(**values))
    return bool(result.rowcount)


def get_job(engine: sa.Engine, job_id: str) -> Job | None:
    """Return the job, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(training_jobs).where(training_jobs.c.job_id == job_id)).first()
    return _job(row) if row is not None else None


def list_jobs(
    engine: sa.Engine, *, status: str | None = None, kind: str | None = None, limit: int = 50
) -> list[Job]:
    """Return the newest jobs first, optionally of one status and kind."""
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {', '.join(JOB_STATUSES)}")
    t = training_jobs
    q = sa.select(t).order_by(t.c.created_at.desc(), t.c.job_id.desc()).limit(limit)
    if status is not None:
        q = q.where(t.c.status == status)
    if kind is not None:
        q = q.where(t.c.kind == kind)
    with engine.connect() as conn:
        return [_job(r) for r in conn.execute(q)]


def error_text(error: BaseException | str) -> str:
    """Return a one-line, redacted, bounded text of ``error`` (type and message; no traceback)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    text = _KEY_VALUE_SECRET.sub(r"\g<key>\g<quote>***", text)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text
