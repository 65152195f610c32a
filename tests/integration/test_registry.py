"""The MLflow registry on a temporary sqlite store: log → load, pyfunc, aliases, rollback, models mirror."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from model_fixtures import (
    TRAIN_END_MS,
    TRAIN_START_MS,
    failing_gates_input,
    feature_rows,
    log_tiny,
    passing_gates_input,
    predict,
    tiny_model,
)

from core.errors import SchemaMismatchError
from core.features_schema import FEATURE_NAMES
from storage import schema
from storage.model_catalog import list_model_rows
from storage.registry import PREVIOUS_ALIAS, PRODUCTION_ALIAS, ModelNotFoundError, ModelRegistry
from tune.promote import PromotionConfig, PromotionRefused, evaluate_stored, promote, promote_stored, rollback

NAME = "lgbm_multi"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A sqlite tracking store and an artifact directory under tmp_path, set as MLflow's tracking URI."""
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows up here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri, tmp_path / "mlartifacts"
    mlflow.set_tracking_uri(before)
    assert not (tmp_path / "mlruns").exists() and not (REPO / "mlruns").exists()


@pytest.fixture
def registry(tracking: tuple[str, Path]) -> ModelRegistry:
    return ModelRegistry(tracking[0], artifact_root=tracking[1])


@pytest.fixture
def mirrored(tracking: tuple[str, Path], engine: sa.Engine) -> ModelRegistry:
    return ModelRegistry(tracking[0], artifact_root=tracking[1], engine=engine)


def log(reg: ModelRegistry, seed: int = 0, **kw):
    kw.setdefault("metrics", {"profit_factor": 1.4, "max_drawdown": 0.06, "sharpe": 2.0, "trades": 200})
    return log_tiny(reg, NAME, seed, **kw)


def rows() -> pd.DataFrame:
    return feature_rows(seed=9)[0].iloc[:50]


# --- log and load ---------------------------------------------------------------------------------


def test_logged_model_loads_back_with_bit_identical_predictions(registry, tracking):
    model = tiny_model(0)
    info = log(registry, params={"num_boost_round": 5})
    assert (info.name, info.version, info.uri) == (NAME, "1", f"models:/{NAME}/1")
    loaded = registry.load_model(info.uri)
    assert loaded.fingerprint() == model.fingerprint()
    expected, got = predict(model, rows()), predict(loaded, rows())
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    artifacts = list((tracking[1] / "train").rglob("multi_target_model.json"))
    assert len(artifacts) == 1 and artifacts[0].read_bytes() == model.to_bytes()


def test_version_carries_schema_and_training_tags_and_run_metrics(registry):
    model = tiny_model(0)
    info = log(registry, metrics={"profit_factor": math.inf, "sharpe": 1.5}, params={"seed": 0})
    assert info.tags["feature_schema_version"] == str(model.feature_schema_version)
    assert info.tags["feature_schema_hash"] == model.feature_schema_hash
    assert info.tags["label_spec_hash"] == model.label_spec_hash == info.label_spec_hash
    assert (
        info.tags["train_start_ms"] == str(TRAIN_START_MS) and info.tags["fingerprint"] == model.fingerprint()
    )
    assert info.model_id and info.mlflow_model_id and info.mlflow_model_id.startswith("m-")
    assert info.metrics == {"profit_factor": math.inf, "sharpe": 1.5}
    run = registry.client.get_run(info.run_id)
    assert run.data.params["seed"] == "0" and run.info.status == "FINISHED"


def test_pyfunc_load_predicts_the_same_and_keeps_the_schema_guard(registry, tracking):
    model = tiny_model(0)
    log(registry)
    registry.set_production(NAME, "1")
    expected = predict(model, rows())
    pyfunc = registry.load_pyfunc(f"models:/{NAME}@{PRODUCTION_ALIAS}")
    pd.testing.assert_frame_equal(pyfunc.predict(rows()), expected, check_exact=True)
    # the plain MLflow entry point serving would use, against the tracking URI set for this test
    direct = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    pd.testing.assert_frame_equal(direct.predict(rows()), expected, check_exact=True)
    signature = direct.metadata.get_input_schema()
    assert signature.input_names() == list(FEATURE_NAMES)
    assert direct.metadata.get_output_schema().input_names() == list(model.targets)
    with pytest.raises(SchemaMismatchError):
        direct.predict(rows(), params={"feature_schema_hash": "0123456789abcdef"})


