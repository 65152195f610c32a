"""Model registry endpoints (read-only): ``GET /api/models``, ``GET /api/models/promotions`` and
``GET /api/models/{name}``.

``/api/models/promotions`` lists the recorded changes of production from ``events``: the promotions,
overrides and rollbacks of ``tune.promote`` and the alias moves made in the MLflow UI that
``tune.promotion_watch`` noticed (source ``mlflow-ui``, with that version's gate results and a
warning when a gate failed). It is declared before ``/models/{name}``, which would otherwise take
"promotions" for a model name.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from serve.api.dto import ModelDTO, ModelSummaryDTO, ModelVersionDTO
from serve.api.routes_common import AUTH, EngineDep, json_object
from storage.schema import events

if TYPE_CHECKING:
    from storage.registry import ModelRegistry

__all__ = ["PromotionDTO", "registry_of", "router"]

router = APIRouter(prefix="/api", tags=["models"], **AUTH)
_OPEN_LOCK = threading.Lock()


def registry_of(request: Request) -> ModelRegistry:
    """The app's MLflow registry, opened at first use (MLflow is slow to import)."""
    state = request.app.state
    with _OPEN_LOCK:
        if state.registry is None:
            from storage.registry import ModelRegistry

            config = state.config
            state.registry = ModelRegistry(config.tracking_uri, artifact_root=config.data_dir / "mlartifacts")
    registry: ModelRegistry = state.registry
    return registry


@router.get("/models", response_model=list[ModelSummaryDTO])
def list_models(request: Request) -> list[ModelSummaryDTO]:
    """Every registered model: how many versions, which is production and which it replaced."""
    registry = registry_of(request)
    out = []
    for name in registry.registered_names():
        versions = registry.versions(name)
        production = next((v.version for v in versions if v.is_production), None)
        previous = next((v.version for v in versions if "previous" in v.aliases), None)
        out.append(
            ModelSummaryDTO(name=name, versions=len(versions), production=production, previous=previous)
        )
    return out


#: ``events`` kinds that change which version is production (as ``tune.promotion_watch.PROMOTION_KINDS``).
PROMOTION_KINDS = ("model.promoted", "model.rolled_back")


class PromotionDTO(BaseModel):
    """One recorded change of a model's production version."""

    name: str
    version: str
    ts_ms: int = Field(description="when it was recorded, epoch ms (an MLflow UI move: when it was noticed)")
    source: str = Field(
        description="gates: every gate passed; override: promoted despite failed gates, with a reason; "
        "rollback; mlflow-ui: the alias was moved in the MLflow UI, outside the gates"
    )
    gates_passed: bool | None = Field(description="null: no gate results (a rollback, or none stored)")
    gates: dict[str, Any] | None = Field(description="the gate report: candidate, passed, failed, gates[]")
    warning: str | None = Field(description="why this promotion deserves a look (failed gates), else null")
    actor: str | None = None
    replaced: str | None = Field(None, description="the production version before this one, when known")


def _source(kind: str, source: str, payload: dict[str, Any]) -> str:
    if kind == "model.rolled_back":
        return "rollback"
    if source == "mlflow-ui":
        return "mlflow-ui"
    return {"promote": "gates", "override": "override"}.get(
        str(payload.get("kind")), str(payload.get("kind"))
    )


def _promotion(row: Any) -> PromotionDTO:
    p = json_object(row.payload)
    gates = p.get("gates") if isinstance(p.get("gates"), dict) else None
    passed = p.get("gates_passed", gates.get("passed") if gates else None)
    source = _source(row.kind, row.source, p)
    warning = p.get("warning")
    if source == "override" and gates is not None and not warning:
        failed = ", ".join(str(g) for g in gates.get("failed", []))
        warning = f"promoted by override ({p.get('override')}) despite failed gates: {failed}"
    before = p.get("production_before", p.get("rolled_back_from"))
    return PromotionDTO(
        name=str(p.get("name", "")), version=str(p.get("version", "")), ts_ms=int(p.get("ts_ms") or row.ts),
        source=source, gates_passed=passed if isinstance(passed, bool) else None, gates=gates, warning=warning,
        actor=p.get("actor"), replaced=None if before is None else str(before),
    )  # fmt: skip


@router.get("/models/promotions", response_model=list[PromotionDTO])
def list_promotions(
    engine: EngineDep,
    name: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$", description="only this model")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")] = 50,
) -> list[PromotionDTO]:
    """Recorded promotions, overrides, rollbacks and MLflow UI moves of production, newest first."""
    q = sa.select(events.c.ts, events.c.kind, events.c.source, events.c.payload).where(
        events.c.kind.in_(PROMOTION_KINDS)
    )
    if name is not None:
        q = q.where(events.c.payload["name"].as_string() == name)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(events.c.ts.desc(), events.c.id.desc()).limit(limit)).all()
    return [_promotion(r) for r in rows]


@router.get("/models/{name}", response_model=ModelDTO, responses={404: {"description": "no such model"}})
def get_model(request: Request, name: str) -> ModelDTO:
    """The versions of one registered model, oldest first, with metrics, aliases and last promotion."""
    versions = registry_of(request).versions(name)
    if not versions:
        raise HTTPException(404, detail=f"no registered model named {name!r}")
    return ModelDTO(
        name=name,
        versions=[
            ModelVersionDTO(
                version=v.version,
                aliases=list(v.aliases),
                created_at_ms=v.created_at_ms,
                run_id=v.run_id,
                model_id=v.model_id,
                metrics=dict(v.metrics),
                label_spec_hash=v.label_spec_hash,
                feature_schema_version=v.feature_schema_version,
                promotion=v.promotion,
            )  # fmt: skip
            for v in versions
        ],
    )
