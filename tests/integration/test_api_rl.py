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


# --- POST /api/rl/models/{model_id}/promote: real MLflow registry, real checkpoints ----------------

RL_NAME = "raytrade-lgbm-rl"
SPREAD = {"HOLD": 500, "LONG": 200, "SHORT": 200, "CLOSE": 100}


def _evaluation(**rl: float) -> dict:
    metrics = {"trades": 40.0, "pnl": 120.0, "profit_factor": 1.6, "win_rate": 0.55, "sharpe": 2.1,
               "max_drawdown": 0.04, "total_return": 0.012} | rl  # fmt: skip
    return {"rl": {**metrics, "actions_chosen": SPREAD, "actions_executed": SPREAD, "refusals": {}},
            "supervised": {"profit_factor": 1.1, "trades": 30}}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rl_fixtures import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("rl") / "ckpt", seed=1)


@pytest.fixture
def promo(
    engine: sa.Engine, db_url: str, tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, object, dict[str, str]]]:
    """An API on a registry holding three RL versions as train-rl leaves them: ``good`` (evaluation.json
    passing every gate), ``bad`` (max drawdown 20%) and ``metrics`` (no evaluation.json: run metrics)."""
    from storage.registry import ModelRegistry
    from storage.rl_registry import register_rl_checkpoint

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    config = ApiConfig(database_url=db_url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       data_dir=tmp_path / "data", token_file=tmp_path / "api" / "token")  # fmt: skip
    registry = ModelRegistry(config.tracking_uri, artifact_root=config.data_dir / "mlartifacts")
    ids = {}
    for key, evaluation, metrics in [
        ("good", _evaluation(), {"eval_profit_factor": 1.6}),
        ("bad", _evaluation(max_drawdown=0.2), {"eval_profit_factor": 1.6}),
        ("metrics", None, {"eval_trades": 25.0, "eval_profit_factor": 1.5, "eval_max_drawdown": 0.05,
                           "eval_share_HOLD": 0.6, "eval_share_LONG": 0.4, "supervised_profit_factor": 1.3}),
    ]:  # fmt: skip
        v = register_rl_checkpoint(registry, RL_NAME, checkpoint, symbol="BTCUSDT", train_start_ms=T0 - 90 * 1440 * MIN,
                                   train_end_ms=T0, metrics=metrics, engine=engine)  # fmt: skip
        if evaluation is not None:
            registry.log_run_json(RL_NAME, v.version, "evaluation.json", evaluation)
        ids[key] = v.model_id
    with TestClient(create_app(config)) as c:
        c.headers["Authorization"] = f"Bearer {ensure_token(config.token_file)}"
        yield c, registry, ids


def _promote(c: TestClient, model_id: str, key: str, **body: str):
    return c.post(f"/api/rl/models/{model_id}/promote", json=body, headers={"Idempotency-Key": key})


def _events(engine: sa.Engine) -> list:
    from storage.schema import events

    with engine.connect() as conn:
        q = (
            sa.select(events.c.kind, events.c.payload)
            .where(events.c.kind.like("rl_model.%"))
            .order_by(events.c.id)
        )
        return conn.execute(q).all()


def _production(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(rl_models.c.model_id).where(rl_models.c.is_production)).scalars())


def test_promote_passes_gates_refuses_and_records_an_override(promo, engine) -> None:
    c, registry, ids = promo
    r = _promote(c, ids["good"], "k1", actor="bob")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["kind"] == "promote" and body["promoted"] and body["gates_passed"] and body["failed_gates"] == []
    )
    assert body["evidence"] == "evaluation.json" and body["version"] == "1"
    assert {g["name"] for g in body["gates"] if g["passed"]} == {
        "min_trades", "profit_factor", "beats_supervised", "max_drawdown", "action_distribution"}  # fmt: skip
    assert _production(engine) >= {ids["good"]} and ids["bad"] not in _production(engine)
    assert registry.production_version(RL_NAME).version == "1"
    assert [m["is_production"] for m in c.get("/api/rl/models").json() if m["model_id"] == ids["good"]] == [
        True
    ]

    refused = _promote(c, ids["bad"], "k2", actor="bob")
    assert refused.status_code == 409, refused.text
    assert refused.json()["kind"] == "refused" and refused.json()["failed_gates"] == ["max_drawdown"]
    assert registry.production_version(RL_NAME).version == "1" and ids["bad"] not in _production(engine)

    forced = _promote(c, ids["bad"], "k3", actor="alice", override_reason="shadow week was fine")
    assert forced.status_code == 200, forced.text
    assert forced.json()["kind"] == "override" and forced.json()["failed_gates"] == ["max_drawdown"]
    assert registry.production_version(RL_NAME).version == "2"
    assert ids["bad"] in _production(engine) and ids["good"] not in _production(engine)
    tags = registry.version(RL_NAME, "2").promotion
    assert (
        tags["kind"] == "override" and tags["actor"] == "alice" and tags["override"] == "shadow week was fine"
    )

    kinds = _events(engine)
    assert [k for k, _ in kinds] == ["rl_model.promoted", "rl_model.refused", "rl_model.promoted"]
    last = kinds[-1][1]
    assert (
        last["actor"] == "alice" and last["override"] == "shadow week was fine" and last["kind"] == "override"
    )
    assert last["model_id"] == ids["bad"] and last["gates"]["failed"] == ["max_drawdown"]
    assert kinds[1][1]["gates"]["passed"] is False and kinds[0][1]["actor"] == "bob"


def test_promote_from_run_metrics_when_no_evaluation_json(promo, engine) -> None:
    c, registry, ids = promo
    r = _promote(c, ids["metrics"], "km")
    assert r.status_code == 200, r.text
    assert r.json()["evidence"] == "run metrics" and r.json()["gates_passed"] and r.json()["actor"] == "api"
    assert registry.production_version(RL_NAME).version == "3" and _production(engine) == {ids["metrics"]}


def test_promote_once_per_idempotency_key_404_and_422(promo, engine) -> None:
    c, registry, ids = promo
    first = _promote(c, ids["bad"], "same", actor="bob")
    again = _promote(c, ids["bad"], "same", actor="bob")
    assert first.status_code == again.status_code == 409 and first.json() == again.json()
    assert [k for k, _ in _events(engine)] == ["rl_model.refused"]
    assert _promote(c, ids["good"], "same").status_code == 409  # the key was another request's
    assert [k for k, _ in _events(engine)] == ["rl_model.refused"]
    missing = _promote(c, "nope", "k404")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    for body, headers, loc in [
        ({"override_reason": ""}, {"Idempotency-Key": "a"}, ["body", "override_reason"]),
        ({"actor": "   "}, {"Idempotency-Key": "b"}, ["body", "actor"]),
        ({"why": "x"}, {"Idempotency-Key": "c"}, ["body", "why"]),
        ({}, {}, ["header", "Idempotency-Key"]),
    ]:
        r = c.post(f"/api/rl/models/{ids['good']}/promote", json=body, headers=headers)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    assert registry.production_version(RL_NAME) is None and _production(engine) == set()
