"""`raytrade research` on real Binance data (../shared/data/binance_um): data selection rules on small
hand-built lakes, and a shortened run on 2 symbols × 3 weeks of the real 1m set, end to end."""

from __future__ import annotations

import html
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import sqlalchemy as sa

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS, parse_utc
from pipelines.selection import select_data
from storage.lake import Lake

T0 = parse_utc("2025-05-04")


def _candles(lake: Lake, symbol: str, start_ms: int, days: float, source: str) -> None:
    n = int(days * DAY_MS // MINUTE_MS)
    close = np.linspace(100.0, 110.0, n)
    lake.write(
        "candles_1m", symbol,
        {"ts": start_ms + MINUTE_MS * np.arange(n, dtype=np.int64), "open": close, "high": close + 0.1,
         "low": close - 0.1, "close": close, "volume": np.ones(n)},
        source=source,
    )  # fmt: skip


def test_default_selection_keeps_the_symbols_spanning_the_lake_and_says_why_others_are_left_out(tmp_path):
    lake = Lake(tmp_path)
    _candles(lake, "BTCUSDT", T0, 20, "import:/x/BTCUSDT.parquet")
    _candles(lake, "ETHUSDT", T0 + 5 * MINUTE_MS, 20, "import:/x/ETHUSDT.parquet")
    _candles(lake, "DOGEUSDT", T0 + 10 * DAY_MS, 10, "import:/x/DOGEUSDT.parquet")
    sel = select_data(lake)
    assert sel.symbols == ("BTCUSDT", "ETHUSDT")
    assert "DOGEUSDT" in sel.skipped and "cover 2025-05-14 00:00" in sel.skipped["DOGEUSDT"]
    # narrowed to what both cover: ETH starts 5 minutes later
    assert (sel.start_ms, sel.end_ms) == (T0 + 5 * MINUTE_MS, T0 + 20 * DAY_MS)
    assert sel.bars == {"BTCUSDT": 20 * 1440 - 5, "ETHUSDT": 20 * 1440 - 5}
    # a period given by the user keeps DOGE when it spans it
    sel = select_data(lake, start_ms=parse_utc("2025-05-15"), end_ms=parse_utc("2025-05-23"))
    assert sel.symbols == ("BTCUSDT", "DOGEUSDT", "ETHUSDT") and sel.days == 8.0
    with pytest.raises(ConfigError, match="DOGEUSDT: candles cover 2025-05-14 00:00"):
        select_data(lake, ["BTCUSDT", "DOGEUSDT"], start_ms=T0)
    with pytest.raises(ConfigError, match="no candles_1m in the lake .* for SOLUSDT"):
        select_data(lake, ["SOLUSDT"])
    with pytest.raises(ConfigError, match="research needs at least 3"):
        select_data(lake, start_ms=parse_utc("2025-05-20"), end_ms=parse_utc("2025-05-21"))


def test_synthetic_rows_in_the_period_are_refused(tmp_path):
    lake = Lake(tmp_path)
    _candles(lake, "BTCUSDT", T0, 20, "synthetic")
    with pytest.raises(ConfigError, match="SYNTHETIC rows: research runs on real data only"):
        select_data(lake)
    with pytest.raises(ConfigError, match="has no candles_1m: run `raytrade import"):
        select_data(Lake(tmp_path / "empty"))


SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = "2025-05-05", "2025-05-26"  # 3 weeks


@pytest.fixture
def real_lake(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from pipelines.importer import import_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("COLUMNS", "200")
    lake = Lake(tmp_path / "data" / "lake")
    for symbol in SYMBOLS:
        for folder, dataset in (("klines_1m", "candles_1m"), ("funding", "funding")):
            path = shared_data / "binance_um" / folder / f"{symbol}.parquet"
            assert import_file(lake, path, dataset).rows_rejected == 0
    before = mlflow.get_tracking_uri()
    yield tmp_path / "data"
    mlflow.set_tracking_uri(before)


@pytest.mark.slow
def test_research_on_real_data_reports_what_the_numbers_show_and_leaves_production_alone(
    real_lake, ray_session
):
    import typer
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from raytrade import cmd_research
    from storage.db import make_engine
    from storage.registry import ModelRegistry
    from tune.promote import PromotionConfig, evaluate_stored

    app = typer.Typer()
    cmd_research.register(app)
    app.command("noop")(lambda: None)  # a group, so `research` is a subcommand as in the real CLI
    args = ["research", "--symbols", ",".join(SYMBOLS), "--start", START, "--end", END, "--configs", "2",
            "--rounds", "8", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.output
    assert "REAL DATA" in out and "BTCUSDT, ETHUSDT" in out and "2025-05-05 00:00 → 2025-05-26 00:00" in out

    report_dir = real_lake / "reports" / "research"
    page = (report_dir / "report.html").read_text()
    data = json.loads((report_dir / "report.json").read_text())
    assert "REAL DATA: Binance USDⓈ-M perpetual 1m candles" in page and "SYNTHETIC" not in page
    assert "2025-05-05 00:00 → 2025-05-26 00:00 UTC" in page and "BTCUSDT, ETHUSDT" in page
    assert data["real_data"] is True and data["symbols"] == list(SYMBOLS)
    assert (data["start_ms"], data["end_ms"]) == (parse_utc(START), parse_utc(END))
    assert data["bars"] == {s: 21 * 1440 for s in SYMBOLS}
    assert len(data["fold_windows"]) == 3
    for section in ("walk-forward folds", "fold stability", "promotion gates", "Tune sweep",
                    "feature importance", "policy on the last fold"):  # fmt: skip
        assert section in page

    # the fold numbers of the report are the ones on the registered version's MLflow run
    tracking = f"sqlite:///{real_lake / 'mlflow.db'}"
    run = MlflowClient(tracking_uri=tracking).get_run(data["run_id"])
    model_folds = [f for f in data["folds"] if f["strategy"] == "model"]
    assert len(model_folds) == 3
    for f in model_folds:
        for key in ("trades", "total_return", "max_drawdown", "profit_factor", "sharpe"):
            value = f[key]
            if isinstance(value, float) and np.isfinite(value):
                assert run.data.metrics[f"fold{int(f['fold'])}_{key}"] == pytest.approx(
                    value, rel=1e-12, abs=1e-15
                )
            else:
                assert f"fold{int(f['fold'])}_{key}" not in run.data.metrics
    engine = make_engine(f"sqlite:///{real_lake / 'raytrade.db'}")
    registry = ModelRegistry(tracking, artifact_root=real_lake / "mlartifacts", engine=engine)
    stored_gates = evaluate_stored(registry, data["model_name"], data["version"], PromotionConfig())
    assert stored_gates.to_dict()["failed"] == data["gates"]["failed"]

    # the words follow the numbers
    model = data["summaries"]["model"]
    findings = " ".join(data["findings"])
    assert ("never traded" in findings) == (model["trades"] == 0)
    if model["trades"] > 0:
        assert ("lost money" in findings) == (model["total_return"] < 0)
    for sentence in data["findings"]:
        assert html.escape(sentence) in page

    # production: moved only if every gate passed (no override was given)
    production = registry.production_version(data["model_name"])
    if data["gates"]["failed"]:
        assert data["promotion_kind"] == "refused" and production is None
        assert "NOT PROMOTED" in page and "no override was given" in page
        with engine.connect() as conn:
            kinds = [r[0] for r in conn.execute(sa.text("SELECT kind FROM events"))]
        assert any("refused" in k for k in kinds), kinds
    else:
        assert production is not None and production.version == data["version"]
    engine.dispose()
