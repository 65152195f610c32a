"""The Ray Serve Predictor on real Ray and a real MLflow store: batching, versions, alias hot swap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from model_fixtures import feature_rows, log_tiny, tiny_model

from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.messages import Prediction
from storage.registry import ModelRegistry

NAME = "raytrade-lgbm"

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ModelRegistry]:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, ModelRegistry(uri, artifact_root=tmp_path / "artifacts")


@pytest.fixture
def predictor(store):
    from ray import serve

    from serve.predictor import APP_NAME, deploy_predictor

    uri, registry = store
    log_tiny(registry, NAME, seed=0)
    registry.set_production(NAME, "1")
    handle = deploy_predictor(uri, NAME, poll_s=0.2)
    yield handle, registry
    serve.delete(APP_NAME)


def _rows(n: int, seed: int) -> np.ndarray:
    frame = feature_rows(n, seed=seed)[0]
    return frame[list(FEATURE_NAMES)].to_numpy(np.float64)


def test_predictions_equal_the_model_and_name_the_version(predictor):
    handle, _ = predictor
    x = _rows(7, seed=3)
    answer = handle.predict.remote(x).result(timeout_s=60)
    assert isinstance(answer, Prediction) and answer.rows == len(x)
    assert answer.version == "1" and answer.name == NAME
    expected = tiny_model(0).predict(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    assert set(answer.preds) == set(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(answer.preds[k], v)


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(predictor):
    handle, _ = predictor
    blocks = [_rows(3 + i, seed=10 + i) for i in range(12)]
    answers = [r.result(timeout_s=60) for r in [handle.predict.remote(b) for b in blocks]]
    model = tiny_model(0)
    for block, answer in zip(blocks, answers, strict=True):
        expected = model.predict(block, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
        np.testing.assert_array_equal(answer.preds["er_long"], expected["er_long"])
    stats = handle.stats.remote().result(timeout_s=30)
    assert stats["rows"] >= sum(len(b) for b in blocks)
    assert stats["batches"] < len(blocks), "12 concurrent requests were not batched at all"


def test_moving_the_alias_swaps_the_model_without_dropping_requests(predictor):
    handle, registry = predictor
    log_tiny(registry, NAME, seed=1)
    x = _rows(5, seed=4)
    first = tiny_model(0).predict(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)["er_long"]
    second = tiny_model(1).predict(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)["er_long"]
    assert not np.array_equal(first, second)

    async def stream(n: int) -> list[Prediction]:
        out = []
        for _ in range(n):
            out.append(await handle.predict.remote(x))
            await asyncio.sleep(0.02)
        return out

    async def run() -> list[Prediction]:
        task = asyncio.ensure_future(stream(150))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(registry.set_production, NAME, "2")
        return await task

    answers = asyncio.run(run())
    assert len(answers) == 150  # none dropped or failed
    versions = [a.version for a in answers]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions), "an answer of the old version after the new one"
    for a in answers:  # every answer was computed by the version it names
        np.testing.assert_array_equal(a.preds["er_long"], first if a.version == "1" else second)
