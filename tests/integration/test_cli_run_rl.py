"""``raytrade run --policy``: an unknown policy is a usage error naming the option; ``--policy rl`` without
a production RL version of ``<model>-rl`` is refused before anything starts, naming the registered model."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from model_fixtures import SHADOW_MODEL, install_production_model
from rich.console import Console
from typer.testing import CliRunner

from raytrade import cmd_db, cmd_run
from raytrade.settings import Settings

T0 = 1_736_121_600_000


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cmd_run, "console", Console(width=250, highlight=False))
    app = typer.Typer()
    cmd_db.register(app)
    cmd_run.register(app)
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    return app


def test_an_unknown_policy_is_a_usage_error(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["run", "--policy", "magic"])
    assert result.exit_code == 2 and "--policy" in result.output, result.output


def test_rl_without_a_production_rl_version_is_refused_naming_it(app: typer.Typer, tmp_path: Path) -> None:
    install_production_model(Settings(_env_file=None, data_dir=tmp_path / "data"), T0)
    args = ["run", "--policy", "rl", "--model", SHADOW_MODEL, "--symbols", "BTCUSDT", "--start", str(T0),
            "--end", str(T0 + 600_000), "--mark-fallback", "last", "--no-api"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"RL model '{SHADOW_MODEL}-rl' has no production version" in result.output
