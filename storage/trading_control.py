"""The operator's trading state and runtime settings, as rows of the ``events`` table the books read.

Like the kill switch (``storage.killswitch_store``) the table is append-only and the newest row
(highest id) is the state:

- Trading state: rows of kind ``trading.start`` / ``trading.stop_entries`` / ``trading.stop`` whose
  payload holds ``{"state", "reason"}``. States: ``running``; ``entries_stopped`` (no new entries,
  open positions kept and managed: exits and protection run); ``stopped`` (no new entries and every
  position flattened by the running book, once per ``trading.stop`` row; ``start`` resumes). No row
  means ``running``.
- Runtime settings: rows of kind ``settings.update`` whose payload holds ``{"changes", "settings"}``
  (the change asked for and every setting after it). A setting is None when the book's own config
  applies. ``RUNTIME_SETTINGS`` are the keys a running book can apply at once and only to make
  itself more careful: each value is an upper bound the book takes as ``min(its config, value)``.

``read_controls(engine, after_id)`` is the books' one query: every ``killswitch.*``, ``trading.*`` and
``settings.update`` row after ``after_id`` (bounded by the id), reduced to the newest of each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import sqlalchemy as sa

from core.errors import MalformedMessage
from storage import killswitch_store
from storage.schema import events as events_table

__all__ = [
    "ACCOUNT_FIELDS",
    "ACCOUNT_KIND",
    "KIND_PREFIX",
    "RUNTIME_SETTINGS",
    "SETTINGS_KIND",
    "STATES",
    "STATE_KIND",
    "Controls",
    "StoredSettings",
    "TradingState",
    "account_row",
    "latest_settings",
    "latest_state",
    "read_controls",
    "record_settings",
    "record_state",
]

State = Literal["running", "entries_stopped", "stopped"]
STATES: Final = ("running", "entries_stopped", "stopped")
KIND_PREFIX = "trading."
#: A book's account as it publishes it on ``account.update`` (at most once a second, when it changed).
ACCOUNT_KIND = "account.snapshot"
ACCOUNT_FIELDS: Final = (
    "mode",
    "wallet",
    "equity",
    "available",
    "unrealized_pnl",
    "margin_used",
    "positions",
)
SETTINGS_KIND = "settings.update"
#: state → the kind of the row that sets it
STATE_KIND: Final[Mapping[str, str]] = {
    "running": "trading.start",
    "entries_stopped": "trading.stop_entries",
    "stopped": "trading.stop",
}
TRADING_KINDS: Final = frozenset(STATE_KIND.values())
#: The settings a running book applies at once, each as an upper bound on its configured value
#: (it can only tighten): key → (type, description).
RUNTIME_SETTINGS: Final[Mapping[str, tuple[type, str]]] = {
    "max_positions": (int, "open positions at most (new entries only; held positions stay)"),
    "max_entry_delay_ms": (int, "an entry must go within this of its decision bar's close, ms"),
    "daily_loss_limit_pct": (float, "daily loss (fraction of the day's start equity) that flattens"),
}


@dataclass(frozen=True, slots=True)
class TradingState:
    """The trading state of the newest ``trading.*`` row (``running`` with no row: ``id`` 0)."""

    state: State
    since_ms: int | None
    source: str | None
    reason: str | None
    id: int = 0


@dataclass(frozen=True, slots=True)
class StoredSettings:
    """The runtime settings of the newest ``settings.update`` row (every key; None: the config's)."""

    values: dict[str, Any]
    updated_ms: int | None
    source: str | None
    id: int = 0


@dataclass(frozen=True, slots=True)
class Controls:
    """The newest control rows after some id: each None when no row of its kind came."""

    last_id: int
    kill: killswitch_store.StoredState | None
    trading: TradingState | None
    settings: StoredSettings | None


def _payload(value: Any) -> Mapping[str, Any]:
    payload = json.loads(value) if isinstance(value, str | bytes) else value
    if not isinstance(payload, Mapping):
        raise MalformedMessage("bad_shape", "control row payload is not an object", value)
    return payload


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database gave no id for the events row just written")
    return int(key[0])


def _trading_kinds() -> sa.ColumnElement[bool]:
    """The ``trading.*`` rows, by their exact kinds (the (kind, ts) index serves an IN, whatever the collation)."""
    return events_table.c.kind.in_(list(STATE_KIND.values()))


def _trading(row: Any) -> TradingState:
    payload = _payload(row.payload)
    state = payload.get("state")
    if state not in STATES:
        raise MalformedMessage("bad_value", f"{row.kind} row with state {state!r}", payload)
    reason = payload.get("reason")
    return TradingState(cast(State, state), int(row.ts), str(row.source), None if reason is None else str(reason),
                        int(row.id))  # fmt: skip


def _settings(row: Any) -> StoredSettings:
    payload = _payload(row.payload)
    values = payload.get("settings")
    if not isinstance(values, Mapping):
        raise MalformedMessage("bad_shape", f"{row.kind} row without a settings object", payload)
    return StoredSettings(clean_settings(values), int(row.ts), str(row.source), int(row.id))


def clean_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every runtime setting of ``values`` in its type (None when absent); unknown keys are dropped."""
    out: dict[str, Any] = {}
    for key, (kind, _) in RUNTIME_SETTINGS.items():
        v = values.get(key)
        out[key] = None if v is None or isinstance(v, bool) else kind(v)
    return out


def account_row(ts_ms: int, source: str, account: Mapping[str, Any]) -> dict[str, Any]:
    """The ``account.snapshot`` events row of a book's account (``ACCOUNT_FIELDS``)."""
    return {"ts": int(ts_ms), "kind": ACCOUNT_KIND, "source": source, "symbol": None,
            "payload": {f: account.get(f) for f in ACCOUNT_FIELDS}}  # fmt: skip


def latest_state(engine: sa.Engine) -> TradingState:
    """The trading state of the newest ``trading.*`` row; ``running`` when there is none."""
    q = (
        sa.select(events_table.c.id, events_table.c.ts, events_table.c.kind, events_table.c.source,
                  events_table.c.payload)
        .where(_trading_kinds())
        .order_by(events_table.c.id.desc())
        .limit(1)
    )  # fmt: skip
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return TradingState("running", None, None, None) if row is None else _trading(row)


def latest_settings(engine: sa.Engine) -> StoredSettings:
    """The runtime settings of the newest ``settings.update`` row; every one None when there is none."""
    q = (
        sa.select(events_table.c.id, events_table.c.ts, events_table.c.kind, events_table.c.source,
                  events_table.c.payload)
        .where(events_table.c.kind == SETTINGS_KIND)
        .order_by(events_table.c.id.desc())
        .limit(1)
    )  # fmt: skip
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return StoredSettings(clean_settings({}), None, None) if row is None else _settings(row)


def record_state(engine: sa.Engine, state: str, ts_ms: int, source: str, reason: str | None) -> TradingState:
    """Append the row that sets ``state``; return the state as stored."""
    if state not in STATES:
        raise ValueError(f"unknown trading state {state!r}; expected one of {', '.join(STATES)}")
    row = {"ts": int(ts_ms), "kind": STATE_KIND[state], "source": source, "symbol": None,
           "payload": {"state": state, "reason": reason}}  # fmt: skip
    with engine.begin() as conn:
        new_id = _inserted_id(conn.execute(sa.insert(events_table).values(**row)))
    return TradingState(cast(State, state), int(ts_ms), source, reason, int(new_id))


def record_settings(engine: sa.Engine, changes: Mapping[str, Any], ts_ms: int, source: str) -> StoredSettings:
    """Append a ``settings.update`` row: the newest settings with ``changes`` applied (a None value
    gives the key back to the book's config). ValueError names an unknown key."""
    unknown = sorted(set(changes) - set(RUNTIME_SETTINGS))
    if unknown:
        raise ValueError(f"not a runtime setting: {', '.join(unknown)}")
    with engine.begin() as conn:  # read and append in one transaction
        current = conn.execute(
            sa.select(events_table.c.payload)
            .where(events_table.c.kind == SETTINGS_KIND)
            .order_by(events_table.c.id.desc())
            .limit(1)
        ).scalar()
        base = (
            clean_settings(_payload(current).get("settings") or {})
            if current is not None
            else clean_settings({})
        )
        values = clean_settings({**base, **changes})
        typed = {k: None if v is None else RUNTIME_SETTINGS[k][0](v) for k, v in changes.items()}
        payload = {"changes": typed, "settings": values}
        result = conn.execute(
            sa.insert(events_table).values(ts=int(ts_ms), kind=SETTINGS_KIND, source=source, symbol=None,
                                           payload=payload)
        )  # fmt: skip
        new_id = _inserted_id(result)
    return StoredSettings(values, int(ts_ms), source, int(new_id))


def read_controls(engine: sa.Engine, after_id: int = 0) -> Controls:
    """The newest ``killswitch.*``, ``trading.*`` and ``settings.update`` rows with an id above
    ``after_id``, in one query; ``last_id`` is the highest id read (``after_id`` when none came)."""
    q = (
        sa.select(events_table.c.id, events_table.c.ts, events_table.c.kind, events_table.c.source,
                  events_table.c.payload)
        .where(
            events_table.c.id > int(after_id),
            sa.or_(
                events_table.c.kind.startswith(killswitch_store.KIND_PREFIX, autoescape=True),
                _trading_kinds(),
                events_table.c.kind == SETTINGS_KIND,
            ),
        )
        .order_by(events_table.c.id)
    )  # fmt: skip
    kill = trading = settings = None
    last = int(after_id)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    for row in rows:
        last = max(last, int(row.id))
        if row.kind.startswith(killswitch_store.KIND_PREFIX):
            kill = row
        elif row.kind in TRADING_KINDS:
            trading = row
        elif row.kind == SETTINGS_KIND:
            settings = row
    stored_kill = None
    if kill is not None:
        payload = _payload(kill.payload)
        state = payload.get("state")
        if not isinstance(state, Mapping):
            raise MalformedMessage("bad_shape", f"{kill.kind} row without a state object", payload)
        stored_kill = killswitch_store.StoredState(
            killswitch_store.state_from_json(state), int(kill.ts), str(kill.kind), str(kill.source)
        )
    return Controls(
        last,
        stored_kill,
        None if trading is None else _trading(trading),
        None if settings is None else _settings(settings),
    )
