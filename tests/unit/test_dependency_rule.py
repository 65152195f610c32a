"""The dependency rule of DESIGN.md, and that our top-level packages are ours (not PyPI namesakes)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "exchange", "storage", "pipelines", "actors", "tune", "rl", "serve", "raytrade")


@pytest.mark.parametrize("name", PACKAGES)
def test_top_level_package_resolves_inside_this_repository(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO), f"{name} comes from {module.__file__}"


def test_import_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run(
        [str(exe), "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 9 kept, 0 broken" in proc.stdout, proc.stdout


def test_core_imports_nothing_that_does_io_at_runtime():
    # import-linter sees static imports; this also catches a dynamic import made at import time.
    code = (
        "import sys, pkgutil, importlib, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'): importlib.import_module(m.name)\n"
        "bad = [m for m in ('ray', 'sqlalchemy', 'psycopg', 'redis', 'binance', 'requests', 'mlflow') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"core pulled in {proc.stdout.strip()}"
