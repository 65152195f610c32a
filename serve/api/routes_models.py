"""Model registry endpoints: ``GET /api/models`` and ``GET /api/models/{name}`` (MLflow, read-only)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request

from serve.api.dto import ModelDTO, ModelSummaryDTO, ModelVersionDTO
from serve.api.routes_common import AUTH

if TYPE_CHECKING:
    from storage.registry import ModelRegistry

__all__ = ["registry_of", "router"]

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
