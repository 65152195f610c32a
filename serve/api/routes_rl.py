"""The RL agent's endpoints (spec 001 §25.5; issue #17), read-only, from ``rl_models`` and ``rl_decisions``:

- ``GET /api/rl/models``: every RL model (a registered checkpoint, ``storage.rl_registry``) with its
  metrics, production flag and decision summary;
- ``GET /api/rl/models/{model_id}``: one model;
- ``GET /api/rl/decisions``: the decision history, newest first (filters ``symbol``, ``model_id``,
  ``from``/``to`` epoch ms, ``limit``);
- ``GET /api/rl/decisions/stats``: per model over the same filters — the action distribution, how
  many decisions were executed, the mean confidence and the sum of ``pnl_result``.

``/decisions/stats`` is declared before anything that could take "stats" for a path parameter. Bad
input is a 422 naming the field. Promotion (``POST /api/rl/models/{id}/promote``) is not here: it
needs the §25.7 gates of the RL evaluation.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from serve.api.routes_common import AUTH, EngineDep, json_object
from storage.schema import rl_decisions, rl_models

__all__ = ["RLDecisionDTO", "RLModelDTO", "RLStatsDTO", "router"]

router = APIRouter(prefix="/api/rl", tags=["rl"], **AUTH)

ACTION_NAMES: tuple[str, ...] = ("HOLD", "LONG", "SHORT", "CLOSE")
MAX_TS_MS = 10**14
SymbolQ = Annotated[str | None, Query(pattern=r"^[A-Z0-9]{2,30}$", description="only this symbol")]
ModelIdQ = Annotated[
    str | None,
    Query(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._:-]+$", description="only this model"),
]
FromMs = Annotated[
    int | None, Query(alias="from", ge=0, le=MAX_TS_MS, description="from this time, epoch ms")
]
ToMs = Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS_MS, description="up to this time, epoch ms")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many rows, newest first")]


class RLStatsDTO(BaseModel):
    """What one RL model decided (over the filters asked)."""

    model_id: str | None = Field(description="null: decisions recorded without a model")
    decisions: int
    actions: dict[str, int] = Field(description="decisions by action name (HOLD, LONG, SHORT, CLOSE)")
    action_share: dict[str, float] = Field(description="the same as fractions of all decisions")
    executed: int = Field(description="decisions the books carried out")
    mean_confidence: float | None = Field(description="mean probability of the chosen action")
    pnl_result: float = Field(description="sum of the recorded results (USDT) of the decisions")
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None


class RLModelDTO(BaseModel):
    """One RL model (``rl_models``) and what it decided."""

    model_id: str
    symbol: str
    algorithm: str
    train_start_ms: int
    train_end_ms: int
    metrics: dict[str, Any]
    model_path: str | None = Field(description="models:/<name>/<version> of the MLflow registry")
    is_production: bool
    created_at_ms: int
    stats: RLStatsDTO


class RLDecisionDTO(BaseModel):
    """One decision of the RL agent (``rl_decisions``)."""

    id: int
    ts_ms: int
    symbol: str
    model_id: str | None
    action: int
    action_name: str
    confidence: float | None
    action_probs: dict[str, Any]
    value_estimate: float | None
    model_predictions: dict[str, Any]
    position_before: float | None
    position_after: float | None
    executed: bool
    pnl_result: float | None


def _window(from_ms: int | None, to_ms: int | None) -> None:
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise HTTPException(
            422, detail=[{"loc": ["query", "from"], "msg": "from is after to", "type": "value_error"}]
        )


def _filters(symbol: str | None, model_id: str | None, from_ms: int | None, to_ms: int | None) -> list[Any]:
    _window(from_ms, to_ms)
    c = rl_decisions.c
    out: list[Any] = []
    if symbol is not None:
        out.append(c.symbol == symbol)
    if model_id is not None:
        out.append(c.model_id == model_id)
    if from_ms is not None:
        out.append(c.ts >= from_ms)
    if to_ms is not None:
        out.append(c.ts <= to_ms)
    return out


def _stats(conn: sa.Connection, where: list[Any]) -> dict[str | None, RLStatsDTO]:
    c = rl_decisions.c
    q = (
        sa.select(
            c.model_id,
            c.action,
            sa.func.count(),
            sa.func.sum(sa.case((c.executed, 1), else_=0)),
            sa.func.sum(c.confidence),
            sa.func.count(c.confidence),
            sa.func.sum(c.pnl_result),
            sa.func.min(c.ts),
            sa.func.max(c.ts),
        )  # fmt: skip
        .where(*where)
        .group_by(c.model_id, c.action)
    )
    acc: dict[str | None, dict[str, Any]] = {}
    for model_id, action, n, executed, conf_sum, conf_n, pnl, first, last in conn.execute(q):
        a = acc.setdefault(model_id, {"n": 0, "actions": dict.fromkeys(ACTION_NAMES, 0), "executed": 0, "conf": 0.0,
                                      "conf_n": 0, "pnl": 0.0, "first": None, "last": None})  # fmt: skip
        a["n"] += int(n)
        a["actions"][ACTION_NAMES[int(action)]] += int(n)
        a["executed"] += int(executed or 0)
        a["conf"] += float(conf_sum or 0.0)
        a["conf_n"] += int(conf_n or 0)
        a["pnl"] += float(pnl or 0.0)
        a["first"] = int(first) if a["first"] is None else min(a["first"], int(first))
        a["last"] = int(last) if a["last"] is None else max(a["last"], int(last))
    return {
        m: RLStatsDTO(
            model_id=m,
            decisions=a["n"],
            actions=a["actions"],
            action_share={k: v / a["n"] for k, v in a["actions"].items()},
            executed=a["executed"],
            mean_confidence=a["conf"] / a["conf_n"] if a["conf_n"] else None,
            pnl_result=a["pnl"],
            first_ts_ms=a["first"],
            last_ts_ms=a["last"],
        )  # fmt: skip
        for m, a in acc.items()
    }


def _empty(model_id: str | None) -> RLStatsDTO:
    return RLStatsDTO(model_id=model_id, decisions=0, actions=dict.fromkeys(ACTION_NAMES, 0),
                      action_share=dict.fromkeys(ACTION_NAMES, 0.0), executed=0, mean_confidence=None, pnl_result=0.0)  # fmt: skip


def _model(r: Any, stats: RLStatsDTO) -> RLModelDTO:
    return RLModelDTO(model_id=r.model_id, symbol=r.symbol, algorithm=r.algorithm, train_start_ms=int(r.train_start),
                      train_end_ms=int(r.train_end), metrics=json_object(r.metrics), model_path=r.model_path,
                      is_production=bool(r.is_production), created_at_ms=int(r.created_at), stats=stats)  # fmt: skip


@router.get("/models", response_model=list[RLModelDTO])
def list_rl_models(engine: EngineDep, symbol: SymbolQ = None) -> list[RLModelDTO]:
    """Every RL model, newest first, with its decision summary."""
    q = sa.select(rl_models).order_by(rl_models.c.created_at.desc(), rl_models.c.model_id)
    if symbol is not None:
        q = q.where(rl_models.c.symbol == symbol)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        stats = _stats(conn, [])
    return [_model(r, stats.get(r.model_id) or _empty(r.model_id)) for r in rows]


@router.get("/decisions/stats", response_model=list[RLStatsDTO])
def rl_decision_stats(
    engine: EngineDep,
    symbol: SymbolQ = None,
    model_id: ModelIdQ = None,
    from_ms: FromMs = None,
    to_ms: ToMs = None,
) -> list[RLStatsDTO]:
    """Per model: action distribution, executed decisions, mean confidence, summed pnl_result."""
    where = _filters(symbol, model_id, from_ms, to_ms)
    with engine.connect() as conn:
        stats = _stats(conn, where)
    return [stats[k] for k in sorted(stats, key=lambda m: (m is None, m or ""))]


@router.get("/decisions", response_model=list[RLDecisionDTO])
def list_rl_decisions(
    engine: EngineDep,
    symbol: SymbolQ = None,
    model_id: ModelIdQ = None,
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    limit: Limit = 100,
) -> list[RLDecisionDTO]:
    """The RL agent's decisions, newest first."""
    c = rl_decisions.c
    q = sa.select(rl_decisions).where(*_filters(symbol, model_id, from_ms, to_ms))
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(c.ts.desc(), c.id.desc()).limit(limit)).all()
    return [
        RLDecisionDTO(
            id=int(r.id),
            ts_ms=int(r.ts),
            symbol=r.symbol,
            model_id=r.model_id,
            action=int(r.action),
            action_name=r.action_name,
            confidence=r.confidence,
            action_probs=json_object(r.action_probs),
            value_estimate=r.value_estimate,
            model_predictions=json_object(r.model_predictions),
            position_before=r.position_before,
            position_after=r.position_after,
            executed=bool(r.executed),
            pnl_result=r.pnl_result,
        )  # fmt: skip
        for r in rows
    ]


@router.get(
    "/models/{model_id}", response_model=RLModelDTO, responses={404: {"description": "no such RL model"}}
)
def get_rl_model(
    engine: EngineDep,
    model_id: Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._:-]+$")],
) -> RLModelDTO:
    """One RL model with its decision summary."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(rl_models).where(rl_models.c.model_id == model_id)).first()
        if row is None:
            raise HTTPException(404, detail=f"no RL model {model_id!r}")
        stats = _stats(conn, [rl_decisions.c.model_id == model_id])
    return _model(row, stats.get(model_id) or _empty(model_id))
