"""The dependency rule of DESIGN.md, and that our top-level packages are ours (not PyPI namesakes)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "exchange", "storage", "pipelines", "actors", "tune", "rl", "serve", "raytrade")


@pytest.mark.parametrize("name", PACKAGES)
def test_top_level_package_resolves_inside_this_repository(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO), f"{name} comes from {module.__file__}"


LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contracts() -> list[dict]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken" in proc.stdout, proc.stdout


def _cycle_contract() -> dict:
    (acyclic,) = [c for c in _contracts() if c["type"] == "acyclic_siblings"]
    return acyclic


def test_a_contract_forbids_import_cycles_inside_every_package():
    acyclic = _cycle_contract()
    assert set(acyclic["ancestors"]) == set(PACKAGES)
    assert set(acyclic) == {"name", "type", "ancestors"}  # every depth, no ignored imports


def _lint_package(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Run our cycle contract's type over a small package ``pkg`` written to ``tmp_path``.
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "setup.cfg").write_text(
        "[importlinter]\nroot_package = pkg\n\n[importlinter:contract:cycles]\n"
        f"name = cycles\ntype = {_cycle_contract()['type']}\nancestors = pkg\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([str(LINT_IMPORTS)], cwd=tmp_path, capture_output=True, text=True, env=env)


def test_cycle_contract_breaks_on_a_circle_through_type_checking_imports(tmp_path):
    proc = _lint_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        },
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "No cycles are allowed in pkg." in proc.stdout, proc.stdout
    assert ".a -> .b" in proc.stdout or ".b -> .a" in proc.stdout, proc.stdout


def test_cycle_contract_breaks_on_a_circle_between_subpackages(tmp_path):
    proc = _lint_package(
        tmp_path,
        {
            "__init__.py": "",
            "inner/__init__.py": "",
            "inner/x.py": "from pkg.inner.y import Y\n",
            "inner/y.py": "Y = 1\n\ndef f():\n    from pkg.inner import z\n",
            "inner/z.py": "from pkg.inner import x\n",
        },
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "No cycles are allowed in pkg.inner." in proc.stdout, proc.stdout


def test_cycle_contract_keeps_a_one_way_package(tmp_path):
    proc = _lint_package(
        tmp_path,
        {"__init__.py": "", "a.py": "from pkg import b\n", "b.py": "from pkg import c\n", "c.py": "C = 1\n"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 1 kept, 0 broken" in proc.stdout, proc.stdout


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


def test_only_exchange_binance_imports_python_binance():
    # the contract allows imports through exchange; this pins where the direct ones are
    binance = [c for c in _contracts() if c.get("forbidden_modules") == ["binance"]]
    assert len(binance) == 1 and set(binance[0]["source_modules"]) == set(PACKAGES) - {"core", "exchange"}
    pattern = re.compile(r"^\s*(import binance\b|from binance\b)", re.MULTILINE)
    importers = sorted(
        p.relative_to(REPO).as_posix()
        for name in PACKAGES
        for p in (REPO / name).rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    )
    assert importers == ["exchange/binance/connection.py", "exchange/binance/rest.py"], importers