def test_log_model_into_an_existing_run(registry):
    experiment = registry.experiment_id("train")
    run_id = registry.client.create_run(experiment).info.run_id
    info = log_tiny(registry, NAME, run_id=run_id, metrics={"sharpe": 1.0})
    assert info.run_id == run_id and info.metrics == {"sharpe": 1.0}


def test_log_model_refuses_a_missing_training_window_or_ambiguous_destination(registry):
    with pytest.raises(ValueError, match="training window"):
        registry.log_model(tiny_model(0), registered_name=NAME, experiment="train")
    with pytest.raises(ValueError, match="exactly one"):
        registry.log_model(tiny_model(0), registered_name=NAME, train_start_ms=0, train_end_ms=1)


def test_unknown_names_and_versions_are_reported(registry):
    log(registry)
    with pytest.raises(ModelNotFoundError):
        registry.version(NAME, "7")
    with pytest.raises(ModelNotFoundError):
        registry.production_version("nope")
    assert registry.versions("nope") == []
    assert registry.production_version(NAME) is None and registry.previous_production(NAME) is None


def test_gates_input_round_trips_through_the_run(registry):
    log(registry, gates_input=passing_gates_input())
    log(registry, seed=1)
    assert registry.read_run_json(NAME, "1", "gates_input.json") == json.loads(
        json.dumps(passing_gates_input())
    )
    assert registry.read_run_json(NAME, "2", "gates_input.json") is None
    assert evaluate_stored(registry, NAME, "1", PromotionConfig()).passed


# --- aliases --------------------------------------------------------------------------------------


def aliases(registry: ModelRegistry) -> dict[str, str]:
    return {k: str(v) for k, v in registry.client.get_registered_model(NAME).aliases.items()}


def test_production_alias_moves_and_previous_follows_the_promotion_chain(registry):
    for seed in range(3):
        log(registry, seed=seed)
    for v in ("1", "2", "3"):
        registry.set_production(NAME, v)
        assert registry.production_version(NAME).version == v
        assert str(registry.client.get_model_version_by_alias(NAME, PRODUCTION_ALIAS).version) == v
    assert registry.previous_production(NAME).version == "2"
    assert aliases(registry) == {PRODUCTION_ALIAS: "3", PREVIOUS_ALIAS: "2"}
    loaded = registry.load_model(f"models:/{NAME}@{PRODUCTION_ALIAS}")
    assert loaded.fingerprint() == tiny_model(2).fingerprint()
    # a rollback walks back without extending the chain; twice goes back twice
    registry.set_production(NAME, "2", record_previous=False)
    assert (
        registry.production_version(NAME).version == "2" and registry.previous_production(NAME).version == "1"
    )
    registry.set_production(NAME, "1", record_previous=False)
    assert registry.previous_production(NAME) is None
    assert aliases(registry) == {PRODUCTION_ALIAS: "1"}


# --- the models table -----------------------------------------------------------------------------


