"""Mutating endpoints: the kill switch, promote, rollback and job enqueueing.

Each needs an ``Idempotency-Key`` header. The first request with a key does the work and its
response is stored as an ``events`` row (kind ``api.request``, the key in the payload); a request
repeating the key gets that stored response and changes nothing (a double click sends one kill).
Mutations run one at a time in an app (a lock), so two requests with one key cannot both run.

Promotion goes through the gates, which run in the batch worker: promote and rollback enqueue a
``promote`` job (``storage.jobs``) and answer its id; the job's progress is at ``/api/training/jobs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core.killswitch import KillSwitch
from serve.api.dto import (
    JobQueuedDTO,
    JobRequest,
    KillSwitchRequest,
    KillSwitchResultDTO,
    PromoteRequest,
    RollbackRequest,
)
from serve.api.routes_common import AUTH, EngineDep, kill_switch_dto
from serve.api.routes_models import registry_of
from storage import jobs
from storage import killswitch_store as store
from storage.schema import events

__all__ = ["REQUEST_KIND", "router"]

REQUEST_KIND = "api.request"
SOURCE = "api"
router = APIRouter(prefix="/api", tags=["control"], **AUTH)
IdempotencyKey = Annotated[
    str,
    Header(alias="Idempotency-Key", min_length=1, max_length=200, description="one per intended action"),
]
KEY_REUSED: dict[int | str, dict[str, Any]] = {
    409: {"description": "the Idempotency-Key was used for another request"}
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _stored(conn: sa.Connection, key: str) -> dict[str, Any] | None:
    q = (
        sa.select(events.c.payload)
        .where(events.c.kind == REQUEST_KIND, events.c.payload["key"].as_string() == key)
        .order_by(events.c.id)
        .limit(1)
    )
    payload = conn.execute(q).scalar()
    return None if payload is None else dict(payload)


def idempotent(
    request: Request,
    engine: sa.Engine,
    key: str,
    body: BaseModel | None,
    act: Callable[[], tuple[int, BaseModel]],
) -> JSONResponse:
    """Run ``act`` once per ``key``: store its (status, response) and answer it again for the same key."""
    with request.app.state.mutation_lock:
        with engine.connect() as conn:
            stored = _stored(conn, key)
        where = {"method": request.method, "path": request.url.path}
        if stored is not None:
            if {"method": stored.get("method"), "path": stored.get("path")} != where:
                raise HTTPException(409, detail="this Idempotency-Key was used for another request")
            return JSONResponse(stored["body"], status_code=int(stored["status_code"]))
        status_code, response = act()
        content = response.model_dump(mode="json")
        payload = {"key": key, **where, "status_code": status_code, "body": content,
                   "request": None if body is None else body.model_dump(mode="json")}  # fmt: skip
        with engine.begin() as conn:
            conn.execute(sa.insert(events).values(ts=_now_ms(), kind=REQUEST_KIND, source=SOURCE, symbol=None,
                                                  payload=payload))  # fmt: skip
        return JSONResponse(content, status_code=status_code)


def _event_json(e: Any) -> dict[str, Any]:
    return {
        "kind": e.event_kind,
        "reason": e.reason,
        "detail": e.detail,
        "source": e.source,
        "ts_ms": e.ts_ms,
    }


@router.post(
    "/killswitch",
    response_model=KillSwitchResultDTO,
    responses={
        **KEY_REUSED,
        409: {"model": KillSwitchResultDTO, "description": "resume refused, or key reused"},
    },
)
def killswitch(
    request: Request, engine: EngineDep, body: KillSwitchRequest, idempotency_key: IdempotencyKey
) -> JSONResponse:
    """Kill (``active: true``: kill file + recorded events, as ``raytrade kill``) or resume (``false``:
    refused with 409 while a condition other than the kill file holds, as ``raytrade resume``).

    With ``close_positions`` the running system cancels every order and flattens when it reads the
    state; the API itself sends nothing to the venue.
    """
    config = request.app.state.config
    path = store.kill_file(config.data_dir.resolve())

    def act() -> tuple[int, BaseModel]:
        now = _now_ms()
        stored = store.latest_state(engine)
        switch = KillSwitch(config.killswitch, None if stored is None else stored.state)
        applied = True
        if body.active:
            store.create_kill_file(path, now, SOURCE, body.reason)
            happened = switch.operator(now, body.close_positions, SOURCE, body.reason) + switch.file(
                now, True
            )
        elif [c for c in switch.holding(now) if c.reason != "file"]:
            happened, applied = switch.resume(now, SOURCE, body.reason), False
        else:
            store.remove_kill_file(path)
            happened = switch.file(now, path_present=False) + switch.resume(now, SOURCE, body.reason)
        store.record(engine, store.event_rows(happened, switch.state()))
        result = KillSwitchResultDTO(applied=applied, events=[_event_json(e) for e in happened],
                                     kill_switch=kill_switch_dto(engine), kill_file=path.exists())  # fmt: skip
        return (200 if applied else 409), result

    return idempotent(request, engine, idempotency_key, body, act)


def _enqueue_promote(engine: sa.Engine, name: str, config: dict[str, Any]) -> tuple[int, BaseModel]:
    job_id = jobs.enqueue(engine, "promote", {"name": name, **{k: v for k, v in config.items() if v}})
    return 202, JobQueuedDTO(job_id=job_id, kind="promote")


@router.post("/models/{name}/promote", response_model=JobQueuedDTO, status_code=202, responses=KEY_REUSED)
def promote(
    request: Request, engine: EngineDep, name: str, body: PromoteRequest, idempotency_key: IdempotencyKey
) -> JSONResponse:
    """Queue a ``promote`` job: the worker evaluates the version's gates and moves production if they pass."""
    config = body.model_dump(exclude_none=True)
    return idempotent(request, engine, idempotency_key, body, lambda: _enqueue_promote(engine, name, config))


