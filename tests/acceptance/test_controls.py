"""The research flow's positive and negative control at a small size (``bench/controls.py`` runs K seeds).

One seed of each through ``tune.controls.run_control`` (the function the bench runs): the market with
the planted lead-lag edge promotes because every gate passed (no override exists in the controls), on
out-of-sample trades, and recovers a share of the oracle's Sharpe on the same pooled span; the null
market of the same seed is refused, with the failing gates named and explained.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.synthetic import PLANTED_EDGE_STRENGTH
from storage.registry import ModelRegistry
from tune.controls import MODEL_NAME, ControlResult, ControlSize, run_control
from tune.gates import GATE_NAMES

pytestmark = pytest.mark.slow

SEED = 1
SIZE = ControlSize(days=20, folds=3, configs=2, rounds=30, train_days=8, val_days=3, test_days=3)
STRENGTH = PLANTED_EDGE_STRENGTH


def _production(workdir: Path) -> str | None:
    """The version in ``production`` of the run's own MLflow store (what a Predictor would load)."""
    version = ModelRegistry(f"sqlite:///{workdir / 'mlflow.db'}").production_version(MODEL_NAME)
    return None if version is None else version.version


@pytest.fixture(scope="module")
def planted(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[ControlResult, Path]:
    workdir = tmp_path_factory.mktemp("planted")
    return run_control(workdir, seed=SEED, edge_strength=STRENGTH, size=SIZE), workdir


@pytest.fixture(scope="module")
def null(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[ControlResult, Path]:
    workdir = tmp_path_factory.mktemp("null")
    return run_control(workdir, seed=SEED, edge_strength=0.0, size=SIZE), workdir


def test_planted_edge_promotes_on_out_of_sample_evidence(planted: tuple[ControlResult, Path]) -> None:
    result, workdir = planted
    assert result.gates.passed, result.gates.failure_text()
    assert result.promoted
    assert _production(workdir) == "1"
    assert result.oos_trades >= 30
    assert result.oos_sharpe > 0
    assert result.oracle_sharpe > 0
    assert 0.3 <= result.recovery <= 1.5
    assert len(result.test_windows) == 3
    assert result.oos_start_ms == result.test_windows[0][0]
    assert result.oos_end_ms <= result.test_windows[-1][1]


def test_null_market_is_refused_with_named_gates(null: tuple[ControlResult, Path]) -> None:
    result, workdir = null
    assert not result.gates.passed
    assert not result.promoted
    assert _production(workdir) is None
    assert result.gates.failed
    assert set(result.gates.failed) <= set(GATE_NAMES)
    for name in result.gates.failed:
        assert result.gates.gate(name).reason
    assert math.isnan(result.recovery)