def production_rows(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as c:
        q = sa.select(schema.models.c.strategy, schema.models.c.mlflow_version).where(
            schema.models.c.is_production
        )
        return [tuple(r) for r in c.execute(q)]


def test_models_table_mirrors_each_version_with_exactly_one_production(mirrored, engine):
    infos = [log(mirrored, seed=s, metrics={"profit_factor": math.inf, "sharpe": float(s)}) for s in range(3)]
    got = list_model_rows(engine, NAME)
    assert [r.mlflow_version for r in got] == ["1", "2", "3"]
    assert [r.model_id for r in got] == [i.model_id for i in infos]
    first = got[0]
    assert first.artifact_uri == f"models:/{NAME}/1" and first.strategy == NAME and first.algo == "lgbm"
    assert (first.train_start_ms, first.train_end_ms) == (TRAIN_START_MS, TRAIN_END_MS)
    assert first.metrics == {"profit_factor": "inf", "sharpe": 0.0}
    assert first.mlflow_run_id == infos[0].run_id and first.label_spec_hash == tiny_model(0).label_spec_hash
    assert production_rows(engine) == []
    for v in ("2", "3", "1"):
        mirrored.set_production(NAME, v)
        assert production_rows(engine) == [(NAME, v)]
    assert len(list_model_rows(engine)) == 3  # re-mirroring updated rows, added none


def test_sync_rebuilds_the_mirror_from_mlflow(mirrored, engine, registry):
    log(mirrored)
    registry.set_production(NAME, "1")  # moved without the engine: the mirror is stale
    assert production_rows(engine) == []
    mirrored.sync(NAME)
    assert production_rows(engine) == [(NAME, "1")]


# --- promotion end to end -------------------------------------------------------------------------


def events(engine: sa.Engine) -> list[tuple[str, dict]]:
    with engine.connect() as c:
        q = sa.select(schema.events.c.kind, schema.events.c.payload).order_by(schema.events.c.id)
        return [(k, p) for k, p in c.execute(q)]


def test_promotion_refusal_override_and_rollback_are_recorded_everywhere(mirrored, engine):
    log(mirrored, gates_input=passing_gates_input())
    log(mirrored, seed=1, gates_input=failing_gates_input())
    report, result = promote_stored(mirrored, NAME, "1", cfg=PromotionConfig(), actor="alice")
    assert report.passed and result.kind == "promote"
    with pytest.raises(PromotionRefused, match="oos_profit_factor") as refused:
        promote_stored(mirrored, NAME, None, cfg=PromotionConfig(), actor="alice")  # None: the newest, 2
    assert "oos_max_drawdown" in str(refused.value)
    assert mirrored.production_version(NAME).version == "1"

    report = evaluate_stored(mirrored, NAME, "2", PromotionConfig())
    result = promote(mirrored, NAME, "2", report, override="shadow PF 1.6 over 3 weeks", actor="bob")
    assert (result.kind, result.replaced) == ("override", "1")
    v2 = mirrored.version(NAME, "2")
    assert v2.is_production and v2.promotion["override"] == "shadow PF 1.6 over 3 weeks"
    assert v2.promotion["failed_gates"] == "oos_profit_factor,oos_max_drawdown"
    path = result.report_uri.removeprefix(f"runs:/{v2.run_id}/")
    report_json = mirrored.client.download_artifacts(v2.run_id, path)
    assert json.loads(Path(report_json).read_text())["failed"] == ["oos_profit_factor", "oos_max_drawdown"]
    row = {r.mlflow_version: r for r in list_model_rows(engine, NAME)}["2"]
    assert row.is_production and row.metrics["promotion"]["override"] == "shadow PF 1.6 over 3 weeks"
    assert production_rows(engine) == [(NAME, "2")]

    back = rollback(mirrored, NAME, actor="carol", reason="live fills worse than shadow")
    assert (back.version, back.replaced) == ("1", "2")
    assert production_rows(engine) == [(NAME, "1")]
    kinds = [k for k, _ in events(engine)]
    assert kinds == ["model.promoted", "model.promotion_refused", "model.promoted", "model.rolled_back"]
    assert events(engine)[2][1]["override"] == "shadow PF 1.6 over 3 weeks"
    assert events(engine)[3][1]["reason"] == "live fills worse than shadow"


def test_identical_models_registered_twice_are_two_versions_with_one_fingerprint(registry):
    a, b = log(registry), log(registry)
    assert (a.version, b.version) == ("1", "2") and a.tags["fingerprint"] == b.tags["fingerprint"]
    assert a.model_id != b.model_id
    first, second = registry.load_model(a.uri), registry.load_model(b.uri)
    assert np.array_equal(predict(first, rows()).to_numpy(), predict(second, rows()).to_numpy())
