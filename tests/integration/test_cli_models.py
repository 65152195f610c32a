"""CLI smoke: raytrade models / promote / rollback / jobs / worker on the embedded default stores."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import typer
from model_fixtures import failing_gates_input, log_tiny, passing_gates_input
from rich.console import Console
from typer.testing import CliRunner

from raytrade import cmd_db, cmd_models
from raytrade.settings import load_settings
from storage import db, jobs
from storage.registry import ModelRegistry


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setattr(cmd_models, "console", Console(width=200))  # tables unfolded
    app = typer.Typer()
    cmd_db.register(app)
    cmd_models.register(app)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        assert "Traceback" not in result.output
        return result.output

    before = mlflow.get_tracking_uri()
    yield run
    mlflow.set_tracking_uri(before)
    assert not (tmp_path / "mlruns").exists()


def registry() -> ModelRegistry:
    s = load_settings()
    return ModelRegistry(
        s.tracking_uri, artifact_root=s.mlflow_artifact_root, engine=db.make_engine(s.database_url)
    )


def test_models_promote_rollback_jobs_and_worker(cli, tmp_path):
    cli("db", "upgrade")
    reg = registry()
    for seed, gates in ((0, passing_gates_input()), (1, failing_gates_input())):
        metrics = {"profit_factor": 1.4, "sharpe": 2.0}
        log_tiny(reg, "lgbm_multi", seed, gates_input=gates, metrics=metrics)
    assert (tmp_path / "data" / "mlartifacts" / "train").is_dir()

    out = cli("models")
    assert "lgbm_multi" in out
    out = cli("promote", "lgbm_multi", "--version", "1", "--actor", "alice")
    assert "oos_profit_factor" in out and "lgbm_multi version 1 is production" in out

    out = cli("promote", "lgbm_multi", code=1)  # the newest, 2, fails two gates
    assert "FAIL" in out and "oos_max_drawdown" in out and "not promoted" in out
    out = cli("promote", "lgbm_multi", "--override", "risk desk approved", "--actor", "bob")
    assert "version 2 is production" in out and "with override" in out

    out = cli("models", "lgbm_multi")
    assert "production" in out and "override by bob" in out
    assert "production 2 → 1" in cli("rollback", "lgbm_multi", "--reason", "drift", "--actor", "carol")
    assert reg.production_version("lgbm_multi").version == "1"
    cli("rollback", "nope", code=1)

    out = cli("jobs", "enqueue", "promote", "--config", json.dumps({"name": "lgbm_multi", "version": "2"}))
    job_id = out.split()[-1]
    assert "queued" in cli("jobs", "list")
    out = cli("worker", "--once", code=1)  # version 2 fails the gates without an override
    assert "failed" in out and "oos_profit_factor" in out
    engine = db.make_engine(load_settings().database_url)
    assert jobs.get_job(engine, job_id).status == "failed"
    assert "PromotionRefused" in cli("jobs", "list", "--status", "failed")
    assert "no queued job" in cli("worker", "--once")
    cli("promote", "lgbm_multi", "--gates", '{"max_drawdown": 2}', code=2)
    looser = json.dumps({"max_drawdown": 0.3, "min_profit_factor": 1.0})
    out = cli("promote", "lgbm_multi", "--version", "2", "--gates", looser, "--actor", "dave")
    assert "version 2 is production" in out and "all gates passed" in out
    cli("jobs", "enqueue", "dance", code=2)
    cli("jobs", "enqueue", "promote", "--config", "{not json", code=2)
    engine.dispose()
