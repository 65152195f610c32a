"""The RL agent's endpoints (spec 001 §25.5; issue #17), read-only, from ``rl_models`` and ``rl_decisions``:

- ``GET /api/rl/models``: every RL model (a registered checkpoint, ``storage.rl_registry``) with its
  metrics, production flag and decision summary;
- ``GET /api/rl/models/{model_id}``: one model;
- ``GET /api/rl/decisions``: the decision history, newest first (filters ``symbol``, ``model_id``,
  ``from``/``to`` epoch ms, ``limit``);
- ``GET /api/rl/decisions/stats``: per model over the same filters — the action distribution, how
  many decisions were executed, the mean confidence and the sum of ``pnl_result``.

``/decisions/stats`` is declared before anything that could take "stats" for a path parameter. Bad
input is a 422 naming the field.

``POST /api/rl/models/{model_id}/promote`` (``Idempotency-Key``, the ``idempotent`` pattern of
``routes_control``: a repeated key answers the stored response and changes nothing) judges the model's
registered version by the §25.7 gates (``core.rl_gates``, the code train-rl gates with) on what its
MLflow run recorded — ``evaluation.json``, else the run's ``eval_*``/``supervised_*`` metrics; nothing
is re-run. Gates pass, or an ``override_reason`` is given (recorded with the ``actor``): the
``production`` alias moves and ``rl_models.is_production`` with it (``storage.rl_registry.set_rl_production``;
the RL policy deployment swaps at its next poll), the version gets the ``raytrade.promotion.*`` tags, an
``events`` row ``rl_model.promoted`` holds the decision and the gate results, 200. Gates fail without an
override: ``rl_model.refused`` event, nothing moves, 409 with the same body. 404: no such model.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.jsonsafe import json_safe
from core.rl_gates import evaluate_rl_gates, promotion_decision, recorded_evaluation
from serve.api.routes_common import AUTH, EngineDep, json_object
from serve.api.routes_control import KEY_REUSED, IdempotencyKey, idempotent
from serve.api.routes_models import registry_of
from storage.schema import events, rl_decisions, rl_models

__all__ = ["RLDecisionDTO", "RLModelDTO", "RLPromoteRequest", "RLPromotionDTO", "RLStatsDTO", "router"]

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


# --- promotion ---------------------------------------------------------------------------------------

EVENT_PROMOTED = "rl_model.promoted"
EVENT_REFUSED = "rl_model.refused"
EVALUATION_FILE = "evaluation.json"
_MODEL_PATH = re.compile(r"^models:/(?P<name>[^/]+)/(?P<version>\d+)$")


class RLPromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(
        "api", min_length=1, max_length=100, pattern=r"\S", description="who promotes (recorded)"
    )
    override_reason: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        pattern=r"\S",
        description="promote despite failed gates, for this reason",
    )


class RLGateDTO(BaseModel):
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str


class RLPromotionDTO(BaseModel):
    """The decision on one promotion request (also the ``events`` row's payload)."""

    model_id: str
    name: str = Field(description="registered model (``<strategy>-rl``)")
    version: str
    kind: Literal["promote", "override", "refused"]
    promoted: bool
    gates_passed: bool
    failed_gates: list[str]
    gates: list[RLGateDTO]
    override_reason: str | None
    actor: str
    evidence: Literal["evaluation.json", "run metrics", "none"] = Field(
        description="what the gates judged: the run's evaluation.json, its metrics, or nothing recorded"
    )
    event_id: int
    ts_ms: int


def _gate_value(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@router.post(
    "/models/{model_id}/promote",
    response_model=RLPromotionDTO,
    responses={
        404: {"description": "no such RL model"},
        409: {
            "model": RLPromotionDTO,
            "description": "gates failed without an override, or the key was reused",
        },
        **{k: v for k, v in KEY_REUSED.items() if k != 409},
    },
)
def promote_rl_model(
    request: Request,
    engine: EngineDep,
    model_id: Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._:-]+$")],
    body: RLPromoteRequest,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    """Promote the RL model through the §25.7 gates of its recorded evaluation (module docstring)."""

    def act() -> tuple[int, BaseModel]:
        from storage.registry import PROMOTION_TAG_PREFIX, ModelNotFoundError, RegistryError
        from storage.rl_registry import set_rl_production

        with engine.connect() as conn:
            row = conn.execute(sa.select(rl_models).where(rl_models.c.model_id == model_id)).first()
        if row is None:
            raise HTTPException(404, detail=f"no RL model {model_id!r}")
        where = _MODEL_PATH.match(row.model_path or "")
        if where is None:
            raise HTTPException(
                409, detail=f"RL model {model_id!r} has no registered version ({row.model_path!r})"
            )
        name, version = where["name"], where["version"]
        registry = registry_of(request)
        try:
            info = registry.version(name, version)
            evaluation = registry.read_run_json(name, version, EVALUATION_FILE)
        except ModelNotFoundError:
            raise HTTPException(
                404, detail=f"RL model {model_id!r}: {name} version {version} is not in the registry"
            ) from None
        except RegistryError as e:
            raise HTTPException(409, detail=f"cannot read {name} version {version}: {e}") from None
        metrics, chosen, supervised = recorded_evaluation(evaluation, info.metrics)
        evidence = (
            "evaluation.json" if evaluation and "rl" in evaluation else "run metrics" if metrics else "none"
        )
        report = evaluate_rl_gates(metrics, chosen, supervised)
        decision = promotion_decision(report, override=body.override_reason, actor=body.actor)
        record = decision.record
        if decision.promote:
            try:
                set_rl_production(registry, name, version, engine=engine)
            except RegistryError as e:
                raise HTTPException(409, detail=f"cannot promote {name} version {version}: {e}") from None
            tags = {f"{PROMOTION_TAG_PREFIX}{k}": str(record[k]) for k in ("kind", "actor", "ts_ms")}
            tags[f"{PROMOTION_TAG_PREFIX}failed_gates"] = ",".join(report.failed)
            if record["override"]:
                tags[f"{PROMOTION_TAG_PREFIX}override"] = str(record["override"])
            registry.set_version_tags(name, version, tags)
        payload = {"model_id": model_id, "name": name, "version": version, "evidence": evidence,
                   "metrics": dict(metrics), "actions_chosen": chosen,
                   "supervised": supervised, **record}  # fmt: skip
        kind = EVENT_PROMOTED if decision.promote else EVENT_REFUSED
        with engine.begin() as conn:
            event_id = conn.execute(
                sa.insert(events)
                .values(
                    ts=int(time.time() * 1000),
                    kind=kind,
                    source="api",
                    symbol=row.symbol,
                    payload=json_safe(payload),
                )
                .returning(events.c.id)  # fmt: skip
            ).scalar_one()
        gates = [RLGateDTO(name=g.name, passed=g.passed, value=_gate_value(json_safe(g.value)),
                           threshold=_gate_value(json_safe(g.threshold)), reason=g.reason) for g in report.gates]  # fmt: skip
        answer = RLPromotionDTO(model_id=model_id, name=name, version=version, kind=decision.kind,
                                promoted=decision.promote, gates_passed=report.passed, failed_gates=report.failed,
                                gates=gates, override_reason=record["override"], actor=body.actor, evidence=evidence,
                                event_id=int(event_id), ts_ms=int(record["ts_ms"]))  # fmt: skip
        return (200 if decision.promote else 409), answer

    return idempotent(request, engine, idempotency_key, body, act)
