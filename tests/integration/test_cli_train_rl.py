"""``raytrade train-rl`` end to end on a temp installation: a synthetic market with its features in the lake,
a production supervised model trained before the windows; a short real PPO run logged to MLflow (params,
metrics, an RLModule checkpoint that restores), registered and mirrored into ``rl_models``; bad input is
one message naming what is wrong and exit code 2."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient
from model_fixtures import SHADOW_MODEL, install_production_model
from typer.testing import CliRunner

from core.synthetic import generate_market
from core.time import DAY_MS
from pipelines.features import features_for_group
from pipelines.market import write_synthetic_market
from raytrade.cli import app
from raytrade.settings import load_settings
from rl.train import RLTrainConfig
from serve.rl_policy import load_rl_production
from storage import db
from storage.lake import Lake
from storage.registry import ModelRegistry
from storage.rl_registry import RL_EXPERIMENT, RL_MODULE_ARTIFACT, TAG_DECISION_EVERY, rl_model_name
from storage.schema import rl_models

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
T0 = 1_736_121_600_000  # 2025-01-06 00:00 UTC
MODEL_END = T0 + DAY_MS // 4  # the supervised model was trained until 06:00 of the first day
DAYS = 2.5


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_rl")
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    mp.setenv("RAYTRADE_DATA_DIR", str(tmp / "data"))
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = load_settings()
    lake = Lake(settings.lake_root)
    write_synthetic_market(generate_market(list(SYMBOLS), T0, int(DAYS * 1440), seed=5), lake)
    features_for_group(str(settings.lake_root), list(SYMBOLS))
    install_production_model(settings, MODEL_END)
    before = mlflow.get_tracking_uri()
    yield settings
    mlflow.set_tracking_uri(before)
    mp.undo()


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["train-rl", *args])
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result.output


def test_train_rl_trains_logs_registers_and_restores(install, tmp_path, caplog):
    settings = install
    caplog.clear()
    out = run("--symbols", ",".join(SYMBOLS), "--train-days", "1", "--eval-days", "1", "--timesteps", "300",
              "--actor", "alice")  # fmt: skip
    # none of RLlib's start-up warnings (new API stack, its own deprecated RLModule call, gputil) gets
    # past the command's filters to a handler
    shown = [f"{r.name}: {r.getMessage()[:80]}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in shown if m.startswith("ray")] == [], shown
    assert "trained until 2025-01-06 06:00" in out and "train window [2025-01-06 06:00" in out
    assert "iteration 1: " in out and "steps/s" in out and "reward mean" in out
    assert "RL agent: trades" in out and "supervised: trades" in out and "gate action_distribution" in out
    name = rl_model_name(SHADOW_MODEL)
    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    exp = client.get_experiment_by_name(RL_EXPERIMENT)
    (r,) = client.search_runs([exp.experiment_id])
    p, m = r.data.params, r.data.metrics
    assert (
        p["timesteps"] == "300"
        and p["symbols"] == "BTCUSDT,ETHUSDT"
        and p["supervised_model"] == SHADOW_MODEL
    )
    assert int(p["train_start_ms"]) == MODEL_END and int(p["eval_start_ms"]) == MODEL_END + DAY_MS
    # the training cadence is part of the model: param, version tag, evaluation report, served policy
    every = RLTrainConfig().decision_every
    assert every > 1 and p["decision_every"] == str(every)
    assert client.get_model_version(name, "1").tags[TAG_DECISION_EVERY] == str(every)
    evaluation = json.loads(
        Path(client.download_artifacts(r.info.run_id, "evaluation.json", str(tmp_path))).read_text()
    )
    chosen = sum(evaluation["rl"]["actions_chosen"].values())
    bars = sum(evaluation["rl"]["actions_executed"].values())
    assert evaluation["decision_every"] == every and chosen == pytest.approx(bars / every, abs=2)
    registry = ModelRegistry(settings.tracking_uri, artifact_root=settings.mlflow_artifact_root)
    loaded = load_rl_production(registry, name, registry.version(name, "1"))
    assert loaded.decision_every == every and loaded.version == "1"
    assert m["train_env_steps"] >= 300 and m["ppo_env_steps_per_s"] > 0 and "eval_trades" in m
    assert "supervised_profit_factor" in m or "supervised_trades" in m
    assert r.info.status == "FINISHED"
    folder = Path(client.download_artifacts(r.info.run_id, RL_MODULE_ARTIFACT, str(tmp_path)))
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rl.evaluate import action_probabilities

    module = RLModule.from_checkpoint(str(folder))
    probs = action_probabilities(module, np.zeros((3, 17), np.float32))
    assert probs.shape == (3, 4) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    promotion = json.loads(
        Path(client.download_artifacts(r.info.run_id, "promotion.json", str(tmp_path))).read_text()
    )
    assert promotion["actor"] == "alice" and promotion["kind"] in ("promote", "refused")

    engine = db.make_engine(settings.database_url)
    rows = engine.connect().execute(sa.select(rl_models)).mappings().all()
    engine.dispose()
    assert len(rows) == 1 and rows[0]["model_path"] == f"models:/{name}/1"
    assert rows[0]["symbol"] == "BTCUSDT,ETHUSDT" and rows[0]["train_start"] == MODEL_END
    assert rows[0]["is_production"] == (promotion["kind"] == "promote")
    assert ("is production" in out) == (promotion["kind"] == "promote")

    out = run("--symbols", "ETHUSDT", "--train-days", "0.5", "--eval-days", "0.5", "--timesteps", "200",
              "--override-reason", "desk approved", "--actor", "bob")  # fmt: skip
    assert "version 2 is production" in out
    info = client.get_model_version_by_alias(name, "production")
    assert str(info.version) == "2" and info.tags["raytrade.promotion.actor"] == "bob"
    # a version registered before the cadence was recorded decides every bar
    client.delete_model_version_tag(name, "2", TAG_DECISION_EVERY)
    assert load_rl_production(registry, name).decision_every == 1
    engine = db.make_engine(settings.database_url)
    flags = dict(engine.connect().execute(sa.select(rl_models.c.model_path, rl_models.c.is_production)).all())
    engine.dispose()
    assert flags == {f"models:/{name}/1": promotion["kind"] == "promote", f"models:/{name}/2": True}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--symbols", "BTCUSDT,NOPEUSDT"), "unknown symbol(s) NOPEUSDT"),
        (("--symbols", "BTC USDT"), "--symbols"),
        (("--timesteps", "0"), "--timesteps must be > 0, got 0"),
        (("--model", "nobody"), "model 'nobody' has no production version"),
        (("--train-days", "2", "--eval-days", "1"), "too few days of data"),
        (("--start", "2025-01-06"), "was trained until 2025-01-06 06:00"),
        (("--algorithm", "DQN"), "--algorithm 'DQN' is not supported"),
    ],
)
def test_bad_input_names_what_is_wrong_and_exits_2(install, args, message):
    out = run("--symbols", "BTCUSDT", *args, code=2)
    assert message in out.replace("\n", " ")
