"""The kill switch's persistent state: its events as rows of the ``events`` table, and the kill file.

Every ``core.killswitch.KillSwitchEvent`` becomes one ``events`` row of kind ``killswitch.<kind>``
(``killswitch.triggered``, ``killswitch.entries_blocked`` …, and ``killswitch.flatten`` for a
flatten's report) whose payload holds the event and the switch's state after it. The state is
the payload of the newest such row (highest id: rows from several writers, each with its own clock,
are ordered by when they were written): ``latest_state``. The table is append-only, so the history
of the switch is never lost.

The kill file (``<data_dir>/KILL``) is the switch's file trigger: ``raytrade kill`` creates it, a
running system watches it (``KillSwitch.file``), ``raytrade resume`` removes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa

from core.errors import MalformedMessage
from core.killswitch import REASONS, Condition, KillSwitchEvent, KillSwitchState, Reason
from storage.schema import events as events_table

KIND_PREFIX = "killswitch."
FLATTEN_KIND = "killswitch.flatten"
KILL_FILE_NAME = "KILL"

__all__ = [
    "FLATTEN_KIND",
    "KILL_FILE_NAME",
    "KIND_PREFIX",
    "StoredState",
    "create_kill_file",
    "event_rows",
    "flatten_row",
    "history",
    "kill_file",
    "latest_state",
    "record",
    "remove_kill_file",
    "state_from_json",
    "state_to_json",
]


@dataclass(frozen=True, slots=True)
class StoredState:
    """The switch's state as the newest ``killswitch.*`` row holds it, with that row's time and kind."""

    state: KillSwitchState
    ts_ms: int
    kind: str
    source: str


# State <-> JSON ------------------------------------------------------------------------------------
def state_to_json(state: KillSwitchState) -> dict[str, Any]:
    """Return ``state`` as a JSON object."""
    return {
        "active": state.active,
        "close_positions": state.close_positions,
        "reason": state.reason,
        "reasons": list(state.reasons),
        "since_ms": state.since_ms,
        "detail": state.detail,
        "holding": [
            {"reason": c.reason, "since_ms": c.since_ms, "detail": c.detail, "until_ms": c.until_ms}
            for c in state.holding
        ],
    }


def state_from_json(payload: Mapping[str, Any]) -> KillSwitchState:
    """Rebuild a state from ``state_to_json``'s object; MalformedMessage names what is wrong."""
    try:
        holding = tuple(
            Condition(
                _reason(c["reason"]),
                int(c["since_ms"]),
                str(c["detail"]),
                None if c.get("until_ms") is None else int(c["until_ms"]),
            )  # fmt: skip
            for c in payload["holding"]
        )
        reason = payload["reason"]
        since_ms = payload["since_ms"]
        return KillSwitchState(
            active=bool(payload["active"]),
            close_positions=bool(payload["close_positions"]),
            reason=None if reason is None else _reason(reason),
            reasons=tuple(_reason(r) for r in payload["reasons"]),
            since_ms=None if since_ms is None else int(since_ms),
            detail=str(payload["detail"]),
            holding=holding,
        )
    except KeyError as e:
        raise MalformedMessage("missing_field", f"kill-switch state without {e.args[0]!r}", payload) from e
    except (TypeError, ValueError) as e:
        raise MalformedMessage("bad_value", f"kill-switch state: {e}", payload) from e


def _reason(value: object) -> Reason:
    if value not in REASONS:
        raise ValueError(f"unknown kill-switch reason {value!r}; expected one of {', '.join(REASONS)}")
    return cast(Reason, value)


# Rows ----------------------------------------------------------------------------------------------
def event_rows(events: Iterable[KillSwitchEvent], state: KillSwitchState) -> list[dict[str, Any]]:
    """Return one ``events`` row per kill-switch event, each carrying ``state`` (the state after them)."""
    snapshot = state_to_json(state)
    return [
        {
            "ts": e.ts_ms,
            "kind": e.event_kind,
            "source": e.source,
            "symbol": None,
            "payload": {"event": {"kind": e.kind, "reason": e.reason, "detail": e.detail}, "state": snapshot},
        }
        for e in events
    ]


def flatten_row(
    ts_ms: int, source: str, state: KillSwitchState, *, clean: bool, lines: Iterable[str]
) -> dict[str, Any]:
    """Return the ``killswitch.flatten`` row of a flatten: whether it ended flat, and its report lines."""
    payload = {
        "event": {"kind": "flatten", "clean": clean, "report": list(lines)},
        "state": state_to_json(state),
    }
    return {"ts": ts_ms, "kind": FLATTEN_KIND, "source": source, "symbol": None, "payload": payload}


def record(engine: sa.Engine, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append ``rows`` (from ``event_rows``/``flatten_row``) in one transaction; return how many."""
    batch = [dict(r) for r in rows]
    for row in batch:
        if not str(row.get("kind", "")).startswith(KIND_PREFIX):
            raise ValueError(f"not a kill-switch row: kind {row.get('kind')!r} (expected {KIND_PREFIX}*)")
    if batch:
        with engine.begin() as conn:
            conn.execute(sa.insert(events_table), batch)
    return len(batch)


def latest_state(engine: sa.Engine) -> StoredState | None:
    """The state of the newest ``killswitch.*`` row, or None when the switch has never been used."""
    query = (
        sa.select(events_table.c.ts, events_table.c.kind, events_table.c.source, events_table.c.payload)
        .where(events_table.c.kind.startswith(KIND_PREFIX, autoescape=True))
        .order_by(events_table.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    payload = row.payload if isinstance(row.payload, Mapping) else json.loads(row.payload)
    if not isinstance(payload, Mapping) or not isinstance(payload.get("state"), Mapping):
        raise MalformedMessage("bad_shape", f"{row.kind} row without a state object", payload)
    return StoredState(state_from_json(payload["state"]), int(row.ts), str(row.kind), str(row.source))


def history(engine: sa.Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` ``killswitch.*`` rows, newest first: ts, kind, source and the event."""
    query = (
        sa.select(events_table.c.ts, events_table.c.kind, events_table.c.source, events_table.c.payload)
        .where(events_table.c.kind.startswith(KIND_PREFIX, autoescape=True))
        .order_by(events_table.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [
            {
                "ts_ms": int(r.ts),
                "kind": r.kind,
                "source": r.source,
                "event": (r.payload or {}).get("event", {}),
            }
            for r in conn.execute(query)
        ]


# Kill file -----------------------------------------------------------------------------------------
def kill_file(data_dir: Path) -> Path:
    """The kill file of a data folder: ``<data_dir>/KILL``."""
    return data_dir / KILL_FILE_NAME


def create_kill_file(path: Path, ts_ms: int, source: str, detail: str) -> None:
    """Create (or replace) the kill file, with one JSON line saying when, by whom and why."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"ts_ms": ts_ms, "source": source, "detail": detail})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(line + "\n")
    tmp.replace(path)  # appears whole: a watcher never reads half a file


def remove_kill_file(path: Path) -> bool:
    """Remove the kill file; return whether there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
