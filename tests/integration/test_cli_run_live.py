"""``raytrade run --mode live``: on Binance it is refused before anything starts unless the live guard
approves (the token file of ``raytrade live-confirm`` and the typed phrase; the production model's shadow
record or a recorded override), each missing step named; an unknown mode or venue is a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from raytrade import cmd_db, cmd_run


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


def test_live_on_binance_without_the_two_steps_is_refused_naming_them(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["run", "--mode", "live", "--venue", "binance"], input="LIVE nothing\n")
    assert result.exit_code == 2, result.output
    assert "live trading refused" in result.output and "live-confirm" in result.output


@pytest.mark.parametrize(("args", "hint"), [(["--mode", "paper"], "--mode"), (["--venue", "ftx"], "--venue")])
def test_an_unknown_mode_or_venue_is_a_usage_error(app: typer.Typer, args: list[str], hint: str) -> None:
    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 2 and hint in result.output
