"""The API's FastAPI app: ``create_app(ApiConfig(...), routers=[...])``.

The app holds one SQLAlchemy engine (``app.state.engine``), the token file's path and the config;
routers read them from ``request.app.state``. Other routers (WebSocket, ``/predict``, dashboard
pages) are passed in and included as they are; they protect themselves with ``require_token``.
The OpenAPI schema is at ``/openapi.json``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from core.killswitch import KillSwitchConfig
from serve.api.auth import ensure_token
from storage import db

__all__ = ["ApiConfig", "create_app"]


class ApiConfig(BaseModel):
    """What the API needs: where the database, bus, MLflow store, data folder and token file are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field(description="SQLAlchemy URL of the platform's database")
    redis_url: str | None = Field(None, description="Redis URL of the bus; None: the in-process bus")
    tracking_uri: str = Field(description="MLflow tracking (and registry) URI")
    data_dir: Path = Field(description="the platform's data folder (the kill file lives there)")
    token_file: Path = Field(description="file holding the API token (created mode 0600 at first start)")
    bind_host: str = Field("127.0.0.1", description="address the server binds to (loopback by default)")
    killswitch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)


def create_app(config: ApiConfig, *, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """Build the API app on ``config`` and include ``routers`` after the REST routes.

    The token file is created now when it does not exist; the database must be at the current schema.
    """
    from serve.api.routes_control import router as control_router
    from serve.api.routes_models import router as models_router
    from serve.api.routes_rl import router as rl_router
    from serve.api.routes_state import health_router
    from serve.api.routes_state import router as state_router
    from serve.api.routes_trading import router as trading_router

    ensure_token(config.token_file)
    engine = db.make_engine(config.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="raytrade API",
        version="1",
        description="State of the trading platform, and the operator's controls (spec 001 §19).",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.engine = engine
    app.state.token_file = config.token_file
    app.state.mutation_lock = threading.Lock()
    app.state.registry = None
    for r in (
        health_router,
        state_router,
        models_router,
        control_router,
        trading_router,
        rl_router,
        *routers,
    ):
        app.include_router(r)
    return app
