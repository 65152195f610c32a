"""Promotion from the MLflow UI: an alias moved there (here with MlflowClient, as the UI does) is noticed
by ``tune.promotion_watch``, recorded once as a promotion event with that version's gate results, and
listed by ``GET /api/models/promotions`` beside the promotions made through the gates."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from model_fixtures import failing_gates_input, log_tiny, passing_gates_input

from serve.api import ApiConfig, create_app, ensure_token
from storage.registry import PRODUCTION_ALIAS, PROMOTION_TAG_PREFIX, ModelRegistry
from storage.schema import events
from tune.promote import PromotionConfig, promote_stored, rollback
from tune.promotion_watch import PromotionWatcher, _insert_unless_moved_on, promotion_records

NAME = "lgbm_multi"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def registry(engine: sa.Engine, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "mlartifacts", engine=engine
    )


def move_in_ui(registry: ModelRegistry, version: str) -> None:
    """What the MLflow UI does when an operator sets the alias: one call, no tags, no events."""
    registry.client.set_registered_model_alias(NAME, PRODUCTION_ALIAS, version)


def mlflow_ui_events(engine: sa.Engine) -> list[dict]:
    with engine.connect() as c:
        q = sa.select(events.c.payload).where(events.c.source == "mlflow-ui").order_by(events.c.id)
        return [dict(p) for p in c.execute(q).scalars()]


@pytest.fixture
def client(engine: sa.Engine, db_url: str, tmp_path: Path, registry: ModelRegistry) -> Iterator[TestClient]:
    config = ApiConfig(database_url=db_url, tracking_uri=registry.tracking_uri, data_dir=tmp_path / "data",
                       token_file=tmp_path / "api" / "token")  # fmt: skip
    with TestClient(create_app(config)) as c:
        c.headers["Authorization"] = f"Bearer {ensure_token(config.token_file)}"
        yield c


def test_ui_move_is_recorded_once_with_gate_results_and_listed_beside_gated_promotions(
    engine: sa.Engine, registry: ModelRegistry, client: TestClient
) -> None:
    log_tiny(registry, NAME, 0, gates_input=passing_gates_input())
    log_tiny(registry, NAME, 1, gates_input=failing_gates_input())
    log_tiny(registry, NAME, 2, gates_input=passing_gates_input())
    watcher = PromotionWatcher(registry)
    assert watcher.check_once() == []  # nothing in production yet

    promote_stored(registry, NAME, "1", cfg=PromotionConfig(), actor="alice")  # our path, through the gates
    assert watcher.check_once() == []

    move_in_ui(registry, "2")  # fails oos_profit_factor and oos_max_drawdown
    [record] = watcher.check_once()
    assert (record.kind, record.source, record.version) == ("model.promoted", "mlflow-ui", "2")
    p = record.payload
    assert p["production_before"] == "1" and p["gates_passed"] is False
    assert p["gates"]["failed"] == ["oos_profit_factor", "oos_max_drawdown"]
    assert len(p["gates"]["gates"]) == 8
    assert "MLflow UI" in p["warning"] and "oos_profit_factor" in p["warning"]
    assert registry.production_version(NAME).version == "2"  # the watcher moves no alias
    tags = registry.version(NAME, "2").tags
    assert tags[PROMOTION_TAG_PREFIX + "kind"] == "mlflow-ui"
    assert tags[PROMOTION_TAG_PREFIX + "failed_gates"] == "oos_profit_factor,oos_max_drawdown"

    assert watcher.check_once() == []  # once per move
    assert PromotionWatcher(registry).check_once() == []  # and after a restart
    assert len(mlflow_ui_events(engine)) == 1

    move_in_ui(registry, "3")  # every gate passes: recorded, no warning
    [record] = watcher.check_once()
    assert record.payload["gates_passed"] is True and record.payload["warning"] is None

    promote_stored(registry, NAME, "1", cfg=PromotionConfig(), actor="bob")
    rollback(registry, NAME, actor="carol", reason="drift")  # back to 3, through our path
    assert watcher.check_once() == []
    assert len(mlflow_ui_events(engine)) == 2

    r = client.get("/api/models/promotions", params={"name": NAME})
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [(x["source"], x["version"]) for x in listed] == [
        ("rollback", "3"), ("gates", "1"), ("mlflow-ui", "3"), ("mlflow-ui", "2"), ("gates", "1"),
    ]  # fmt: skip
    ui_fail = listed[3]
    assert ui_fail["gates_passed"] is False and ui_fail["gates"]["failed"] == [
        "oos_profit_factor",
        "oos_max_drawdown",
    ]
    assert "oos_max_drawdown" in ui_fail["warning"] and ui_fail["replaced"] == "1"
    assert listed[1]["gates_passed"] is True and listed[1]["warning"] is None and listed[1]["actor"] == "bob"
    assert listed[0]["gates_passed"] is None
    assert [x["version"] for x in client.get("/api/models/promotions", params={"limit": 2}).json()] == [
        "3",
        "1",
    ]
    assert client.get("/api/models/promotions", params={"name": "other"}).json() == []
    bad = client.get("/api/models/promotions", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]
    bad = client.get("/api/models/promotions", params={"name": "a\x00b"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "name"]
    assert client.get(f"/api/models/{NAME}").status_code == 200  # /models/{name} still answers


@SQLITE_ONLY
def test_version_without_gate_inputs_is_recorded_with_a_warning(
    engine: sa.Engine, registry: ModelRegistry
) -> None:
    log_tiny(registry, NAME, 0)  # no gates_input.json
    move_in_ui(registry, "1")
    [record] = PromotionWatcher(registry).check_once()
    p = record.payload
    assert p["gates"] is None and p["gates_passed"] is None and p["production_before"] is None
    assert "could not be evaluated" in p["warning"] and "gates_input.json" in p["warning"]


@SQLITE_ONLY
def test_two_watchers_record_one_event_per_move(engine: sa.Engine, registry: ModelRegistry) -> None:
    log_tiny(registry, NAME, 0, gates_input=passing_gates_input())
    move_in_ui(registry, "1")
    watchers = [PromotionWatcher(registry), PromotionWatcher(registry)]
    found: list[int] = []
    threads = [threading.Thread(target=lambda w=w: found.append(len(w.check_once()))) for w in watchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(found) == [0, 1], found
    assert len(mlflow_ui_events(engine)) == 1
    # the insert itself refuses when the record moved on since the watcher read it
    newest = promotion_records(engine)[-1].event_id
    assert not _insert_unless_moved_on(engine, newest - 1, 1, {"name": NAME, "version": "1"})
    assert len(mlflow_ui_events(engine)) == 1


@SQLITE_ONLY
def test_promotion_in_flight_through_our_path_is_not_taken_for_a_ui_move(
    engine: sa.Engine, registry: ModelRegistry
) -> None:
    log_tiny(registry, NAME, 0, gates_input=passing_gates_input())
    now_ms = int(time.time() * 1000)
    # tune.promote tags the version, moves the alias, then appends its event: caught in between
    registry.set_version_tags(
        NAME, "1", {PROMOTION_TAG_PREFIX + "kind": "promote", PROMOTION_TAG_PREFIX + "ts_ms": str(now_ms)}
    )
    registry.set_production(NAME, "1")
    watcher = PromotionWatcher(registry, grace_s=120)
    assert watcher.check_once(now_ms=now_ms + 1_000) == []
    # its event never came (the process died): after the grace period it is recorded as a move
    [record] = watcher.check_once(now_ms=now_ms + 121_000)
    assert record.source == "mlflow-ui" and record.payload["gates_passed"] is True


@SQLITE_ONLY
def test_background_thread_notices_a_move_within_its_interval(
    engine: sa.Engine, registry: ModelRegistry
) -> None:
    log_tiny(registry, NAME, 0, gates_input=failing_gates_input())
    watcher = PromotionWatcher(registry, interval_s=0.2).start()
    try:
        move_in_ui(registry, "1")
        deadline = time.monotonic() + 30
        while not mlflow_ui_events(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    [p] = mlflow_ui_events(engine)
    assert p["version"] == "1" and p["gates_passed"] is False
    with pytest.raises(ValueError, match="interval_s"):
        PromotionWatcher(registry, interval_s=0)


def test_start_promotion_watch_of_serve_and_run_records_a_ui_move_on_the_installations_stores(
    tmp_path: Path,
) -> None:
    from raytrade.cmd_serve import start_promotion_watch
    from raytrade.settings import Settings
    from storage import db

    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    registry = ModelRegistry(
        settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
    )
    log_tiny(registry, NAME, 0, gates_input=failing_gates_input())
    watcher = start_promotion_watch(settings, interval_s=0.2)
    try:
        move_in_ui(registry, "1")
        deadline = time.monotonic() + 30
        while not mlflow_ui_events(engine) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    [p] = mlflow_ui_events(engine)
    assert p["version"] == "1" and "oos_profit_factor" in p["warning"]
    assert registry.version(NAME, "1").is_production
    engine.dispose()
