"""Trading state, account and runtime settings: ``/api/trading``, ``/api/account``, ``/api/settings``.

The API records; the running book acts. Every mutation is an ``events`` row the books read at most
a second later (``storage.trading_control``), and each needs an ``Idempotency-Key`` (``routes_control.
idempotent``: one row per key, the first answer repeated).

- ``POST /api/trading/start``: entries allowed again; refused with 409 while the kill switch is active
  (its stored state, or the kill file): resume the kill switch first.
- ``POST /api/trading/stop-entries``: no new entries; open positions stay and are managed (exits,
  SL/TP, the daily loss limit).
- ``POST /api/trading/stop``: no new entries, and the running book flattens every position once;
  ``start`` resumes.
- ``GET /api/account``: the newest ``account_snapshots`` row (``storage.account``: both books write one
  per minute close, the live book the venue's own account), with its mode; without one, the newest
  account a book recorded (``account.snapshot`` events rows, which the paper book writes with each
  ``account_updates`` message, at most once a second), else the paper book's last state snapshot
  (``execution.state``); nulls when none was recorded.
- ``PUT /api/settings``: the runtime-safe settings (``storage.trading_control.RUNTIME_SETTINGS``):
  ``max_positions``, ``max_entry_delay_ms``, ``daily_loss_limit_pct``. Each is an upper bound a book
  takes as ``min(its config, value)``, so a setting can only make a book more careful; ``null`` gives
  the key back to the config. Any other key is a 422 naming it. ``GET /api/settings/runtime`` reads them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serve.api.routes_common import AUTH, EngineDep, json_object
from serve.api.routes_control import KEY_REUSED, SOURCE, IdempotencyKey, idempotent
from storage import killswitch_store, trading_control
from storage.account import latest_snapshot
from storage.schema import events

__all__ = [
    "ACCOUNT_KIND",
    "AccountDTO",
    "RuntimeSettingsDTO",
    "SettingsUpdate",
    "TradingRequest",
    "TradingStateDTO",
    "router",
]

ACCOUNT_KIND = trading_control.ACCOUNT_KIND
STATE_EVENT = "execution.state"
router = APIRouter(prefix="/api", tags=["trading"], **AUTH)


class TradingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="why, for the record")


class TradingStateDTO(BaseModel):
    state: Literal["running", "entries_stopped", "stopped"]
    since_ms: int | None = Field(description="when the state was set; null: never set (running)")
    source: str | None
    reason: str | None


class AccountDTO(BaseModel):
    ts_ms: int | None
    mode: str | None
    wallet: float | None
    equity: float | None
    available: float | None
    unrealized_pnl: float | None
    margin_used: float | None
    positions: int | None
    source: str | None = Field(
        None, description="the book that recorded it (execution:<mode>:<session>), or account_snapshots"
    )
    margin_ratio: float | None = Field(None, description="maintenance margin / margin balance")


class SettingsUpdate(BaseModel):
    """A subset of the runtime settings; null gives a key back to the book's config."""

    model_config = ConfigDict(extra="forbid")

    max_positions: int | None = Field(None, ge=1, le=200, description="open positions at most")
    max_entry_delay_ms: int | None = Field(
        None, ge=1, le=3_600_000, description="an entry must go within this of its bar's close, ms"
    )
    daily_loss_limit_pct: float | None = Field(
        None, gt=0, le=1, description="daily loss (fraction of the day's start equity) that flattens"
    )