@router.post(
    "/models/{name}/rollback",
    response_model=JobQueuedDTO,
    status_code=202,
    responses={409: {"description": "no earlier production version, or key reused"}},
)
def rollback(
    request: Request, engine: EngineDep, name: str, body: RollbackRequest, idempotency_key: IdempotencyKey
) -> JSONResponse:
    """Queue a ``promote`` job of the version production replaced (through the gates again)."""

    def act() -> tuple[int, BaseModel]:
        from storage.registry import RegistryError

        try:
            previous = registry_of(request).previous_production(name)
        except RegistryError as e:
            raise HTTPException(409, detail=f"cannot roll back {name!r}: {e}") from None
        if previous is None:
            raise HTTPException(409, detail=f"{name!r} has no earlier production version to roll back to")
        return _enqueue_promote(engine, name, {"version": previous.version, "actor": body.actor})

    return idempotent(request, engine, idempotency_key, body, act)


@router.post("/jobs", response_model=JobQueuedDTO, status_code=202, responses=KEY_REUSED)
def enqueue_job(
    request: Request, engine: EngineDep, body: JobRequest, idempotency_key: IdempotencyKey
) -> JSONResponse:
    """Queue a batch job (label, train, backtest, promote); the worker checks the config of its kind."""
    if body.kind == "promote" and not isinstance(body.config.get("name"), str):
        raise HTTPException(422, detail=[{"loc": ["body", "config", "name"], "msg": "a promote job needs the model name",
                                          "type": "missing"}])  # fmt: skip

    def act() -> tuple[int, BaseModel]:
        try:
            job_id = jobs.enqueue(engine, body.kind, body.config)
        except ValueError as e:
            raise HTTPException(
                422, detail=[{"loc": ["body", "config"], "msg": str(e), "type": "value_error"}]
            ) from None
        return 202, JobQueuedDTO(job_id=job_id, kind=body.kind)

    return idempotent(request, engine, idempotency_key, body, act)
