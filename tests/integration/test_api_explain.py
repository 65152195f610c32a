"""``GET /api/signals/{symbol}/{ts}/explain`` (serve/api/routes_explain.py) on a real database and a real
LightGBM multi-target model held in process: stored contributions, on-demand ones from features_1m, 404s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import Depends
from fastapi.testclient import TestClient
from model_fixtures import feature_rows, long_biased_model

from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import MultiTargetModel
from serve.api import ApiConfig, create_app, ensure_token
from serve.api.auth import require_token
from serve.api.routes_explain import explain_router, model_explain_call
from storage.schema import features_1m, instruments, models, signals

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

T0 = 1_700_000_000_000
MIN = 60_000
MODEL_ID = "00000000-0000-4000-8000-000000000002"
VERSION = "7"


@pytest.fixture(scope="module")
def model() -> MultiTargetModel:
    return long_biased_model()


def _row() -> np.ndarray:
    return feature_rows(5, seed=11)[0].to_numpy(np.float64)[2]


def seed(engine: sa.Engine, model: MultiTargetModel) -> dict[str, Any]:
    x = _row()
    stored = model.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)[0]
    with engine.begin() as c:
        c.execute(sa.insert(instruments), [{"symbol": s, "created_at": T0} for s in ("BTCUSDT", "ETHUSDT")])
        c.execute(sa.insert(models).values(
            model_id=MODEL_ID, created_at=T0, algo="lgbm", feature_schema_version=FEATURE_SCHEMA_VERSION,
            label_spec_hash="h", train_start=T0 - 10 * MIN, train_end=T0, metrics={}, artifact_uri="models:/m/6"))  # fmt: skip
        base = {"model_id": MODEL_ID, "model_version": "6", "ev_long": 0.01, "ev_short": -0.01}
        c.execute(sa.insert(signals), [
            {**base, "symbol": "BTCUSDT", "ts": T0, "decision": "LONG", "block_reason_codes": [],
             "explain": {"cost_long": 0.0004, "contributions": stored, "contributions_model_version": "6"}},
            {**base, "symbol": "BTCUSDT", "ts": T0 + MIN, "decision": "FLAT", "block_reason_codes": ["ev_low"],
             "explain": {"cost_long": 0.0004}},
            {**base, "symbol": "ETHUSDT", "ts": T0 + MIN, "decision": "FLAT", "block_reason_codes": ["ev_low"],
             "explain": {}},
            {**base, "symbol": "ETHUSDT", "ts": T0 + 2 * MIN, "decision": "FLAT", "block_reason_codes": [],
             "explain": {}},
        ])  # fmt: skip
        values = {n: (None if np.isnan(v) else float(v)) for n, v in zip(FEATURE_NAMES, x, strict=True)}
        c.execute(sa.insert(features_1m), [
            {"symbol": "BTCUSDT", "ts": T0 + MIN, "schema_version": FEATURE_SCHEMA_VERSION, "features": values},
            {"symbol": "ETHUSDT", "ts": T0 + 2 * MIN, "schema_version": FEATURE_SCHEMA_VERSION - 1,
             "features": values},
        ])  # fmt: skip
    return {"x": x, "stored": stored}


@pytest.fixture
def api(
    engine: sa.Engine, db_url: str, tmp_path: Path, model: MultiTargetModel
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    seeded = seed(engine, model)
    config = ApiConfig(database_url=db_url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       data_dir=tmp_path / "data", token_file=tmp_path / "api" / "token")  # fmt: skip
    router = explain_router(model_explain_call(model, VERSION), dependencies=[Depends(require_token)])
    with TestClient(create_app(config, routers=[router])) as client:
        client.headers["Authorization"] = f"Bearer {ensure_token(config.token_file)}"
        yield client, seeded


def test_stored_contributions_are_answered_as_stored(api) -> None:
    client, seeded = api
    r = client.get(f"/api/signals/BTCUSDT/{T0}/explain")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "stored" and body["model_version"] == "6" and body["signal_model_version"] == "6"
    assert body["symbol"] == "BTCUSDT" and body["ts"] == T0
    assert body["contributions"] == seeded["stored"]


def test_without_stored_contributions_they_are_computed_from_the_stored_features(
    api, model: MultiTargetModel
) -> None:
    client, seeded = api
    r = client.get(f"/api/signals/BTCUSDT/{T0 + MIN}/explain")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "on_demand" and body["model_version"] == VERSION
    assert body["signal_model_version"] == "6"
    expected = model.contributions(seeded["x"], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)[0]
    assert body["contributions"] == expected  # the same row (NaN → null → NaN), the same numbers
    assert set(body["contributions"]) == set(model.targets)
    part = body["contributions"]["er_long"]
    assert 1 <= len(part["top"]) <= 5 and all(t["feature"] in FEATURE_NAMES for t in part["top"])
    # base + all contributions = the raw prediction: the top ones are a part of it
    full = model.contribution_matrix(seeded["x"], FEATURE_SCHEMA_VERSION, SCHEMA_HASH)["er_long"][0]
    raw = model.booster("er_long").predict(seeded["x"][None, :], raw_score=True)[0]
    assert part["base"] == full[-1] and abs(full.sum() - raw) < 1e-9


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (f"/api/signals/SOLUSDT/{T0}/explain", f"no signal of SOLUSDT at {T0}"),
        (f"/api/signals/BTCUSDT/{T0 + 5 * MIN}/explain", "no signal of BTCUSDT"),
        (f"/api/signals/ETHUSDT/{T0 + MIN}/explain", "no features_1m row"),
        (f"/api/signals/ETHUSDT/{T0 + 2 * MIN}/explain", f"schema v{FEATURE_SCHEMA_VERSION - 1}"),
    ],
)
def test_missing_signal_or_data_is_404_naming_why(api, path: str, why: str) -> None:
    client, _ = api
    r = client.get(path)
    assert r.status_code == 404 and why in r.json()["detail"], r.text


def test_bad_path_is_422_naming_the_field_and_no_token_is_401(api) -> None:
    client, _ = api
    r = client.get("/api/signals/BTCUSDT/not-a-time/explain")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "ts"]
    r = client.get("/api/signals/btc-usdt/1/explain")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "symbol"]
    r = client.get(f"/api/signals/BTCUSDT/{10**15}/explain")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "ts"]
    r = client.get(f"/api/signals/BTCUSDT/{T0}/explain", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
