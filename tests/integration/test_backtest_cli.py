"""`raytrade backtest`: the baselines on a lake, through the one simulator, into a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.strategies import BASELINES


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    full.update({"RAYTRADE_UNIVERSE": "BTCUSDT,ETHUSDT,SOLUSDT", "COLUMNS": "200"}, **env)
    return subprocess.run([sys.executable, "-m", "raytrade.cli", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_backtest_runs_every_baseline_writes_a_report_and_is_deterministic(tmp_path):
    assert _run(["synth", "--days", "8", "--seed", "3"], tmp_path).returncode == 0
    first = _run(["backtest", "--out", "r1"], tmp_path)
    assert first.returncode == 0, first.stderr
    second = _run(["backtest", "--out", "r2"], tmp_path)
    assert second.returncode == 0, second.stderr
    report = (tmp_path / "r1" / "report.html").read_text()
    for name in BASELINES:
        assert name in report
    assert "SYNTHETIC" in report
    for png in ("equity_baselines.png", "costs_baselines.png"):
        assert (tmp_path / "r1" / png).stat().st_size > 10_000
    s1 = json.loads((tmp_path / "r1" / "report.json").read_text())["summaries"]
    s2 = json.loads((tmp_path / "r2" / "report.json").read_text())["summaries"]
    assert s1 == s2
    assert all(s1[name]["trades"] > 0 for name in BASELINES)
    # costs are charged: every strategy paid fees
    assert all(s1[name]["fees"] > 0 for name in BASELINES)


def test_backtest_without_data_says_what_to_do(tmp_path):
    proc = _run(["backtest"], tmp_path)
    assert proc.returncode == 2
    assert "raytrade import" in proc.stderr
