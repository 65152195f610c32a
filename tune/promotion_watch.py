"""Promotions made outside ``raytrade promote``: the ``production`` alias moved in the MLflow UI.

The design card's promotion path lets an operator move the ``production`` alias in the MLflow UI.
That bypasses the gates of ``tune.promote``; ``PromotionWatcher`` notices it and records it the way
``tune.promote`` records its own promotions, so the history and the dashboard stay complete.

What "the last promotion we recorded" is: the newest ``events`` row of kind ``model.promoted`` or
``model.rolled_back`` whose payload names the model (``tune.promote`` appends one per promotion,
override and rollback; this module appends ``model.promoted`` rows with source ``mlflow-ui``).
``check_once`` compares, per registered model, the version the alias points to with that record's
version. When they differ, the move happened outside our promote path: the version's gates are
evaluated as ``raytrade promote`` would (``tune.promote.evaluate_stored`` on its stored
``gates_input.json``; no alias is moved) and one ``model.promoted`` event is appended, source
``mlflow-ui``, payload ``{name, version, ts_ms, production_before, kind: "mlflow-ui", actor,
gates (the report) | null, gates_passed | null, warning | null}``. A failed gate, or gates that
cannot be evaluated, gives the warning text. The version then gets the ``raytrade.promotion.*``
tags of that record and the ``models`` mirror is re-synced (who is production).

Once per move, across restarts and across watchers: the state is the ``events`` table, and the row
is inserted by one ``INSERT … SELECT … WHERE <newest promotion event id> = <the id this check
read>`` (on PostgreSQL under a transaction advisory lock; SQLite takes its write lock for the
whole statement), so of two watchers that saw the same move one inserts and the other finds the
record moved on. A promotion in flight through ``tune.promote`` (its tags on the version are
written before the alias moves, its event after) is left alone for ``grace_s``: the version's
``raytrade.promotion.ts_ms`` tag names a promotion whose event is not there yet.

Not seen: the time of the move (MLflow keeps none; ``ts_ms`` is when it was noticed), and moves
that were undone between two checks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.errors import RejectedError
from core.jsonsafe import json_safe
from storage import db
from storage.registry import PROMOTION_TAG_PREFIX, ModelRegistry, ModelVersionInfo
from storage.schema import events
from tune.promote import GateReport, PromotionConfig, evaluate_stored

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_INTERVAL_S",
    "EVENT_SOURCE",
    "PROMOTION_KINDS",
    "PromotionRecord",
    "PromotionWatcher",
    "promotion_records",
]

log = logging.getLogger(__name__)

EVENT_SOURCE = "mlflow-ui"
EVENT_KIND = "model.promoted"
#: ``events`` kinds that change which version is production (``tune.promote`` and this module).
PROMOTION_KINDS = ("model.promoted", "model.rolled_back")
DEFAULT_INTERVAL_S = 30.0
DEFAULT_GRACE_S = 120.0
#: Our path's promotion kinds, as ``tune.promote`` tags them on the version before moving the alias.
_OUR_KINDS = ("promote", "override", "rollback")
_PG_LOCK_KEY = 0x7261797472616465  # "raytrade": one advisory lock for promotion records


@dataclass(frozen=True, slots=True)
class PromotionRecord:
    """One recorded change of production: the ``events`` row's id, kind, source and payload."""

    event_id: int
    kind: str
    source: str
    ts_ms: int
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.payload.get("name", ""))

    @property
    def version(self) -> str:
        return str(self.payload.get("version", ""))


def promotion_records(engine: sa.Engine) -> list[PromotionRecord]:
    """Every ``model.promoted`` / ``model.rolled_back`` event, oldest first."""
    q = sa.select(events.c.id, events.c.kind, events.c.source, events.c.ts, events.c.payload)
    q = q.where(events.c.kind.in_(PROMOTION_KINDS)).order_by(events.c.id)
    with engine.connect() as conn:
        return [
            PromotionRecord(int(r.id), r.kind, r.source, int(r.ts), dict(r.payload or {}))
            for r in conn.execute(q)
        ]


def _newest_id() -> sa.ScalarSelect[Any]:
    q = sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)).where(events.c.kind.in_(PROMOTION_KINDS))
    return q.scalar_subquery()


def _insert_unless_moved_on(
    engine: sa.Engine, expected_id: int, ts_ms: int, payload: Mapping[str, Any]
) -> bool:
    """Append the event only if the newest promotion event still is ``expected_id``; return whether it was."""
    row = sa.select(
        sa.literal(ts_ms, events.c.ts.type),
        sa.literal(EVENT_KIND, events.c.kind.type),
        sa.literal(EVENT_SOURCE, events.c.source.type),
        sa.literal(json_safe(dict(payload)), events.c.payload.type),
    ).where(_newest_id() == expected_id)
    stmt = sa.insert(events).from_select([events.c.ts, events.c.kind, events.c.source, events.c.payload], row)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # READ COMMITTED has no predicate lock: serialise writers
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        return conn.execute(stmt.returning(events.c.id)).first() is not None  # rowcount: -1 on PostgreSQL


