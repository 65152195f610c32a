"""Promotion: move the MLflow ``production`` alias when the gates pass, or on an explicit override; roll back.

The gates themselves are ``tune.gates`` (pure; re-exported here).

Where the inputs live: ``GatesInput`` (candidate, baselines, overfitting) is stored as the JSON
artifact ``gates_input.json`` on the MLflow run of the version (``ModelRegistry.log_model(...,
gates_input=...)``); ``evaluate_stored`` reads it back, so ``raytrade promote NAME`` can judge any
registered version. A per-fold table for several strategies plus a performance matrix does not fit
MLflow's flat run metrics, hence one JSON document.

``promote`` moves ``production`` when every gate passed, or when an explicit override reason is
given; either way it records who, when, why and the gate report: version tags
``raytrade.promotion.*``, the ``models`` row (``metrics.promotion``), one ``events`` row and the
report as a JSON artifact on the version's run. A refusal raises ``PromotionRefused`` naming the
failed gates, and is recorded in ``events`` too. ``rollback`` moves production back one step of the
promotion chain (see ``storage.registry``), recorded the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from core.errors import FatalError, RejectedError
from storage import model_catalog
from storage.registry import GATES_INPUT_FILE, PROMOTION_TAG_PREFIX, ModelRegistry, ModelVersionInfo
from tune.gates import (
    GATE_NAMES,
    FoldMetrics,
    GateReport,
    GateResult,
    GatesInput,
    OutOfSampleMetrics,
    OverfittingInput,
    PromotionConfig,
    StrategyResult,
    evaluate_gates,
)

__all__ = [
    "GATE_NAMES",
    "FoldMetrics",
    "GateReport",
    "GateResult",
    "GatesInput",
    "OutOfSampleMetrics",
    "OverfittingInput",
    "PromotionConfig",
    "PromotionRefused",
    "PromotionResult",
    "StrategyResult",
    "evaluate_gates",
    "evaluate_stored",
    "load_gates_input",
    "promote",
    "promote_stored",
    "resolve_version",
    "rollback",
]

EVENT_SOURCE = "tune.promote"


class PromotionRefused(RejectedError):
    """Gates failed and no override reason was given; the message names the failed gates."""

    def __init__(self, name: str, version: str, report: GateReport) -> None:
        super().__init__(
            f"{name} version {version} not promoted: failed gates: {report.failure_text()}. "
            "Promote anyway only with an explicit override reason."
        )
        self.report = report


@dataclass(frozen=True, slots=True)
class PromotionResult:
    """What a promotion or rollback did: the new production version, the one it replaced, the record.

    ``kind`` "unchanged": the version already was in production; nothing was moved or recorded.
    """

    name: str
    version: str
    replaced: str | None
    kind: Literal["promote", "override", "rollback", "unchanged"]
    report_uri: str | None
    record: Mapping[str, Any]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _engine(registry: ModelRegistry) -> sa.Engine:
    if registry.engine is None:
        raise FatalError("promotion needs a ModelRegistry with a database engine (models, events)")
    return registry.engine


def promote(
    registry: ModelRegistry,
    name: str,
    version: str | int,
    report: GateReport,
    *,
    override: str | None = None,
    actor: str,
    now_ms: int | None = None,
) -> PromotionResult:
    """Point ``production`` of ``name`` at ``version`` if every gate passed or an override reason is given.

    Records the promotion (tags on the version, ``models`` row, ``events`` row, the report as
    ``promotion/<ts_ms>_gate_report.json`` on the version's run). Without a pass or an override it
    records the refusal in ``events`` and raises ``PromotionRefused`` naming the failed gates.
    """
    engine = _engine(registry)
    version, ts_ms = str(version), _now_ms() if now_ms is None else now_ms
    override = (override or "").strip() or None
    if not actor.strip():
        raise ValueError("actor is required: who promotes")
    target = registry.version(name, version)  # ModelNotFoundError before anything is recorded
    current = registry.production_version(name)
    before = current.version if current is not None else None
    if before == version:
        return PromotionResult(name, version, before, "unchanged", None, target.promotion)
    base = {
        "name": name,
        "version": version,
        "actor": actor,
        "ts_ms": ts_ms,
        "production_before": before,
        "gates": report.to_dict(),
    }
    if not report.passed and override is None:
        model_catalog.append_event(engine, "model.promotion_refused", EVENT_SOURCE, base, ts_ms=ts_ms)
        raise PromotionRefused(name, version, report)
    kind: Literal["promote", "override"] = "promote" if report.passed else "override"
    report_uri = None
    if target.run_id:
        report_uri = registry.log_run_json(
            name, version, f"promotion/{ts_ms}_gate_report.json", report.to_dict()
        )
    record = {
        "kind": kind,
        "actor": actor,
        "ts_ms": str(ts_ms),
        "gates_passed": str(report.passed).lower(),
        "failed_gates": ",".join(report.failed),
        "override": override or "",
        "report_uri": report_uri or "",
    }
    registry.set_version_tags(name, version, {PROMOTION_TAG_PREFIX + k: v for k, v in record.items()})
    registry.set_production(name, version)
    payload = {**base, "kind": kind, "override": override, "report_uri": report_uri}
    model_catalog.append_event(engine, "model.promoted", EVENT_SOURCE, payload, ts_ms=ts_ms)
    return PromotionResult(name, version, before, kind, report_uri, record)


def rollback(
    registry: ModelRegistry, name: str, *, actor: str, reason: str | None = None, now_ms: int | None = None
) -> PromotionResult:
    """Move ``production`` of ``name`` back to the version it replaced, recorded like a promotion.

    Raises RejectedError when nothing is in production or the production version replaced none.
    """
    engine = _engine(registry)
    ts_ms = _now_ms() if now_ms is None else now_ms
    if not actor.strip():
        raise ValueError("actor is required: who rolls back")
    current = registry.production_version(name)
    if current is None:
        raise RejectedError(f"{name} has no production version to roll back")
    previous = registry.previous_production(name)
    if previous is None:
        raise RejectedError(f"{name} version {current.version} replaced no earlier production version")
    record = {
        "kind": "rollback",
        "actor": actor,
        "ts_ms": str(ts_ms),
        "rolled_back_from": current.version,
        "override": (reason or "").strip(),
    }
    tags = {PROMOTION_TAG_PREFIX + k: v for k, v in record.items()}
    registry.set_version_tags(name, previous.version, tags)
    registry.set_production(name, previous.version, record_previous=False)
    payload = {
        "name": name,
        "version": previous.version,
        "rolled_back_from": current.version,
        "actor": actor,
        "reason": reason,
        "ts_ms": ts_ms,
    }
    model_catalog.append_event(engine, "model.rolled_back", EVENT_SOURCE, payload, ts_ms=ts_ms)
    return PromotionResult(name, previous.version, current.version, "rollback", None, record)


# --- stored inputs --------------------------------------------------------------------------------


def load_gates_input(registry: ModelRegistry, name: str, version: str | int) -> GatesInput:
    """Read ``gates_input.json`` of the version's run; RejectedError when it has none."""
    data = registry.read_run_json(name, str(version), GATES_INPUT_FILE)
    if data is None:
        raise RejectedError(
            f"{name} version {version} has no {GATES_INPUT_FILE} on its run: log it with "
            "ModelRegistry.log_model(..., gates_input=GatesInput(...).model_dump(mode='json'))"
        )
    return GatesInput.model_validate(data)


def evaluate_stored(
    registry: ModelRegistry, name: str, version: str | int, cfg: PromotionConfig
) -> GateReport:
    """Evaluate the gates on the inputs stored with the version (``gates_input.json``)."""
    gi = load_gates_input(registry, name, version)
    return evaluate_gates(gi.candidate, gi.baselines, cfg)


def resolve_version(registry: ModelRegistry, name: str, version: str | None) -> ModelVersionInfo:
    """Return the given version of ``name``, or its newest when ``version`` is None."""
    if version is not None:
        return registry.version(name, version)
    latest = registry.latest_version(name)
    if latest is None:
        raise RejectedError(f"no registered model named {name!r}")
    return latest


def promote_stored(
    registry: ModelRegistry,
    name: str,
    version: str | None,
    *,
    cfg: PromotionConfig,
    override: str | None = None,
    actor: str,
) -> tuple[GateReport, PromotionResult]:
    """Evaluate the stored gate inputs of a version (default: the newest) and promote it."""
    info = resolve_version(registry, name, version)
    report = evaluate_stored(registry, name, info.version, cfg)
    return report, promote(registry, name, info.version, report, override=override, actor=actor)
