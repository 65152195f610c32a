"""What the API's routers share: the engine dependency, the protected router's settings, helpers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request

from core.killswitch import KillSwitchState
from serve.api.auth import require_token
from serve.api.dto import KillSwitchDTO
from storage import killswitch_store

__all__ = ["AUTH", "EngineDep", "engine_of", "json_object", "kill_switch_dto", "redact_url"]

#: Router arguments of every protected router: the token dependency and its documented 401.
AUTH: dict[str, Any] = {
    "dependencies": [Depends(require_token)],
    "responses": {401: {"description": "missing or wrong token"}},
}

_URL_PASSWORD = re.compile(r"(?P<head>//[^:/@\s]*:)[^@\s]*@")


def engine_of(request: Request) -> sa.Engine:
    """The app's database engine."""
    engine: sa.Engine = request.app.state.engine
    return engine


EngineDep = Annotated[sa.Engine, Depends(engine_of)]


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", url)


def json_object(value: Any) -> dict[str, Any]:
    """A JSON column's value as a dict (text is parsed; anything else than an object gives {})."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def kill_switch_dto(engine: sa.Engine) -> KillSwitchDTO:
    """The kill switch's stored state (``killswitch_store.latest_state``); off when never used."""
    stored = killswitch_store.latest_state(engine)
    state = KillSwitchState() if stored is None else stored.state
    body = killswitch_store.state_to_json(state)
    return KillSwitchDTO(
        **body,
        recorded_ms=None if stored is None else stored.ts_ms,
        recorded_by=None if stored is None else stored.source,
    )
