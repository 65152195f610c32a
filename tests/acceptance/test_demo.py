"""`raytrade demo`, as the README runs it (shortened: 4 symbols, 6 days, 2 configurations), end to end on
the embedded default: lake and database, sweep in MLflow, production alias, report, identical rerun, and the
golden figures of ``demo_golden.json`` (how they were produced is written in that file)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from core.synthetic import PLANTED_EDGE_STRENGTH, SyntheticParams, generate_market
from core.time import MINUTE_MS
from raytrade.demo import DEMO_START_MS
from storage.db import make_engine
from storage.lake import Lake

UNIVERSE = "BTCUSDT,ETHUSDT,SOLUSDT,XAUUSDT"
DAYS = 6
BARS = DAYS * 1440
GOLDEN = Path(__file__).with_name("demo_golden.json")
#: Absolute tolerance of every pinned figure: a change in the simulator or the policy is a diff to explain.
GOLDEN_ABS = 1e-9


def _demo(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env.update(RAYTRADE_UNIVERSE=UNIVERSE, RAYTRADE_RAY_NUM_CPUS="1", COLUMNS="200")
    cmd = [sys.executable, "-m", "raytrade.cli", "demo", "--days", str(DAYS), "--seed", "11", "--configs", "2",
           "--rounds", "10", "--no-progress"]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("candles_1m", "candles_15m", "candles_1h", "funding_rates", "premium_index")
        }
        out["events"] = conn.execute(  # data-quality events only: promotions are events too
            sa.text("SELECT count(*) FROM events WHERE kind LIKE 'data_quality%'")
        ).scalar_one()
        out["close_sum_micro"] = round(
            conn.execute(sa.text("SELECT sum(close) FROM candles_1m")).scalar_one() * 1e6
        )
    engine.dispose()
    return out


def _metrics(report_dir: Path) -> str:
    data = json.loads((report_dir / "report.json").read_text())
    return json.dumps({"summaries": data["summaries"], "folds": data["folds"], "gates": data["gates"]})


def _check_mlflow(tracking_uri: str, promoted: bool) -> None:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    sweeps = client.get_experiment_by_name("raytrade-demo-sweeps")
    assert sweeps is not None
    runs = client.search_runs([sweeps.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parents
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) >= 2
    versions = client.search_model_versions("name='raytrade-lgbm'")
    assert versions  # registered whether or not the gates passed
    aliases = {alias for v in versions for alias in v.aliases}
    if promoted:  # by the gates alone: the demo gives no override
        production = client.get_model_version_by_alias("raytrade-lgbm", "production")
        assert production.tags["raytrade.promotion.kind"] == "promote"
    else:
        assert "production" not in aliases


def _check_shadow(stdout: str, page: str, report: dict[str, Any]) -> None:
    """The production model replayed the market's last day through the realtime path, and its trades are
    the backtest's on the same window; the report leads with promotion, evidence and shadow replay."""
    shadow = report["shadow"]
    end = DEMO_START_MS + BARS * MINUTE_MS
    assert (shadow["start_ms"], shadow["end_ms"]) == (end - 1440 * MINUTE_MS, end)
    assert shadow["symbols"] == 4 and shadow["signals"] == 4 * 1440  # one signal per symbol and minute
    assert shadow["identical"] is True and shadow["problems"] == []
    assert shadow["shadow_trades"] == shadow["backtest_trades"] == shadow["matched"]
    assert shadow["model_version"] == report["version"]
    verdict = "identical entries and exits" if shadow["matched"] else "identical: no trades on either side"
    for text in (" ".join(stdout.split()), page):  # the console wraps long lines
        assert "shadow replay of 2025-01-11 00:00 → 2025-01-12 00:00 UTC through the realtime path" in text
        assert verdict in text
    assert "shadow replay vs backtest (same model, same window)" in page
    promotion = "PROMOTED BY OVERRIDE" if report["override"] else "every promotion gate passed"
    order = [page.index(t) for t in (promotion, "evidence (pooled out-of-sample", "shadow replay of",
                                     "promotion gates", "shadow replay vs backtest", "last fold test window")]  # fmt: skip
    assert order == sorted(order), order


