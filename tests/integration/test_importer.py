"""``raytrade import`` of the real binance_um folder and of single files, into a lake on tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from history_fixtures import files_under
from typer.testing import CliRunner

from core.errors import DataQualityError
from pipelines.importer import import_path
from storage.lake import Coverage, Lake

FOLDER_TO_DATASET = {
    "klines_1m": "candles_1m",
    "mark_8h": "mark_8h",
    "funding": "funding",
    "long/klines_1h": "candles_1h",
    "long/mark_1h": "mark_1h",
    "long/funding": "funding",
}
T0 = 1746372780000  # 2025-05-04 15:33 UTC


@pytest.fixture(scope="module")
def imported(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, object, dict]:
    lake = Lake(tmp_path_factory.mktemp("import") / "lake")
    report = import_path(lake, shared_data / "binance_um")
    index = json.loads((shared_data / "binance_um" / "index.json").read_text())
    return lake, report, index


def test_every_file_of_index_json_is_imported_with_exact_row_counts(imported, shared_data: Path) -> None:
    lake, report, index = imported
    by_key = {
        str(Path(f.path).relative_to(shared_data / "binance_um").with_suffix("")): f for f in report.files
    }
    expected_keys = {k for k in index if not k.startswith("long/klines_5m/")}
    assert set(by_key) == expected_keys
    for key in expected_keys:
        f = by_key[key]
        folder, symbol = key.rsplit("/", 1)
        assert (f.dataset, f.symbol) == (FOLDER_TO_DATASET[folder], symbol), key
        assert f.rows_read == f.rows_written == index[key]["rows"], key
        assert f.rejected == {}, key
    assert report.rows_rejected == 0


def test_single_source_datasets_cover_exactly_what_index_json_says(imported) -> None:
    lake, _, index = imported
    for key, entry in index.items():
        folder, symbol = key.rsplit("/", 1)
        if folder in ("funding", "long/funding", "long/klines_5m"):
            continue
        coverage = lake.coverage(FOLDER_TO_DATASET[folder], symbol)
        assert coverage == Coverage(entry["first"], entry["last"], entry["rows"]), key


def test_both_funding_folders_merge_into_one_dataset_without_duplicates(imported, shared_data: Path) -> None:
    lake, _, index = imported
    symbols = {k.rsplit("/", 1)[1] for k in index if k.startswith(("funding/", "long/funding/"))}
    assert lake.symbols("funding") == sorted(symbols)
    for symbol in symbols:
        ts: set[int] = set()
        keys = [k for k in (f"funding/{symbol}", f"long/funding/{symbol}") if k in index]
        for key in keys:
            ts |= set(pd.read_parquet(shared_data / "binance_um" / f"{key}.parquet")["funding_time"].tolist())
        coverage = lake.coverage("funding", symbol)
        assert coverage == Coverage(
            min(index[k]["first"] for k in keys), max(index[k]["last"] for k in keys), len(ts)
        )


def test_five_minute_klines_are_skipped_with_a_note(imported) -> None:
    _, report, _ = imported
    assert len(report.skipped) == 1
    assert "long/klines_5m (19 file(s)): no lake dataset for 5m bars" in report.skipped[0]
    assert "candles_5m" not in Lake(Path("/nonexistent")).datasets()


def test_import_records_the_source_path_and_reimport_changes_nothing(imported, shared_data: Path) -> None:
    lake, _, _ = imported
    sources = lake.sources("candles_1m", "BTCUSDT")
    assert set(sources.values()) == {
        (f"import:{(shared_data / 'binance_um' / 'klines_1m' / 'BTCUSDT.parquet').resolve()}",)
    }
    before = {p: p.stat().st_mtime_ns for p in files_under(lake.root / "candles_1m")}
    again = import_path(lake, shared_data / "binance_um" / "klines_1m" / "BTCUSDT.parquet")
    assert again.files[0].dataset == "candles_1m" and again.files[0].rows_written == 73139
    assert {p: p.stat().st_mtime_ns for p in files_under(lake.root / "candles_1m")} == before


def _bad_candles() -> pd.DataFrame:
    n = 10
    frame = pd.DataFrame(
        {
            "open_time": T0 + 60_000 * np.arange(n, dtype=np.int64),
            "open": np.full(n, 100.0),
            "high": np.full(n, 101.0),
            "low": np.full(n, 99.0),
            "close": np.full(n, 100.5),
            "volume": np.full(n, 3.0),
        }
    )
    frame.loc[2, "close"] = np.inf
    frame.loc[4, "high"] = 99.5
    frame.loc[6, "volume"] = -2.0
    frame.loc[8, "open_time"] = frame.loc[7, "open_time"]
    return frame


def test_generic_file_with_dataset_and_symbol_reports_rejected_rows(tmp_path: Path) -> None:
    path = tmp_path / "export.feather"
    feather.write_feather(pa.Table.from_pandas(_bad_candles(), preserve_index=False), path)
    lake = Lake(tmp_path / "lake")
    report = import_path(lake, path, dataset="candles_1m", symbol="ETHUSDT")
    [f] = report.files
    assert (f.rows_read, f.rows_written, f.rows_rejected) == (10, 6, 4)
    assert f.rejected == {
        "non_finite_price": 1,
        "ohlc_outside_range": 1,
        "negative_volume": 1,
        "duplicate_ts": 1,
    }
    assert any(e.startswith("duplicate_ts: ETHUSDT ts=") for e in f.examples)
    stored = lake.read("candles_1m", "ETHUSDT")
    assert stored["ts"].tolist() == [T0 + 60_000 * i for i in (0, 1, 3, 5, 7, 9)]
    assert "rejected 4 row(s)" in report.summary() and "negative_volume 1" in report.summary()


def test_generic_file_without_dataset_or_symbol_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    _bad_candles().to_parquet(path)
    lake = Lake(tmp_path / "lake")
    with pytest.raises(DataQualityError, match="pass --dataset"):
        import_path(lake, path)
    with pytest.raises(DataQualityError, match="export.*pass --symbol"):
        import_path(lake, path, dataset="candles_1m")
    assert files_under(lake.root) == []


def test_missing_required_column_is_refused_naming_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "funding" / "BTCUSDT.parquet"
    path.parent.mkdir()
    pd.DataFrame({"funding_time": [T0], "rate": [0.0001]}).to_parquet(path)
    with pytest.raises(DataQualityError, match=r"BTCUSDT\.parquet: funding needs column\(s\) funding_rate"):
        import_path(Lake(tmp_path / "lake"), path)


def test_seconds_and_datetime_timestamps_are_converted(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    seconds = tmp_path / "funding" / "BTCUSDT.parquet"
    seconds.parent.mkdir()
    pd.DataFrame({"fundingTime": [1746403200, 1746432000], "fundingRate": [0.0001, 0.0002]}).to_parquet(
        seconds
    )
    report = import_path(lake, seconds)
    assert "epoch seconds" in report.files[0].notes[0]
    stamps = tmp_path / "mark_8h" / "ETHUSDT.parquet"
    stamps.parent.mkdir()
    when = pd.to_datetime([1746403200000, 1746432000000], unit="ms", utc=True)
    pd.DataFrame(
        {"timestamp": when, "open": [1.0, 1.0], "high": [2.0, 2.0], "low": [0.5, 0.5], "close": [1.5, 1.5]}
    ).to_parquet(stamps)
    import_path(lake, stamps)
    assert lake.read("funding", "BTCUSDT")["ts"].tolist() == [1746403200000, 1746432000000]
    assert lake.read("mark_8h", "ETHUSDT")["ts"].tolist() == [1746403200000, 1746432000000]


def test_import_command_prints_the_summary(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from raytrade import cmd_history

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    app = typer.Typer()
    cmd_history.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(shared_data / "binance_um" / "mark_8h")])
    assert result.exit_code == 0, result.output
    assert "mark_8h: 4,694 row(s), 18 symbol(s)" in result.output
    assert len(Lake(tmp_path / "data" / "lake").symbols("mark_8h")) == 18
    bad = runner.invoke(app, ["import", str(tmp_path / "nope.parquet")])
    assert bad.exit_code == 1 and "does not exist" in bad.output
