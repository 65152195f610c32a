"""The REST API on a real migrated SQLite database seeded with rows: auth, every endpoint, idempotency."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serve.api import ApiConfig, create_app, ensure_token, rotate_token
from storage import jobs
from storage import killswitch_store as store
from storage.schema import (
    algo_orders,
    candles_1m,
    drift_metrics,
    events,
    features_1m,
    fills,
    instruments,
    models,
    orders,
    positions,
    risk_events,
    signals,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

T0 = 1_700_000_000_000
MIN = 60_000
MODEL_ID = "00000000-0000-4000-8000-000000000001"
DB_PASSWORD = "pg-secret-pw"


def _insert(c: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for row in rows:  # one statement per row: the rows have different columns
        c.execute(sa.insert(table).values(**row))


def seed(engine: sa.Engine) -> str:
    """Rows in every table the API reads; return the queued job's id."""
    with engine.begin() as c:
        _insert(c, instruments, [
            {"symbol": "BTCUSDT", "created_at": T0, "tick_size": 0.1, "step_size": 0.001, "min_notional": 100},
            {"symbol": "ETHUSDT", "created_at": T0, "liquidity_tier": "B"},
        ])  # fmt: skip
        c.execute(sa.insert(candles_1m), [
            {"symbol": "BTCUSDT", "ts": T0 + i * MIN, "open": 50_000 + i, "high": 50_010 + i, "low": 49_990 + i,
             "close": 50_005 + i, "volume": 10.0} for i in range(3)
        ])  # fmt: skip
        c.execute(
            sa.insert(features_1m).values(symbol="BTCUSDT", ts=T0 + 2 * MIN, schema_version=1, features={})
        )
        c.execute(sa.insert(models).values(
            model_id=MODEL_ID, created_at=T0, algo="lgbm", feature_schema_version=1, label_spec_hash="h",
            train_start=T0 - 10 * MIN, train_end=T0, metrics={}, artifact_uri="models:/m/1"))  # fmt: skip
        _insert(c, signals, [
            {"symbol": "BTCUSDT", "ts": T0 + MIN, "model_id": MODEL_ID, "ev_long": 0.001, "ev_short": -0.002,
             "decision": "FLAT", "block_reason_codes": ["old"], "explain": {}},
            {"symbol": "BTCUSDT", "ts": T0 + 2 * MIN, "model_id": MODEL_ID, "ev_long": 0.002, "ev_short": -0.003,
             "decision": "FLAT", "block_reason_codes": ["spread_wide"], "explain": {"cost": 0.0004}},
            {"symbol": "ETHUSDT", "ts": T0 + 2 * MIN, "model_id": MODEL_ID, "ev_long": -0.001, "ev_short": 0.005,
             "decision": "SHORT", "sl_price": 3100.0, "tp_price": 2900.0, "block_reason_codes": [], "explain": {}},
        ])  # fmt: skip
        entry = {
            "side": "LONG",
            "mode": "shadow",
            "amt": 0.01,
            "entry_price": 50_000.0,
            "leverage": 3,
            "sl_price": 49_500.0,
            "tp_price": 51_000.0,
            "liquidation_price": 33_500.0,
            "source": "shadow",
        }
        _insert(c, positions, [
            {**entry, "trade_group_id": "g1", "symbol": "BTCUSDT", "ts": T0, "event_type": "entry"},
            {**entry, "trade_group_id": "g1", "symbol": "BTCUSDT", "ts": T0 + MIN, "event_type": "FINAL",
             "exit_price": 51_000.0, "realized_pnl": 10.0, "fees": 0.4, "funding": -0.1, "exit_reason": "TP"},
            {**entry, "trade_group_id": "g2", "symbol": "BTCUSDT", "ts": T0 + 2 * MIN, "event_type": "entry"},
        ])  # fmt: skip
        order = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "MARKET",
            "reduce_only": False,
            "qty": 0.01,
            "created_at": T0,
            "updated_at": T0,
        }
        _insert(c, orders, [
            {**order, "order_id": 1, "client_order_id": "e1", "status": "FILLED", "filled_qty": 0.01},
            {**order, "order_id": 2, "client_order_id": "e2", "status": "NEW", "type": "LIMIT", "price": 49_000.0,
             "created_at": T0 + 2 * MIN, "updated_at": T0 + 2 * MIN},
        ])  # fmt: skip
        c.execute(sa.insert(fills).values(symbol="BTCUSDT", trade_id=11, order_id=1, side="BUY", price=50_000.0,
                                          qty=0.01, fee=0.2, fee_asset="USDT", ts=T0))  # fmt: skip
        c.execute(sa.insert(algo_orders).values(
            symbol="BTCUSDT", algo_id=7, client_algo_id="sl-e1", type="STOP_MARKET", side="SELL", status="NEW",
            qty=0.0, trigger_price=49_500.0, close_position=True, created_at=T0, updated_at=T0))  # fmt: skip
        c.execute(sa.insert(risk_events).values(ts=T0, event_type="daily_loss", symbol=None, severity=2,
                                                message="near the limit", details={"loss": 12.5}))  # fmt: skip
        c.execute(sa.insert(drift_metrics), [
            {"symbol": "BTCUSDT", "ts": T0, "schema_version": 1, "psi": 0.05},
            {"symbol": "BTCUSDT", "ts": T0 + MIN, "schema_version": 1, "psi": 0.31, "missing_rate": 0.01},
        ])  # fmt: skip
        c.execute(sa.insert(events), [
            {"ts": T0, "kind": "data_quality.rejected", "source": "ingest", "symbol": "BTCUSDT", "payload": {"why": "gap"}},
            {"ts": T0, "kind": "reconcile.missing_fill", "source": "reconciler", "symbol": "BTCUSDT", "payload": {}},
        ])  # fmt: skip
    return jobs.enqueue(engine, "train", {"window_days": 30}, now_ms=T0)


