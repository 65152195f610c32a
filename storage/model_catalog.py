"""The ``models`` table (spec 001 §6): our mirror of the MLflow registry, and model audit events.

MLflow is the source of truth for model versions and for which one is in production (the
``production`` alias); ``storage.registry`` mirrors each registered version into one ``models`` row
so the API, the dashboard and ``signals.model_id`` can refer to models with plain SQL:

- ``strategy`` is the registered model name, ``mlflow_version`` the version, ``artifact_uri``
  ``models:/<name>/<version>``; ``model_id`` is our UUID, also kept as the version's
  ``raytrade.model_id`` tag, so re-mirroring a version updates its row instead of adding one.
- ``is_production`` is True on exactly one row per strategy once a version has been promoted:
  ``set_production_row`` flips every row of the strategy in one statement.
- ``metrics`` holds the run's metrics, plus the version's last promotion record under the key
  ``"promotion"``. JSON has no NaN or infinity (PostgreSQL's JSONB refuses them): values pass
  ``core.jsonsafe.json_safe``, so NaN is stored as null, ±infinity as the strings ``"inf"`` / ``"-inf"``
  (a profit factor without losing trades).

Promotions, refusals and rollbacks are also appended to ``events`` (append-only: the database
refuses UPDATE and DELETE there), which keeps the full history that the tags only hold the last of.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.jsonsafe import json_safe
from storage.schema import events, models

__all__ = [
    "ModelRow",
    "append_event",
    "get_model_row",
    "list_model_rows",
    "model_id_for_version",
    "set_production_row",
    "upsert_model_row",
]


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One row of ``models``: times in epoch ms."""

    model_id: str
    created_at_ms: int
    algo: str
    strategy: str
    mlflow_version: str
    mlflow_run_id: str | None
    feature_schema_version: int
    label_spec_hash: str
    train_start_ms: int
    train_end_ms: int
    artifact_uri: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    is_production: bool = False


def _row_values(row: ModelRow) -> dict[str, Any]:
    return {
        "model_id": row.model_id,
        "created_at": row.created_at_ms,
        "algo": row.algo,
        "strategy": row.strategy,
        "mlflow_version": row.mlflow_version,
        "mlflow_run_id": row.mlflow_run_id,
        "feature_schema_version": row.feature_schema_version,
        "label_spec_hash": row.label_spec_hash,
        "train_start": row.train_start_ms,
        "train_end": row.train_end_ms,
        "metrics": json_safe(dict(row.metrics)),
        "artifact_uri": row.artifact_uri,
        "is_production": row.is_production,
    }


def _from_db(r: sa.Row[Any]) -> ModelRow:
    return ModelRow(
        model_id=str(r.model_id),
        created_at_ms=int(r.created_at),
        algo=r.algo,
        strategy=r.strategy,
        mlflow_version=r.mlflow_version,
        mlflow_run_id=r.mlflow_run_id,
        feature_schema_version=int(r.feature_schema_version),
        label_spec_hash=r.label_spec_hash,
        train_start_ms=int(r.train_start),
        train_end_ms=int(r.train_end),
        artifact_uri=r.artifact_uri,
        metrics=dict(r.metrics or {}),
        is_production=bool(r.is_production),
    )


def upsert_model_row(engine: sa.Engine, row: ModelRow) -> None:
    """Insert the row, or update every column of the row with the same ``model_id``.

    ``is_production`` is only written on insert: it changes through ``set_production_row``, so that a
    re-mirror cannot leave two production rows behind.
    """
    values = _row_values(row)
    dialect = engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(models).values(**values)
    update = {k: stmt.excluded[k] for k in values if k not in ("model_id", "is_production")}
    with engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(index_elements=[models.c.model_id], set_=update))


def set_production_row(engine: sa.Engine, strategy: str, model_id: str | None) -> int:
    """Make ``model_id`` the only production row of ``strategy`` (None: none is); return the rows of it.

    One UPDATE statement over the strategy's rows, so readers never see two production rows.
    """
    flag = models.c.model_id == model_id if model_id is not None else sa.false()
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(models).where(models.c.strategy == strategy).values(is_production=flag)
        )
        return int(result.rowcount or 0)


def get_model_row(engine: sa.Engine, model_id: str) -> ModelRow | None:
    """Return the row of ``model_id``, or None."""
    with engine.connect() as conn:
        r = conn.execute(sa.select(models).where(models.c.model_id == model_id)).first()
    return _from_db(r) if r is not None else None


def model_id_for_version(engine: sa.Engine, strategy: str, mlflow_version: str) -> str | None:
    """Return the ``model_id`` already mirrored for this registered version, or None."""
    with engine.connect() as conn:
        q = sa.select(models.c.model_id).where(
            models.c.strategy == strategy, models.c.mlflow_version == mlflow_version
        )
        value = conn.execute(q.order_by(models.c.created_at)).scalars().first()
    return str(value) if value is not None else None


def list_model_rows(engine: sa.Engine, strategy: str | None = None) -> list[ModelRow]:
    """Return the rows of one strategy (or all), oldest first."""
    q = sa.select(models).order_by(models.c.strategy, models.c.created_at)
    if strategy is not None:
        q = q.where(models.c.strategy == strategy)
    with engine.connect() as conn:
        return [_from_db(r) for r in conn.execute(q)]


def append_event(
    engine: sa.Engine,
    kind: str,
    source: str,
    payload: Mapping[str, Any],
    *,
    symbol: str | None = None,
    ts_ms: int | None = None,
) -> None:
    """Append one row to the audit log ``events`` (``payload`` made JSON-safe)."""
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    with engine.begin() as conn:
        conn.execute(
            sa.insert(events).values(
                ts=ts_ms, kind=kind, source=source, symbol=symbol, payload=json_safe(dict(payload))
            )
        )