class RuntimeSettingsDTO(BaseModel):
    max_positions: int | None
    max_entry_delay_ms: int | None
    daily_loss_limit_pct: float | None
    updated_ms: int | None
    source: str | None
    note: str = Field(
        "each value is an upper bound: a book applies min(its config, value); null: the config's",
        description="how the books apply these",
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _state_dto(state: trading_control.TradingState) -> TradingStateDTO:
    return TradingStateDTO(
        state=state.state, since_ms=state.since_ms, source=state.source, reason=state.reason
    )


def _settings_dto(stored: trading_control.StoredSettings) -> RuntimeSettingsDTO:
    return RuntimeSettingsDTO(**stored.values, updated_ms=stored.updated_ms, source=stored.source)


@router.get("/trading", response_model=TradingStateDTO)
def trading_state(engine: EngineDep) -> TradingStateDTO:
    """The trading state (``running`` when never set)."""
    return _state_dto(trading_control.latest_state(engine))


def _set_state(
    request: Request, engine: sa.Engine, state: str, body: TradingRequest | None, key: str
) -> JSONResponse:
    body = body or TradingRequest()

    def act() -> tuple[int, BaseModel]:
        if state == "running":
            stored = killswitch_store.latest_state(engine)
            path = killswitch_store.kill_file(request.app.state.config.data_dir.resolve())
            if (stored is not None and stored.state.active) or path.exists():
                raise HTTPException(
                    409, detail="the kill switch is active: resume it (POST /api/killswitch) first"
                )
        return 200, _state_dto(trading_control.record_state(engine, state, _now_ms(), SOURCE, body.reason))

    return idempotent(request, engine, key, body, act)


_STATE_RESPONSES: dict[int | str, dict[str, Any]] = {**KEY_REUSED}


@router.post("/trading/start", response_model=TradingStateDTO,
             responses={409: {"description": "the kill switch is active, or the key was reused"}})  # fmt: skip
def trading_start(
    request: Request, engine: EngineDep, idempotency_key: IdempotencyKey, body: TradingRequest | None = None
) -> JSONResponse:
    """Allow entries again (refused while the kill switch is active)."""
    return _set_state(request, engine, "running", body, idempotency_key)


@router.post("/trading/stop-entries", response_model=TradingStateDTO, responses=_STATE_RESPONSES)
def trading_stop_entries(
    request: Request, engine: EngineDep, idempotency_key: IdempotencyKey, body: TradingRequest | None = None
) -> JSONResponse:
    """No new entries; open positions stay and are managed (exits, protection)."""
    return _set_state(request, engine, "entries_stopped", body, idempotency_key)


@router.post("/trading/stop", response_model=TradingStateDTO, responses=_STATE_RESPONSES)
def trading_stop(
    request: Request, engine: EngineDep, idempotency_key: IdempotencyKey, body: TradingRequest | None = None
) -> JSONResponse:
    """No new entries, and the running book flattens every position (``start`` resumes)."""
    return _set_state(request, engine, "stopped", body, idempotency_key)


def _account_of_state(payload: Mapping[str, Any], ts: int, source: str) -> AccountDTO:
    """The account of a paper book's ``execution.state`` snapshot (the simulator's account array)."""
    from core.sim import kernel as k

    acct = payload.get("acct") or []

    def at(i: int) -> float | None:
        v = acct[i] if i < len(acct) else None
        return float(v) if isinstance(v, int | float) else None

    equity, used = at(k.A_EQUITY), at(k.A_USED_MARGIN)
    count = at(k.A_OPEN_POSITIONS)
    mode = source.split(":")[1] if source.count(":") >= 2 else None
    return AccountDTO(
        ts_ms=ts, mode=mode, wallet=at(k.A_WALLET), equity=equity,
        available=None if equity is None or used is None else equity - used,
        unrealized_pnl=at(k.A_UNREALIZED), margin_used=used,
        positions=None if count is None else int(count), source=source,
    )  # fmt: skip


@router.get("/account", response_model=AccountDTO)
@router.get("/account/latest", response_model=AccountDTO, include_in_schema=False)  # spec 001 §19.1's name
def account(engine: EngineDep) -> AccountDTO:
    """The newest account a running book recorded; nulls where no book recorded one.

    The newest by time of: the ``account_snapshots`` row (each book, once a minute; the live book's
    from the venue), the paper book's ``account.snapshot`` event (once a second, with the position
    count) and its ``execution.state`` snapshot. A tie goes to the event (it counts positions).
    """
    with engine.connect() as conn:
        latest = latest_snapshot(conn)
        rows = {
            kind: conn.execute(
                sa.select(events.c.id, events.c.ts, events.c.source, events.c.payload)
                .where(events.c.kind == kind)
                .order_by(events.c.id.desc())
                .limit(1)
            ).first()
            for kind in (ACCOUNT_KIND, STATE_EVENT)
        }
    snap, state = rows[ACCOUNT_KIND], rows[STATE_EVENT]
    event = snap if snap is not None and (state is None or snap.id > state.id) else state
    if latest is not None and (event is None or int(latest["ts"]) > int(event.ts)):
        return AccountDTO(
            ts_ms=int(latest["ts"]), mode=latest["mode"], wallet=latest["wallet_balance"],
            equity=latest["equity"], available=latest["available_margin"],
            unrealized_pnl=latest["unrealized_pnl"], margin_used=latest["used_margin"], positions=None,
            source="account_snapshots", margin_ratio=latest["margin_ratio"],
        )  # fmt: skip
    if event is not None and event is snap:
        p = json_object(event.payload)
        fields = {f: p.get(f) for f in AccountDTO.model_fields if f not in ("ts_ms", "source")}
        return AccountDTO(ts_ms=int(event.ts), source=str(event.source), **fields)
    if event is not None:
        return _account_of_state(json_object(event.payload), int(event.ts), str(event.source))
    return AccountDTO(ts_ms=None, mode=None, wallet=None, equity=None, available=None, unrealized_pnl=None,
                      margin_used=None, positions=None)  # fmt: skip


@router.get("/settings/runtime", response_model=RuntimeSettingsDTO)
def runtime_settings(engine: EngineDep) -> RuntimeSettingsDTO:
    """The runtime settings the books apply (every one null: the books' configs)."""
    return _settings_dto(trading_control.latest_settings(engine))


@router.put("/settings", response_model=RuntimeSettingsDTO, responses=KEY_REUSED)
def put_settings(
    request: Request, engine: EngineDep, body: SettingsUpdate, idempotency_key: IdempotencyKey
) -> JSONResponse:
    """Change runtime settings (the body's keys only); any key but the runtime-safe ones is a 422."""
    changes = body.model_dump(include=body.model_fields_set)
    if not changes:
        raise HTTPException(422, detail=[{"loc": ["body"], "msg": "give at least one of: "
                                          + ", ".join(trading_control.RUNTIME_SETTINGS), "type": "missing"}])  # fmt: skip

    def act() -> tuple[int, BaseModel]:
        return 200, _settings_dto(trading_control.record_settings(engine, changes, _now_ms(), SOURCE))

    return idempotent(request, engine, idempotency_key, body, act)