@pytest.fixture
def api(engine: sa.Engine, db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, ApiConfig, str]]:
    job_id = seed(engine)
    config = ApiConfig(
        database_url=db_url,
        redis_url=f"redis://:{DB_PASSWORD}@127.0.0.1:6390/0",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_dir=tmp_path / "data",
        token_file=tmp_path / "api" / "token",
    )
    with TestClient(create_app(config)) as client:
        token = ensure_token(config.token_file)
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, config, job_id


def get(client: TestClient, path: str, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_answers_without_token_and_everything_else_needs_it(
    api: tuple[TestClient, ApiConfig, str],
) -> None:
    client, config, _ = api
    bare = TestClient(client.app)
    assert bare.get("/api/health").json() == {"status": "ok"}
    assert bare.get("/api/status").status_code == 401
    assert bare.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert (
        bare.post("/api/killswitch", json={"active": True}, headers={"Idempotency-Key": "k"}).status_code
        == 401
    )
    assert not store.kill_file(config.data_dir.resolve()).exists()
    assert stat.S_IMODE(config.token_file.stat().st_mode) == 0o600


def test_rotated_token_replaces_the_old_one(api: tuple[TestClient, ApiConfig, str]) -> None:
    client, config, _ = api
    old = ensure_token(config.token_file)
    new = rotate_token(config.token_file)
    assert new != old and stat.S_IMODE(config.token_file.stat().st_mode) == 0o600
    assert client.get("/api/status", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_state_endpoints_return_the_seeded_rows(api: tuple[TestClient, ApiConfig, str]) -> None:
    client, _, job_id = api
    status = get(client, "/api/status")
    assert status["latest_candle_ts_ms"] == T0 + 2 * MIN and status["latest_signal_ts_ms"] == T0 + 2 * MIN
    assert status["collector_ok"] is False and status["kill_switch_active"] is False
    assert [i["symbol"] for i in get(client, "/api/universe")] == ["BTCUSDT", "ETHUSDT"]
    held = get(client, "/api/positions/latest")
    assert [(p["symbol"], p["qty"], p["fees"]) for p in held["ledger"]] == [("BTCUSDT", 0.01, 0.2)]
    assert [p["trade_group_id"] for p in held["open"]] == ["g2"]
    assert [o["order_id"] for o in get(client, "/api/orders")["orders"]] == [2, 1]
    open_orders = get(client, "/api/orders", open_only=True)
    assert [o["order_id"] for o in open_orders["orders"]] == [2]
    assert [a["algo_id"] for a in open_orders["algo_orders"]] == [7]
    assert [o["order_id"] for o in get(client, "/api/orders", **{"from": T0 + MIN})["orders"]] == [2]
    assert [(f["trade_id"], f["fee"]) for f in get(client, "/api/fills")] == [(11, 0.2)]
    latest = get(client, "/api/signals/latest", sort="ev", limit=50)
    assert [(s["symbol"], s["ts_ms"]) for s in latest] == [
        ("ETHUSDT", T0 + 2 * MIN),
        ("BTCUSDT", T0 + 2 * MIN),
    ]
    assert latest[1]["block_reasons"] == ["spread_wide"] and latest[1]["explain"] == {"cost": 0.0004}
    assert len(get(client, "/api/signals/latest", limit=1)) == 1
    series = get(client, "/api/symbol/BTCUSDT/series", **{"from": T0, "to": T0 + 2 * MIN})
    assert [c["ts_ms"] for c in series["candles"]] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert len(series["signals"]) == 2
    lines = {(ln["trade_group_id"], ln["kind"]): (ln["price"], ln["to_ms"]) for ln in series["lines"]}
    assert lines[("g1", "sl")] == (49_500.0, T0 + MIN) and lines[("g2", "liquidation")] == (33_500.0, None)
    assert client.get("/api/symbol/NOPE/series").status_code == 404
    risk = get(client, "/api/risk/state")
    assert risk["kill_switch"]["active"] is False and risk["risk_events"][0]["details"] == {"loss": 12.5}
    assert [e["kind"] for e in get(client, "/api/safety-events")] == ["reconcile.missing_fill"]
    dq = get(client, "/api/data-quality/summary")
    assert dq["counts"] == {"data_quality.rejected": 1} and dq["candles_1m"][0]["rows"] == 3
    assert [(d["ts_ms"], d["psi"]) for d in get(client, "/api/drift")] == [(T0 + MIN, 0.31)]
    assert [(j["job_id"], j["kind"]) for j in get(client, "/api/training/jobs")] == [(job_id, "train")]
    pnl = get(client, "/api/pnl")
    shadow = next(r for r in pnl["by_symbol"] if r["source"] == "shadow")
    assert (shadow["realized_pnl"], shadow["fees"], shadow["funding"], shadow["trades"]) == (
        10.0,
        0.4,
        -0.1,
        1,
    )
    assert pnl["fees"] == pytest.approx(0.6) and pnl["net"] == pytest.approx(10.0 - 0.6 - 0.1)


def test_settings_show_no_secret(api: tuple[TestClient, ApiConfig, str]) -> None:
    client, config, _ = api
    r = client.get("/api/settings")
    assert r.status_code == 200
    assert DB_PASSWORD not in r.text and ensure_token(config.token_file) not in r.text
    assert r.json()["redis_url"] == "redis://:***@127.0.0.1:6390/0" and r.json()["bind_host"] == "127.0.0.1"


def _killswitch_rows(engine: sa.Engine) -> int:
    with engine.connect() as c:
        return int(
            c.execute(sa.select(sa.func.count()).where(events.c.kind.startswith("killswitch."))).scalar_one()
        )


def test_kill_with_one_key_twice_kills_once_and_answers_the_same(
    api: tuple[TestClient, ApiConfig, str], engine: sa.Engine
) -> None:
    client, config, _ = api
    body = {"active": True, "close_positions": True, "reason": "drill"}
    first = client.post("/api/killswitch", json=body, headers={"Idempotency-Key": "kill-1"})
    assert first.status_code == 200, first.text
    rows = _killswitch_rows(engine)
    assert rows > 0 and first.json()["kill_switch"]["active"] and first.json()["kill_file"]
    second = client.post("/api/killswitch", json=body, headers={"Idempotency-Key": "kill-1"})
    assert (second.status_code, second.json()) == (200, first.json())
    assert _killswitch_rows(engine) == rows
    stored = store.latest_state(engine)
    assert stored is not None and stored.state.active and stored.state.close_positions
    assert store.kill_file(config.data_dir.resolve()).exists()
    resumed = client.post("/api/killswitch", json={"active": False}, headers={"Idempotency-Key": "resume-1"})
    assert resumed.status_code == 200 and not resumed.json()["kill_switch"]["active"]
    assert _killswitch_rows(engine) > rows and not store.kill_file(config.data_dir.resolve()).exists()
    assert get(client, "/api/risk/state")["kill_switch"]["active"] is False
    reused = client.post("/api/jobs", json={"kind": "train"}, headers={"Idempotency-Key": "kill-1"})
    assert reused.status_code == 409


def test_jobs_and_promote_enqueue_once_per_key(
    api: tuple[TestClient, ApiConfig, str], engine: sa.Engine
) -> None:
    client, _, _ = api
    a = client.post(
        "/api/jobs", json={"kind": "label", "config": {"days": 2}}, headers={"Idempotency-Key": "a"}
    )
    again = client.post(
        "/api/jobs", json={"kind": "label", "config": {"days": 2}}, headers={"Idempotency-Key": "a"}
    )
    b = client.post(
        "/api/jobs", json={"kind": "label", "config": {"days": 2}}, headers={"Idempotency-Key": "b"}
    )
    assert a.status_code == 202 and again.json() == a.json() and b.json()["job_id"] != a.json()["job_id"]
    p = client.post("/api/models/m/promote", json={"version": "3", "override": "drill"},
                    headers={"Idempotency-Key": "p"})  # fmt: skip
    assert p.status_code == 202, p.text
    job = jobs.get_job(engine, p.json()["job_id"])
    assert job is not None and job.kind == "promote"
    assert dict(job.config) == {"name": "m", "version": "3", "override": "drill", "actor": "api"}
    assert len(jobs.list_jobs(engine, status="queued", limit=100)) == 4  # seeded train, two labels, promote


def test_bad_input_gets_422_naming_the_field(api: tuple[TestClient, ApiConfig, str]) -> None:
    client, _, _ = api

    def field(r: Any) -> list[Any]:
        assert r.status_code == 422, r.text
        return [e["loc"][-1] for e in r.json()["detail"]]

    assert field(client.get("/api/signals/latest", params={"limit": 0})) == ["limit"]
    assert field(client.get("/api/signals/latest", params={"sort": "nope"})) == ["sort"]
    assert field(client.get("/api/orders", params={"from": "yesterday"})) == ["from"]
    assert field(client.get("/api/fills", params={"from": T0 + 1, "to": T0})) == ["from"]
    assert field(
        client.post("/api/killswitch", json={"active": "maybe"}, headers={"Idempotency-Key": "x"})
    ) == ["active"]
    assert field(
        client.post("/api/killswitch", json={"active": True, "colse": 1}, headers={"Idempotency-Key": "y"})
    ) == ["colse"]
    assert field(client.post("/api/killswitch", json={"active": True})) == ["Idempotency-Key"]
    assert field(client.post("/api/jobs", json={"kind": "rebalance"}, headers={"Idempotency-Key": "z"})) == [
        "kind"
    ]
    assert field(client.post("/api/jobs", json={"kind": "promote"}, headers={"Idempotency-Key": "w"})) == [
        "name"
    ]


def test_models_lists_the_registry(api: tuple[TestClient, ApiConfig, str]) -> None:
    client, _, _ = api
    assert get(client, "/api/models") == []
    assert client.get("/api/models/none").status_code == 404
    r = client.post("/api/models/none/rollback", json={}, headers={"Idempotency-Key": "r"})
    assert r.status_code == 409
