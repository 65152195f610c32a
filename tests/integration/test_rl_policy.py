"""The RL agent's serving on real Ray and a real MLflow store (#17): checkpoints registered by the
``storage.rl_registry`` convention, restored with ``RLModule.from_checkpoint``, served by ``RLPolicy``
with the same actions as the module itself, and hot-swapped when the ``production`` alias moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from rl_fixtures import direct_outputs, make_checkpoint, observations

from storage import db
from storage.registry import ModelRegistry
from storage.rl_registry import (
    TAG_RL_MODEL_ID,
    register_rl_checkpoint,
    rl_model_name,
    set_rl_production,
)
from storage.schema import rl_models

NAME = rl_model_name("raytrade-lgbm")
DAY = 86_400_000

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ModelRegistry, sa.Engine]:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'rt.db'}")
    db.upgrade(engine)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, ModelRegistry(uri, artifact_root=tmp_path / "artifacts", engine=engine), engine


def _register(registry: ModelRegistry, tmp: Path, seed: int, **kw) -> str:
    folder = make_checkpoint(tmp / f"ckpt{seed}", seed)
    v = register_rl_checkpoint(registry, NAME, folder, symbol="BTCUSDT", train_start_ms=0, train_end_ms=90 * DAY,
                               metrics={"pf": 1.3, "sharpe": 0.8}, **kw)  # fmt: skip
    return v.version


def _expected(tmp: Path, seed: int, obs: np.ndarray):
    from serve.rl_policy import module_outputs, restore_module

    return module_outputs(restore_module(str(tmp / f"ckpt{seed}")), obs)


def test_registered_checkpoint_is_mirrored_and_restores_to_the_same_module(store, tmp_path):
    from serve.rl_policy import load_rl_production, module_outputs

    _, registry, engine = store
    version = _register(registry, tmp_path, seed=0)
    info = set_rl_production(registry, NAME, version)
    assert info.is_production and info.tags[TAG_RL_MODEL_ID] == info.run_id
    with engine.connect() as conn:
        row = conn.execute(sa.select(rl_models)).one()
    assert row.model_id == info.run_id and row.is_production and row.model_path == f"models:/{NAME}/1"
    assert row.symbol == "BTCUSDT" and row.algorithm == "PPO" and row.metrics == {"pf": 1.3, "sharpe": 0.8}
    obs = observations(9, seed=1)
    loaded = load_rl_production(registry, NAME)
    actions, probs, values = module_outputs(loaded.module, obs)
    d_actions, d_probs, d_values = direct_outputs(0, obs)
    np.testing.assert_array_equal(actions, d_actions)
    np.testing.assert_allclose(probs, d_probs, rtol=1e-6)
    np.testing.assert_allclose(values, d_values, rtol=1e-6)
    assert probs.shape == (9, 4) and np.allclose(probs.sum(axis=1), 1.0) and np.isfinite(values).all()
    assert len(set(actions.tolist())) > 1, (
        "a seeded module that answers one action for every row tests little"
    )


def test_a_folder_that_is_no_checkpoint_is_refused(store, tmp_path):
    _, registry, _ = store
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="module_state.pkl"):
        register_rl_checkpoint(
            registry, NAME, tmp_path / "empty", symbol="BTCUSDT", train_start_ms=0, train_end_ms=1
        )


def test_rl_policy_serves_the_module_batches_and_hot_swaps(store, tmp_path):
    from ray import serve

    from serve.rl_policy import APP_NAME, PolicyAnswer, deploy_rl_policy

    uri, registry, engine = store
    set_rl_production(registry, NAME, _register(registry, tmp_path, seed=0))
    handle = deploy_rl_policy(uri, "raytrade-lgbm", poll_s=0.2)
    try:
        obs = observations(11, seed=2)
        answer = handle.decide.remote(obs).result(timeout_s=60)
        assert isinstance(answer, PolicyAnswer) and answer.version == "1" and answer.name == NAME
        actions, probs, values = _expected(tmp_path, 0, obs)
        np.testing.assert_array_equal(answer.actions, actions)
        np.testing.assert_allclose(answer.action_probs, probs, rtol=1e-6)
        np.testing.assert_allclose(answer.value_estimates, values, rtol=1e-6)

        blocks = [observations(2 + i, seed=20 + i) for i in range(10)]
        answers = [r.result(timeout_s=60) for r in [handle.decide.remote(b) for b in blocks]]
        for block, a in zip(blocks, answers, strict=True):
            np.testing.assert_array_equal(a.actions, _expected(tmp_path, 0, block)[0])
        stats = handle.stats.remote().result(timeout_s=30)
        assert stats["batches"] < 1 + len(blocks), "10 concurrent requests were not batched at all"

        # the alias moves to version 2: served within a few polls, with version 2's actions
        set_rl_production(registry, NAME, _register(registry, tmp_path, seed=1))
        assert handle.check_now.remote().result(timeout_s=60) == "2"
        swapped = handle.decide.remote(obs).result(timeout_s=60)
        assert swapped.version == "2"
        np.testing.assert_array_equal(swapped.actions, _expected(tmp_path, 1, obs)[0])
        assert not np.allclose(swapped.action_probs, answer.action_probs)
        with engine.connect() as conn:
            flags = dict(conn.execute(sa.select(rl_models.c.model_path, rl_models.c.is_production)).all())
        assert flags == {f"models:/{NAME}/1": False, f"models:/{NAME}/2": True}

        # a version whose checkpoint does not restore: logged and skipped, version 2 keeps serving
        broken = make_checkpoint(tmp_path / "broken", 2)
        (broken / "module_state.pkl").write_bytes(b"not a pickle")
        v3 = register_rl_checkpoint(
            registry, NAME, broken, symbol="BTCUSDT", train_start_ms=0, train_end_ms=1
        )
        set_rl_production(registry, NAME, v3.version)
        assert handle.check_now.remote().result(timeout_s=60) == "2"
        still = handle.decide.remote(obs).result(timeout_s=60)
        assert still.version == "2"
        np.testing.assert_array_equal(still.actions, swapped.actions)
        assert handle.stats.remote().result(timeout_s=30)["failed_versions"] == ["3"]
    finally:
        serve.delete(APP_NAME)
