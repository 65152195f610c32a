"""`raytrade research` says on the console, before training, what the lake's data leave out: BTCUSDT
missing (btc_* features NaN, BTC regime unknown), mark candles of intervals research does not read, and a
gap in the lake. Real 1m bars of ../shared/data/binance_um, read in place; the training itself is replaced
by a stop, so no Ray is started."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from core.errors import ConfigError
from core.time import parse_utc
from storage.lake import Lake

STOP = "stopped after the data warnings"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "400")

    def stop(*_args: object, **_kwargs: object) -> None:
        raise ConfigError(STOP)

    monkeypatch.setattr("raytrade.research.run_training", stop)
    return tmp_path / "data"


def _copy_into_lake(
    lake: Lake, shared_data: Path, folder: str, dataset: str, symbol: str, **keep: int
) -> None:
    table = pq.read_table(shared_data / "binance_um" / folder / f"{symbol}.parquet")
    cols = {("ts" if c == "open_time" else c): table.column(c).to_numpy() for c in table.column_names}
    rows = np.ones(len(cols["ts"]), dtype=bool)
    if "before" in keep:
        rows &= (cols["ts"] < keep["before"]) | (cols["ts"] >= keep["after"])
    lake.write(dataset, symbol, {k: v[rows] for k, v in cols.items()}, source=f"import:{folder}/{symbol}")


def _app() -> typer.Typer:
    from raytrade import cmd_research

    app = typer.Typer()
    cmd_research.register(app)
    app.command("noop")(lambda: None)  # a group, so `research` is a subcommand as in the real CLI
    return app


def _research(*args: str) -> str:
    result = CliRunner().invoke(_app(), ["research", "--no-progress", *args])
    assert result.exit_code == 2 and STOP in result.output, (result.output, result.exception)
    return " ".join(result.output.split())


def test_console_warns_that_btc_is_missing_and_coarse_marks_are_unused(shared_data, data_dir):
    lake = Lake(data_dir / "lake")
    for symbol in ("ETHUSDT", "SOLUSDT"):
        _copy_into_lake(lake, shared_data, "klines_1m", "candles_1m", symbol)
        _copy_into_lake(lake, shared_data, "mark_8h", "mark_8h", symbol)
    out = _research()
    assert "warning: BTCUSDT has no 1m candles in the lake for the period: the 12 btc_* features" in out
    assert "every entry is sized at 0.5×" in out
    assert "warning: mark_8h candles of 2 symbol(s) (ETHUSDT, SOLUSDT) are in the lake but unused" in out


def test_console_names_a_gap_in_the_lake_and_the_stretch_used(shared_data, data_dir):
    lake = Lake(data_dir / "lake")
    hole = {"before": parse_utc("2025-05-20"), "after": parse_utc("2025-06-01")}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        _copy_into_lake(lake, shared_data, "klines_1m", "candles_1m", symbol, **hole)
    out = _research()
    assert (
        "warning: the lake's 1m candles have a gap: no candles 2025-05-20 00:00 → 2025-06-01 00:00 UTC (12.0 days)"
        in out
    )
    assert "Research uses the longest stretch without one, 2025-06-01 00:00 → 2025-06-24" in out
    assert "BTCUSDT" in out and "btc_* features" not in out  # BTC is there: no BTC warning
    refused = CliRunner().invoke(_app(), ["research", "--no-progress", "--start", "2025-05-10"])
    assert refused.exit_code == 2
    assert "gap inside 2025-05-10 00:00 → the end UTC" in " ".join(refused.output.split())