class PromotionWatcher:
    """Notice ``production`` alias moves made outside ``tune.promote`` and record them (module docstring).

    ``registry`` needs a database engine (the ``events`` table). ``cfg`` are the gate thresholds
    (``raytrade promote``'s default); ``interval_s`` the period of the background thread;
    ``grace_s`` how long a promotion tagged by our path may wait for its event.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        cfg: PromotionConfig | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        grace_s: float = DEFAULT_GRACE_S,
        owns_engine: bool = False,
    ) -> None:
        if registry.engine is None:
            raise ValueError("the promotion watcher needs a ModelRegistry with a database engine")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.registry = registry
        self.engine: sa.Engine = registry.engine
        self.cfg = cfg or PromotionConfig()
        self.interval_s = float(interval_s)
        self.grace_s = float(grace_s)
        self._owns_engine = owns_engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(
        cls, database_url: str, tracking_uri: str, artifact_root: str | Path | None = None, **kw: Any
    ) -> PromotionWatcher:
        """A watcher with its own engine on ``database_url`` (disposed by ``stop``)."""
        engine = db.make_engine(database_url)
        registry = ModelRegistry(tracking_uri, artifact_root=artifact_root, engine=engine)
        return cls(registry, owns_engine=True, **kw)

    # --- one check -------------------------------------------------------------------------------

    def check_once(self, now_ms: int | None = None) -> list[PromotionRecord]:
        """Record every production move not recorded yet; return the records this call appended."""
        recorded: list[PromotionRecord] = []
        for name in self.registry.registered_names():
            record = self._check(name, int(time.time() * 1000) if now_ms is None else now_ms)
            if record is not None:
                recorded.append(record)
        return recorded

    def _check(self, name: str, now_ms: int) -> PromotionRecord | None:
        records = promotion_records(self.engine)
        newest_id = records[-1].event_id if records else 0
        last = next((r for r in reversed(records) if r.name == name), None)
        production = self.registry.production_version(name)
        if production is None or (last is not None and last.version == production.version):
            return None
        if self._in_flight(production, records, now_ms):
            return None
        report, why_not = self._gates(name, production.version)
        payload = {
            "name": name,
            "version": production.version,
            "ts_ms": now_ms,
            "production_before": last.version if last is not None else None,
            "kind": EVENT_SOURCE,
            "actor": EVENT_SOURCE,
            "gates": report.to_dict() if report is not None else None,
            "gates_passed": report.passed if report is not None else None,
            "warning": _warning(name, production.version, report, why_not),
        }
        if not _insert_unless_moved_on(self.engine, newest_id, now_ms, payload):
            return None  # another watcher (or a promotion) wrote first: judged again next check
        if payload["warning"]:
            log.warning("%s", payload["warning"])
        else:
            log.info(
                "%s version %s was made production in the MLflow UI; every gate passes",
                name,
                production.version,
            )
        self._tag(name, production, report, now_ms)
        return next(r for r in reversed(promotion_records(self.engine)) if r.name == name)

    def _in_flight(self, production: ModelVersionInfo, records: list[PromotionRecord], now_ms: int) -> bool:
        """Whether ``tune.promote`` tagged this version for a promotion whose event is not written yet."""
        tags = production.promotion
        if tags.get("kind") not in _OUR_KINDS or not tags.get("ts_ms", "").isdigit():
            return False
        tagged_ms = int(tags["ts_ms"])
        done = any(
            r.name == production.name
            and r.version == production.version
            and r.payload.get("ts_ms") == tagged_ms
            for r in records
        )
        return not done and now_ms - tagged_ms < self.grace_s * 1000

    def _gates(self, name: str, version: str) -> tuple[GateReport | None, str | None]:
        try:
            return evaluate_stored(self.registry, name, version, self.cfg), None
        except (RejectedError, ValueError) as e:  # no or malformed gates_input.json
            return None, str(e)

    def _tag(self, name: str, production: ModelVersionInfo, report: GateReport | None, now_ms: int) -> None:
        """The version's last promotion record (tags, as ``tune.promote`` writes them) and the models mirror."""
        report_uri = ""
        if report is not None and production.run_id:
            report_uri = self.registry.log_run_json(
                name, production.version, f"promotion/{now_ms}_gate_report.json", report.to_dict()
            )
        record = {
            "kind": EVENT_SOURCE,
            "actor": EVENT_SOURCE,
            "ts_ms": str(now_ms),
            "gates_passed": "" if report is None else str(report.passed).lower(),
            "failed_gates": "" if report is None else ",".join(report.failed),
            "override": "",
            "report_uri": report_uri,
        }
        self.registry.set_version_tags(
            name, production.version, {PROMOTION_TAG_PREFIX + k: v for k, v in record.items()}
        )
        self.registry.sync(name)

    # --- the background thread ---------------------------------------------------------------------

    def start(self) -> PromotionWatcher:
        """Check now and then every ``interval_s`` in a daemon thread until ``stop``."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="promotion-watch", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:  # the registry or database may be away for a while: try again next period
                log.exception("promotion watch: check failed; retrying in %.0f s", self.interval_s)
            self._stop.wait(self.interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (waiting up to ``timeout_s`` for a check in progress); dispose an owned engine."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._owns_engine:
            self.engine.dispose()


def _warning(name: str, version: str, report: GateReport | None, why_not: str | None) -> str | None:
    head = f"{name} version {version} was made production in the MLflow UI, bypassing the promotion gates"
    if report is None:
        return f"{head}; its gates could not be evaluated: {why_not}"
    if not report.passed:
        return f"{head}; failed gates: {report.failure_text()}"
    return None
