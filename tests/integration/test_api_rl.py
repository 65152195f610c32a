"""The RL endpoints (serve/api/routes_rl.py, spec 001 §25.5) on a real database: models with their
decision summaries, the decision history with filters, per-model stats, 404 and 422 naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serve.api import ApiConfig, create_app, ensure_token
from storage.schema import instruments, rl_decisions, rl_models

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

T0 = 1_700_000_000_000
MIN = 60_000
NAMES = ("HOLD", "LONG", "SHORT", "CLOSE")


def seed(engine: sa.Engine) -> None:
    with engine.begin() as c:
        c.execute(sa.insert(instruments), [{"symbol": s, "created_at": T0} for s in ("BTCUSDT", "ETHUSDT")])
        c.execute(sa.insert(rl_models), [
            {"model_id": "m1", "symbol": "BTCUSDT", "algorithm": "PPO", "train_start": T0 - 90 * 1440 * MIN,
             "train_end": T0, "metrics": {"pf": 1.4, "sharpe": 1.1}, "model_path": "models:/x-rl/1",
             "is_production": False, "created_at": T0},
            {"model_id": "m2", "symbol": "BTCUSDT", "algorithm": "PPO", "train_start": T0, "train_end": T0 + MIN,
             "metrics": {}, "model_path": "models:/x-rl/2", "is_production": True, "created_at": T0 + MIN},
        ])  # fmt: skip
        rows = []
        # m1: 6 decisions on BTC (actions 0,1,3,0,2,1), m2: 2 on ETH
        for i, (sym, model, action, executed, pnl) in enumerate([
            ("BTCUSDT", "m1", 0, False, None), ("BTCUSDT", "m1", 1, True, 5.0), ("BTCUSDT", "m1", 3, False, None),
            ("BTCUSDT", "m1", 0, False, None), ("BTCUSDT", "m1", 2, True, -2.0), ("BTCUSDT", "m1", 1, False, None),
            ("ETHUSDT", "m2", 1, True, 1.5), ("ETHUSDT", "m2", 0, False, None),
        ]):  # fmt: skip
            probs = dict.fromkeys(NAMES, 0.1) | {NAMES[action]: 0.7}
            rows.append({"ts": T0 + i * MIN, "symbol": sym, "model_id": model, "action": action,
                         "action_name": NAMES[action], "confidence": 0.7, "action_probs": probs,
                         "value_estimate": 0.01 * i, "model_predictions": {"er_long": 0.001 * i},
                         "position_before": 0.0, "position_after": 1.0 if executed and action == 1 else 0.0,
                         "executed": executed, "pnl_result": pnl, "created_at": T0 + i * MIN})  # fmt: skip
        c.execute(sa.insert(rl_decisions), rows)


@pytest.fixture
def client(engine: sa.Engine, db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    seed(engine)
    config = ApiConfig(database_url=db_url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       data_dir=tmp_path / "data", token_file=tmp_path / "api" / "token")  # fmt: skip
    with TestClient(create_app(config)) as c:  # create_app includes the RL routes
        c.headers["Authorization"] = f"Bearer {ensure_token(config.token_file)}"
        yield c


def test_models_list_newest_first_with_their_decision_summary(client) -> None:
    r = client.get("/api/rl/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["model_id"] for m in body] == ["m2", "m1"]
    m1 = body[1]
    assert m1["metrics"] == {"pf": 1.4, "sharpe": 1.1} and m1["is_production"] is False
    assert m1["stats"]["decisions"] == 6 and m1["stats"]["executed"] == 2
    assert m1["stats"]["actions"] == {"HOLD": 2, "LONG": 2, "SHORT": 1, "CLOSE": 1}
    assert m1["stats"]["pnl_result"] == pytest.approx(3.0)
    assert body[0]["is_production"] is True and body[0]["stats"]["decisions"] == 2
    one = client.get("/api/rl/models/m1")
    assert one.status_code == 200 and one.json() == m1
    assert client.get("/api/rl/models", params={"symbol": "ETHUSDT"}).json() == []


def test_decisions_filter_by_symbol_model_and_window_newest_first(client) -> None:
    r = client.get("/api/rl/decisions", params={"symbol": "BTCUSDT", "from": T0 + MIN, "to": T0 + 4 * MIN})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["ts_ms"] for d in body] == [T0 + 4 * MIN, T0 + 3 * MIN, T0 + 2 * MIN, T0 + MIN]
    d = body[-1]
    assert (
        d["action"] == 1 and d["action_name"] == "LONG" and d["executed"] is True and d["pnl_result"] == 5.0
    )
    assert d["action_probs"]["LONG"] == 0.7 and d["model_predictions"] == {"er_long": 0.001}
    assert len(client.get("/api/rl/decisions", params={"limit": 3}).json()) == 3
    assert {d["symbol"] for d in client.get("/api/rl/decisions", params={"model_id": "m2"}).json()} == {
        "ETHUSDT"
    }


def test_stats_per_model_over_the_filters(client) -> None:
    r = client.get("/api/rl/decisions/stats")
    assert r.status_code == 200, r.text
    body = {s["model_id"]: s for s in r.json()}
    assert set(body) == {"m1", "m2"}
    assert body["m2"]["actions"] == {"HOLD": 1, "LONG": 1, "SHORT": 0, "CLOSE": 0}
    assert body["m2"]["action_share"]["LONG"] == 0.5 and body["m2"]["executed"] == 1
    assert body["m1"]["mean_confidence"] == pytest.approx(0.7)
    windowed = client.get("/api/rl/decisions/stats", params={"to": T0 + MIN}).json()
    assert [(s["model_id"], s["decisions"], s["pnl_result"]) for s in windowed] == [("m1", 2, 5.0)]


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/api/rl/decisions", {"symbol": "btc-usdt"}, ["query", "symbol"]),
        ("/api/rl/decisions", {"from": "yesterday"}, ["query", "from"]),
        ("/api/rl/decisions", {"to": 10**15}, ["query", "to"]),
        ("/api/rl/decisions", {"limit": 0}, ["query", "limit"]),
        ("/api/rl/decisions", {"from": T0 + 1, "to": T0}, ["query", "from"]),
        ("/api/rl/decisions/stats", {"model_id": "x" * 33}, ["query", "model_id"]),
        ("/api/rl/decisions/stats", {"from": -1}, ["query", "from"]),
        ("/api/rl/models", {"symbol": "a"}, ["query", "symbol"]),
        ("/api/rl/models/bad%20id", {}, ["path", "model_id"]),
    ],
)
def test_bad_input_is_422_naming_the_field(client, path: str, params: dict, loc: list[str]) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text


def test_unknown_model_is_404_and_no_token_is_401(client) -> None:
    r = client.get("/api/rl/models/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.get("/api/rl/decisions", headers={"Authorization": "Bearer wrong"}).status_code == 401
