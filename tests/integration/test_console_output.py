"""What `raytrade research` and `raytrade demo` print: their progress, and none of the libraries' chatter
unless --verbose (``raytrade.quiet``, ``raytrade.training_progress``, ``tune.sweep_progress``).

Research runs in this process on the session's Ray, at the smallest size that trains: its console is
what the command printed (the CLI runner) plus what reached the process's stdout and stderr. The demo
without training runs as its own process, which starts Ray: Ray's start-up warnings show there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raytrade import cli

#: Lines of the libraries' chatter, none of which a quiet run shows.
CHATTER = (
    "Token authentication is enabled",
    "Progress bars disabled",
    "execution finished",
    "Configuration for experiment",
    "View detailed results here",
    "tensorboard",
    "NaN or Inf found in input tensor",
    "Creating initial MLflow database tables",
    "Validating input example",
    "Successfully registered model",
    "Created version",
)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "data"


def _console(args: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    capfd.readouterr()
    result = CliRunner().invoke(cli.app, args)
    captured = capfd.readouterr()
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output + captured.out + captured.err


def _chatter(console: str) -> list[str]:
    return [line for line in CHATTER if line.lower() in console.lower()]


def test_sweep_progress_callback_reports_every_fold_and_end_of_each_trial_in_the_driver(
    ray_session, tmp_path
):
    from ray import tune

    from tune.sweep_progress import TrialUpdate, sweep_progress_callback

    def trainable(config: dict) -> None:
        for k in range(3):
            tune.report({"folds_done": k + 1, "score": config["x"] * (k + 1), "total_trades": 10.0 * (k + 1)})

    updates: list[TrialUpdate] = []
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1.0, 2.0])},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), verbose=0, callbacks=[sweep_progress_callback(updates.append)]
        ),
    )
    assert not tuner.fit().errors  # the callback pickles with the run configuration (tuner.pkl)
    for trial in (0, 1):
        mine = [u for u in updates if u.trial == trial]
        assert [(u.folds_done, u.ended) for u in mine] == [(1, False), (2, False), (3, False), (3, True)]
        assert mine[-1].score == pytest.approx(3.0 * (trial + 1)) and mine[-1].trades == 30.0


@pytest.mark.slow
def test_research_shows_its_stages_and_folds_and_none_of_the_libraries_chatter(
    data_dir, shared_data, ray_session, capfd
):
    from pipelines.importer import import_file
    from storage.lake import Lake

    lake = Lake(data_dir / "lake")
    for folder, dataset in (("klines_1m", "candles_1m"), ("funding", "funding")):
        import_file(lake, shared_data / "binance_um" / folder / "BTCUSDT.parquet", dataset)
    console = _console(
        ["research", "--symbols", "BTCUSDT", "--start", "2025-05-05", "--end", "2025-05-17", "--configs", "2",
         "--rounds", "3", "--no-progress"],
        capfd,
    )  # fmt: skip
    assert _chatter(console) == [], console
    for line in ("training set: ", "stage done: labels", "stage done: sweep",
                 "chosen configuration: fold 3 of 3 backtested", "stage done: report"):  # fmt: skip
        assert line in console, console
    assert list(data_dir.glob("tune/research_sweep/*/result.json"))  # Tune's own result files stay
    assert not list(data_dir.glob("tune/research_sweep/*/events.out.tfevents*"))  # no TensorBoard files
    assert console.count("sweep: trial ") == 2 and "(2/2)" in console, console  # one line per finished trial


def _demo(data_dir: Path, *args: str) -> str:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env.pop("RAY_AUTH_MODE", None)  # set in this process by the session's Ray; a user's shell has none
    env.update(RAYTRADE_DATA_DIR=str(data_dir), RAYTRADE_RAY_NUM_CPUS="1", COLUMNS="200")
    cmd = [sys.executable, "-m", "raytrade.cli", "demo", "--no-train", "--days", "0.5", "--symbols", "1",
           "--no-progress", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=data_dir.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.ray
def test_demo_hides_rays_start_up_warnings_and_mlflow_chatter_unless_verbose(tmp_path):
    # A process of its own: the warnings come from starting Ray (the selftest starts it in a thread).
    quiet = _demo(tmp_path / "quiet")
    assert "selftest ray" in quiet and _chatter(quiet) == [], quiet
    assert "SIGTERM handler is not set" not in quiet
    verbose = _demo(tmp_path / "verbose", "--verbose")
    for line in ("Token authentication is enabled", "SIGTERM handler is not set",
                 "Creating initial MLflow database tables"):  # fmt: skip
        assert line in verbose, verbose
