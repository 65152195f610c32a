"""`raytrade demo`, as the README runs it (shortened), end to end on the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from core.synthetic import generate_market
from core.time import MINUTE_MS
from raytrade.demo import DEMO_START_MS
from storage.db import make_engine
from storage.lake import Lake

UNIVERSE = "BTCUSDT,ETHUSDT,SOLUSDT,XAUUSDT"


def _demo(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env.update(RAYTRADE_UNIVERSE=UNIVERSE, RAYTRADE_RAY_NUM_CPUS="1", COLUMNS="200")
    cmd = [sys.executable, "-m", "raytrade.cli", "demo", "--days", "1", "--seed", "11", "--no-progress"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("candles_1m", "candles_15m", "candles_1h", "funding_rates", "premium_index", "events")
        }
        out["close_sum_micro"] = round(
            conn.execute(sa.text("SELECT sum(close) FROM candles_1m")).scalar_one() * 1e6
        )
    engine.dispose()
    return out


@pytest.mark.slow
def test_demo_writes_the_synthetic_market_to_lake_and_database_and_reruns_identically(tmp_path):
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "SYNTHETIC" in first.stdout
    assert "FAILED" not in first.stdout
    url = f"sqlite:///{tmp_path / 'data' / 'raytrade.db'}"
    counts = _counts(url)

    market = generate_market(UNIVERSE.split(","), DEMO_START_MS, 1440, 11)
    expected_closes = sum(float(np.sum(market.candles_1m[s]["close"])) for s in market.symbols)
    assert counts["candles_1m"] == 4 * 1440
    assert counts["candles_15m"] == 4 * 96 and counts["candles_1h"] == 4 * 24
    assert counts["premium_index"] == 4 * 1440
    assert counts["funding_rates"] == sum(len(market.funding[s]["ts"]) for s in market.symbols)
    assert counts["events"] == 0  # no data-quality rejects on a clean market
    assert counts["close_sum_micro"] == round(expected_closes * 1e6)

    lake = Lake(tmp_path / "data" / "lake")
    assert lake.sources("candles_1m", "BTCUSDT") == {"2025-01": ("synthetic",)}
    lake_bytes = {p: Path(p).read_bytes() for p in lake.files("candles_1m")}
    assert lake.coverage("candles_1m", "ETHUSDT") == (DEMO_START_MS, DEMO_START_MS + 1439 * MINUTE_MS, 1440)

    second = _demo(tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _counts(url) == counts
    assert {p: Path(p).read_bytes() for p in lake.files("candles_1m")} == lake_bytes
