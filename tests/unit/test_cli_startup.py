"""``raytrade --help`` imports no heavy library, and lists exactly what the loaded commands would.

The command modules import Ray, MLflow, LightGBM and pandas only inside the commands that use them
(``raytrade.commands``); these tests fail when a top-level import brings one back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
import typer.main
from typer.testing import CliRunner

from raytrade import cli, defaults
from raytrade.commands import COMMANDS

REPO = Path(__file__).resolve().parents[2]
#: What made ``raytrade --help`` take ~10 s: none of it is needed to list the commands.
HEAVY = ("ray", "mlflow", "lightgbm", "torch", "sklearn", "scipy", "pandas", "pyarrow", "numpy",
         "sqlalchemy", "pydantic", "binance")  # fmt: skip
#: The machine-learning and cluster stack: no command's own help needs it.
ML_STACK = ("ray", "mlflow", "lightgbm", "torch", "sklearn")


def _imported_packages(args: list[str]) -> set[str]:
    """Run ``python -X importtime -m raytrade.cli *args`` and return the top-level packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "raytrade.cli", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "raytrade: research and trading on Ray." in proc.stdout
    names = [
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    ]
    return {name.split(".")[0] for name in names}


def test_help_imports_no_heavy_library():
    imported = _imported_packages(["--help"])
    assert "typer" in imported  # the measurement saw the imports
    assert sorted(imported & set(HEAVY)) == []


def test_each_command_module_imports_no_machine_learning_or_ray_library():
    # One process loads the commands module by module; the first to bring in the stack is named.
    script = f"""
import json, sys
from raytrade.commands import COMMANDS, load_module_commands
for name, module, _ in COMMANDS:
    load_module_commands(module)
    found = sorted(m for m in {ML_STACK!r} if m in sys.modules)
    if found:
        print(json.dumps([module, found]))
        break
else:
    print(json.dumps(None))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) is None


def test_help_lists_each_command_with_the_summary_of_its_loaded_command(capsys):
    group = typer.main.get_group(cli.app)
    group.main(["--help"], prog_name="raytrade", standalone_mode=False)
    listed = capsys.readouterr().out
    ctx = group.make_context("raytrade", ["--help"], resilient_parsing=True)
    assert all(group.get_command(ctx, name) is not None for name, _, _ in COMMANDS)  # loads every module
    group.main(["--help"], prog_name="raytrade", standalone_mode=False)
    assert capsys.readouterr().out == listed
    assert sorted(group.commands) == sorted(name for name, _, _ in COMMANDS)  # no command left out


def test_a_mistyped_command_is_refused_with_a_suggestion():
    result = CliRunner().invoke(cli.app, ["reserch"])
    assert result.exit_code == 2
    assert "Did you mean 'research'" in result.output  # (and 'resume', as close a spelling)


def test_help_defaults_are_the_flows_constants():
    # In a subprocess: importing the flows (Ray, MLflow) opens a socket, which tests/unit refuse.
    script = "from raytrade.demo_shadow import SHADOW_MINUTES as m; from raytrade.demo_train import MODEL_NAME as n; print(n, m)"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [defaults.MODEL_NAME, str(defaults.SHADOW_MINUTES)]