def golden_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The pinned figures of a demo ``report.json``: the promotion outcome, each last-fold backtest's final
    equity, trades, PF and Sharpe, each fold's trades, PF and Sharpe (model and baselines), each gate's
    value. NaN is stored as None (no trades: PF and Sharpe are undefined)."""

    def num(value: Any) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    gates = report["gates"]
    return {
        "promotion": {
            "kind": "override" if report["override"] else "gates passed" if gates["passed"] else "refused",
            "passed": gates["passed"],
            "failed": gates["failed"],
            "version": report["version"],
        },
        "last_fold": {
            name: {k: num(s[k]) for k in ("end_equity", "trades", "profit_factor", "sharpe")}
            for name, s in sorted(report["summaries"].items())
        },
        "folds": [
            {
                "strategy": f["strategy"],
                "fold": int(f["fold"]),
                **{k: num(f[k]) for k in ("trades", "profit_factor", "sharpe")},
            }
            for f in sorted(report["folds"], key=lambda f: (f["strategy"], f["fold"]))
        ],  # fmt: skip
        "gates": {g["name"]: num(g["value"]) for g in gates["gates"]},
    }


def _assert_matches(actual: Any, expected: Any, where: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (where, actual, expected)
        for key in expected:
            _assert_matches(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (where, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_matches(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=0, abs=GOLDEN_ABS), where
    else:
        assert actual == expected, where


@pytest.mark.slow
def test_demo_writes_the_synthetic_market_to_lake_and_database_and_reruns_identically(tmp_path):
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "SYNTHETIC" in first.stdout
    assert "FAILED" not in first.stdout
    assert "PROMOTED BY OVERRIDE" not in first.stdout  # the demo promotes on evidence or not at all
    promoted = "every promotion gate passed" in first.stdout
    assert promoted or "NOT PROMOTED" in first.stdout
    assert "with a planted edge" in first.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in first.stdout
    report_dir = tmp_path / "data" / "reports" / "demo"
    page = (report_dir / "report.html").read_text()
    assert "SYNTHETIC market" in page
    for section in ("metrics", "fold stability", "promotion gates", "Tune sweep", "feature importance",
                    "foundation checks"):  # fmt: skip
        assert section in page
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    assert pngs and all(f'src="{name}"' in page for name in pngs)
    _check_mlflow(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}", promoted)
    if promoted:  # the shadow replay runs only after a promotion
        _check_shadow(first.stdout, page, json.loads((report_dir / "report.json").read_text()))
    else:
        assert "no model was promoted by this run, so there is nothing to replay" in page
    metrics = _metrics(report_dir)
    golden = json.loads(GOLDEN.read_text())
    _assert_matches(golden_figures(json.loads((report_dir / "report.json").read_text())), golden["figures"])
    assert promoted == (golden["figures"]["promotion"]["kind"] == "gates passed")
    url = f"sqlite:///{tmp_path / 'data' / 'raytrade.db'}"
    counts = _counts(url)

    market = generate_market(
        UNIVERSE.split(","), DEMO_START_MS, BARS, 11, SyntheticParams(edge_strength=PLANTED_EDGE_STRENGTH)
    )
    expected_closes = sum(float(np.sum(market.candles_1m[s]["close"])) for s in market.symbols)
    assert counts["candles_1m"] == 4 * BARS
    assert counts["candles_15m"] == 4 * BARS // 15 and counts["candles_1h"] == 4 * BARS // 60
    assert counts["premium_index"] == 4 * BARS
    assert counts["funding_rates"] == sum(len(market.funding[s]["ts"]) for s in market.symbols)
    assert counts["events"] == 0  # no data-quality rejects on a clean market
    # summation order differs (SQL vs numpy): equal to ~1e-12 relative
    assert counts["close_sum_micro"] == pytest.approx(expected_closes * 1e6, rel=1e-12)

    lake = Lake(tmp_path / "data" / "lake")
    assert lake.sources("candles_1m", "BTCUSDT") == {"2025-01": ("synthetic",)}
    lake_bytes = {p: Path(p).read_bytes() for p in lake.files("candles_1m")}
    assert lake.coverage("candles_1m", "ETHUSDT") == (
        DEMO_START_MS,
        DEMO_START_MS + (BARS - 1) * MINUTE_MS,
        BARS,
    )

    second = _demo(tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _counts(url) == counts
    assert {p: Path(p).read_bytes() for p in lake.files("candles_1m")} == lake_bytes
    assert _metrics(report_dir) == metrics


if (
    __name__ == "__main__"
):  # print the golden figures of a report.json: python tests/acceptance/test_demo.py PATH
    print(json.dumps(golden_figures(json.loads(Path(sys.argv[1]).read_text())), indent=1))
