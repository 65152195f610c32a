"""``/api/trading``, ``/api/account`` and ``PUT /api/settings`` (serve/api/routes_trading.py) on a real
migrated database: every endpoint, one events row per Idempotency-Key, 409 on start under a kill,
422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serve.api import ApiConfig, create_app, ensure_token
from serve.api.routes_trading import SettingsUpdate
from storage import trading_control
from storage.account import snapshot_row, write_snapshot
from storage.schema import events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def api(engine: sa.Engine, db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    config = ApiConfig(
        database_url=db_url,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_dir=tmp_path / "data",
        token_file=tmp_path / "api" / "token",
    )
    with TestClient(create_app(config)) as client:  # create_app includes the trading routes
        client.headers["Authorization"] = f"Bearer {ensure_token(config.token_file)}"
        yield client


def _rows(engine: sa.Engine, prefix: str) -> list[dict[str, Any]]:
    with engine.connect() as c:
        q = sa.select(events.c.kind, events.c.source, events.c.payload).where(
            events.c.kind.startswith(prefix)
        )
        return [dict(r._mapping) for r in c.execute(q.order_by(events.c.id))]


def _post(client: TestClient, path: str, key: str, **body: Any) -> Any:
    return client.post(path, json=body or None, headers={"Idempotency-Key": key})


def test_trading_state_moves_with_one_row_per_key(api: TestClient, engine: sa.Engine) -> None:
    assert api.get("/api/trading").json() == {
        "state": "running",
        "since_ms": None,
        "source": None,
        "reason": None,
    }
    first = _post(api, "/api/trading/stop-entries", "se-1", reason="news at 14:00")
    assert first.status_code == 200, first.text
    body = first.json()
    assert (
        body["state"] == "entries_stopped" and body["reason"] == "news at 14:00" and body["source"] == "api"
    )
    again = _post(api, "/api/trading/stop-entries", "se-1", reason="news at 14:00")
    assert (again.status_code, again.json()) == (200, body)
    assert [r["kind"] for r in _rows(engine, "trading.")] == ["trading.stop_entries"]
    assert api.get("/api/trading").json() == body

    stop = _post(api, "/api/trading/stop", "stop-1")
    assert stop.status_code == 200 and stop.json()["state"] == "stopped" and stop.json()["reason"] is None
    start = _post(api, "/api/trading/start", "start-1", reason="done")
    assert start.status_code == 200 and start.json()["state"] == "running"
    kinds = [r["kind"] for r in _rows(engine, "trading.")]
    assert kinds == ["trading.stop_entries", "trading.stop", "trading.start"]
    assert trading_control.latest_state(engine).state == "running"
    # a key used on another path is refused, and records nothing
    assert _post(api, "/api/trading/stop", "start-1").status_code == 409
    assert len(_rows(engine, "trading.")) == 3


def test_start_is_refused_while_the_kill_switch_is_active(api: TestClient, engine: sa.Engine) -> None:
    assert _post(api, "/api/trading/stop", "s").status_code == 200
    kill = api.post("/api/killswitch", json={"active": True}, headers={"Idempotency-Key": "k"})
    assert kill.status_code == 200, kill.text
    refused = _post(api, "/api/trading/start", "go")
    assert refused.status_code == 409 and "kill switch" in refused.json()["detail"]
    assert api.get("/api/trading").json()["state"] == "stopped"
    assert [r["kind"] for r in _rows(engine, "trading.")] == ["trading.stop"]
    resume = api.post("/api/killswitch", json={"active": False}, headers={"Idempotency-Key": "r"})
    assert resume.status_code == 200, resume.text
    started = _post(api, "/api/trading/start", "go")  # the refusal stored nothing: the key runs now
    assert started.status_code == 200 and started.json()["state"] == "running"


def test_settings_take_only_the_runtime_safe_keys(api: TestClient, engine: sa.Engine) -> None:
    assert set(SettingsUpdate.model_fields) == set(trading_control.RUNTIME_SETTINGS)
    empty = api.get("/api/settings/runtime").json()
    assert empty["max_positions"] is None and empty["updated_ms"] is None
    r = api.put("/api/settings", json={"max_positions": 2, "daily_loss_limit_pct": 0.01},
                headers={"Idempotency-Key": "set-1"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert (r.json()["max_positions"], r.json()["daily_loss_limit_pct"], r.json()["max_entry_delay_ms"]) == (
        2,
        0.01,
        None,
    )
    again = api.put("/api/settings", json={"max_positions": 2, "daily_loss_limit_pct": 0.01},
                    headers={"Idempotency-Key": "set-1"})  # fmt: skip
    assert again.json() == r.json() and len(_rows(engine, "settings.")) == 1
    # a later change keeps the others; null gives a key back to the config
    r2 = api.put("/api/settings", json={"max_entry_delay_ms": 5000, "max_positions": None},
                 headers={"Idempotency-Key": "set-2"})  # fmt: skip
    assert (r2.json()["max_positions"], r2.json()["daily_loss_limit_pct"], r2.json()["max_entry_delay_ms"]) == (
        None, 0.01, 5000)  # fmt: skip
    rows = _rows(engine, "settings.")
    assert len(rows) == 2 and rows[-1]["payload"]["changes"] == {
        "max_entry_delay_ms": 5000,
        "max_positions": None,
    }
    assert api.get("/api/settings/runtime").json()["max_entry_delay_ms"] == 5000

    def field(resp: Any) -> list[Any]:
        assert resp.status_code == 422, resp.text
        return [e["loc"][-1] for e in resp.json()["detail"]]

    put = lambda body, key: api.put("/api/settings", json=body, headers={"Idempotency-Key": key})  # noqa: E731
    assert field(put({"max_positions": 3, "leverage": 20}, "bad-1")) == ["leverage"]
    assert field(put({"database_url": "x"}, "bad-2")) == ["database_url"]
    assert field(put({"max_positions": 0}, "bad-3")) == ["max_positions"]
    assert field(put({"daily_loss_limit_pct": 2.0}, "bad-4")) == ["daily_loss_limit_pct"]
    assert field(put({}, "bad-5")) == ["body"]
    assert field(api.put("/api/settings", json={"max_positions": 3})) == ["Idempotency-Key"]
    assert field(_post(api, "/api/trading/stop", "bad-6", why="typo")) == ["why"]
    assert len(_rows(engine, "settings.")) == 2 and _rows(engine, "trading.") == []


def test_account_reads_what_the_books_recorded(api: TestClient, engine: sa.Engine) -> None:
    nulls = api.get("/api/account").json()
    assert nulls["equity"] is None and nulls["ts_ms"] is None and nulls["positions"] is None
    from core.sim import FillSimulator

    sim = FillSimulator(("BTCUSDT",))
    assert (
        sim.open_position(
            "BTCUSDT", 1, 86_400_000, 100.0, 1000.0, mark_price=100.0, sl=90.0, tp=110.0, atr=1.0
        )
        == ()
    )
    acct = [float(v) for v in sim.book_state().account]
    with engine.begin() as c:
        c.execute(sa.insert(events).values(ts=5, kind="execution.state", source="execution:shadow:s1", symbol=None,
                                           payload={"acct": acct, "pos": [], "groups": {}, "symbols": ["BTCUSDT"]}))  # fmt: skip
    paper = api.get("/api/account").json()
    assert paper["mode"] == "shadow" and paper["positions"] == 1 and paper["ts_ms"] == 5
    assert paper["equity"] == pytest.approx(sim.equity) and paper["margin_used"] == pytest.approx(
        sim.used_margin
    )
    assert paper["available"] == pytest.approx(sim.equity - sim.used_margin)
    account = {"mode": "shadow", "wallet": 990.0, "equity": 1001.0, "available": 800.0, "unrealized_pnl": 11.0,
               "margin_used": 201.0, "positions": 2}  # fmt: skip
    with engine.begin() as c:
        c.execute(sa.insert(events).values(**trading_control.account_row(9, "execution:shadow:s1", account)))
    assert api.get("/api/account").json() == {"ts_ms": 9, "source": "execution:shadow:s1", "margin_ratio": None,
                                              **account}  # fmt: skip
    # a book's account_snapshots row (one per minute close) answers before the events rows; the newest
    figures = {"equity": 10_012.5, "wallet_balance": 10_000.0, "unrealized_pnl": 12.5, "available_margin": 9_812.5,
               "used_margin": 200.0, "margin_ratio": 0.004}  # fmt: skip
    write_snapshot(engine, snapshot_row(120_000, "live", figures))
    write_snapshot(engine, snapshot_row(60_000, "shadow", figures | {"equity": 1.0}))
    assert api.get("/api/account").json() == {
        "ts_ms": 120_000, "mode": "live", "wallet": 10_000.0, "equity": 10_012.5, "available": 9_812.5,
        "unrealized_pnl": 12.5, "margin_used": 200.0, "positions": None, "source": "account_snapshots",
        "margin_ratio": 0.004,
    }  # fmt: skip
    # the paper book's once-a-second event, newer than the last minute's snapshot, answers
    with engine.begin() as c:
        c.execute(
            sa.insert(events).values(**trading_control.account_row(150_000, "execution:shadow:s1", account))
        )
    assert api.get("/api/account").json() == {"ts_ms": 150_000, "source": "execution:shadow:s1",
                                              "margin_ratio": None, **account}  # fmt: skip
