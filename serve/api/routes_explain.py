"""``GET /api/signals/{symbol}/{ts}/explain``: the top feature contributions of each model output for one
stored signal (spec 001 §6, §19; LightGBM ``pred_contrib`` via ``MultiTargetModel.contributions``).

- ``"source": "stored"``: the signal's ``explain`` carries ``"contributions"`` — the decider wrote
  them for an entry, computed by the Predictor right after the decision.
- ``"source": "on_demand"``: otherwise the signal's feature row is read back from ``features_1m`` (the
  132 features the ingest stored for that symbol and minute, the very row the Predictor was given)
  and the Predictor's ``explain`` computes them now, with the model version serving now (named in the
  answer; it may differ from the signal's ``model_version``, also answered).
- 404 naming why: no such signal, or no stored feature row for it (or of another feature schema).

The contributions are in each output's raw score space (e_mae/e_hold before clipping, p_tp in
log-odds): ``{target: {"base": float, "top": [{"feature", "value", "contribution"}, ...]}}``. The
computation goes to an ``ExplainFn``: the Serve Predictor (``predictor_explain_call(handle)``) or a
model held in this process (``model_explain_call``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, params
from pydantic import BaseModel, Field

from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import MultiTargetModel
from serve.api.routes_common import EngineDep, json_object
from storage.schema import features_1m, signals

__all__ = ["ExplainAnswer", "ExplainFn", "explain_router", "model_explain_call", "predictor_explain_call"]

#: Feature rows (k × 132) and top_k go in; ``{"model_version", "contributions": [one per row]}`` comes out.
ExplainFn = Callable[[np.ndarray, int], Awaitable[dict[str, Any]]]

MAX_TS_MS = 10**14
TOP_K = 5


def predictor_explain_call(handle: Any) -> ExplainFn:
    """Adapt a Serve ``DeploymentHandle`` of the Predictor (its ``explain`` method) to an ``ExplainFn``."""

    async def call(rows: np.ndarray, top_k: int) -> dict[str, Any]:
        answer: dict[str, Any] = await handle.explain.remote(rows, top_k)
        return answer

    return call


def model_explain_call(model: MultiTargetModel, version: str, *, num_threads: int = 1) -> ExplainFn:
    """An ``ExplainFn`` over a model held in this process (in a worker thread, off the event loop)."""

    async def call(rows: np.ndarray, top_k: int) -> dict[str, Any]:
        contributions = await asyncio.to_thread(
            model.contributions,
            rows,
            FEATURE_SCHEMA_VERSION,
            SCHEMA_HASH,
            top_k=top_k,
            num_threads=num_threads,
        )
        return {"model_version": version, "contributions": contributions}

    return call


class TopFeature(BaseModel):
    feature: str = Field(description="feature name (feature schema order)")
    value: float | None = Field(description="the row's value of the feature; null when missing")
    contribution: float = Field(description="its SHAP contribution to the output (raw score space)")


class TargetContributions(BaseModel):
    base: float = Field(description="the output's expected raw score (LightGBM's last pred_contrib column)")
    top: list[TopFeature] = Field(description="up to 5 features, by |contribution| descending")


class ExplainAnswer(BaseModel):
    symbol: str
    ts: int = Field(description="the signal's bar open time, epoch ms")
    model_version: str | None = Field(description="the model version that computed the contributions")
    signal_model_version: str | None = Field(description="the model version that made the signal")
    source: str = Field(description='"stored" (written by the decider) or "on_demand" (computed now)')
    contributions: dict[str, TargetContributions] = Field(description="per model output")


def _feature_row(conn: sa.Connection, symbol: str, ts: int) -> np.ndarray:
    row = conn.execute(
        sa.select(features_1m.c.schema_version, features_1m.c.features).where(
            features_1m.c.symbol == symbol, features_1m.c.ts == ts
        )
    ).first()
    if row is None:
        raise HTTPException(404, f"signal {symbol} {ts} has no contributions stored and no features_1m row "
                                 "to compute them from")  # fmt: skip
    if row.schema_version != FEATURE_SCHEMA_VERSION:
        raise HTTPException(404, f"signal {symbol} {ts}: its stored features are of schema v{row.schema_version}, "
                                 f"the model's are v{FEATURE_SCHEMA_VERSION}")  # fmt: skip
    values = json_object(row.features)
    missing = [n for n in FEATURE_NAMES if n not in values]
    if missing:
        raise HTTPException(404, f"signal {symbol} {ts}: its stored features lack {len(missing)} of "
                                 f"the {len(FEATURE_NAMES)}, e.g. {missing[:3]}")  # fmt: skip
    return np.array([[np.nan if values[n] is None else float(values[n]) for n in FEATURE_NAMES]], np.float64)


def explain_router(call: ExplainFn, *, dependencies: list[params.Depends] | None = None) -> APIRouter:
    """The router of ``GET /api/signals/{symbol}/{ts}/explain`` over ``call``."""
    router = APIRouter(
        prefix="/api", tags=["signals"], dependencies=dependencies or [],
        responses={404: {"description": "no such signal, or no data to explain it"},
                   401: {"description": "missing or wrong token"}},
    )  # fmt: skip

    @router.get("/signals/{symbol}/{ts}/explain", response_model=ExplainAnswer)
    async def signal_explain(
        engine: EngineDep,
        symbol: Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Z0-9]+$")],
        ts: Annotated[int, Path(ge=0, le=MAX_TS_MS, description="the signal's bar open time, epoch ms")],
    ) -> ExplainAnswer:
        """The top feature contributions of each model output for the signal of ``symbol`` at ``ts``."""

        def read() -> tuple[Any, np.ndarray | None]:
            with engine.connect() as conn:
                sig = conn.execute(
                    sa.select(signals.c.model_version, signals.c.explain).where(
                        signals.c.symbol == symbol, signals.c.ts == ts
                    )
                ).first()
                if sig is None:
                    raise HTTPException(404, f"no signal of {symbol} at {ts}")
                stored = json_object(sig.explain).get("contributions")
                return sig, None if stored else _feature_row(conn, symbol, ts)

        sig, features = await asyncio.to_thread(read)
        explain = json_object(sig.explain)
        if features is None:
            return ExplainAnswer(
                symbol=symbol, ts=ts, model_version=explain.get("contributions_model_version", sig.model_version),
                signal_model_version=sig.model_version, source="stored", contributions=explain["contributions"],
            )  # fmt: skip
        answer = await call(features, TOP_K)
        return ExplainAnswer(
            symbol=symbol, ts=ts, model_version=str(answer["model_version"]), signal_model_version=sig.model_version,
            source="on_demand", contributions=answer["contributions"][0],
        )  # fmt: skip

    return router
