"""The parquet lake on a temporary folder: layout, merge, idempotency, reads, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from history_fixtures import files_under, random_candles

from core.errors import DataQualityError
from storage.lake import Coverage, Lake

JAN = 1704067200000  # 2024-01-01 00:00 UTC
FEB = 1706745600000  # 2024-02-01
MAR = 1709251200000  # 2024-03-01
HOUR = 3_600_000


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def _across_months() -> pd.DataFrame:
    return random_candles(FEB - 2 * HOUR, FEB + 2 * HOUR, 60_000, seed=7)


def test_write_splits_by_utc_month_into_hive_paths(lake: Lake) -> None:
    result = lake.write("candles_1m", "BTCUSDT", _across_months(), source="synthetic")
    root = lake.root / "candles_1m" / "symbol=BTCUSDT"
    assert sorted(p.name for p in root.iterdir()) == ["2024-01.parquet", "2024-02.parquet"]
    assert result.rows == 240 and len(result.files_written) == 2
    assert pq.ParquetFile(root / "2024-01.parquet").metadata.num_rows == 120
    assert pq.ParquetFile(root / "2024-01.parquet").metadata.row_group(0).column(0).compression == "LZ4"


def test_read_returns_what_was_written_sorted(lake: Lake) -> None:
    frame = _across_months()
    lake.write("candles_1m", "BTCUSDT", frame.sample(frac=1.0, random_state=1), source="synthetic")
    assert lake.read("candles_1m", "BTCUSDT").equals(frame)


def test_read_range_is_end_exclusive(lake: Lake) -> None:
    frame = _across_months()
    lake.write("candles_1m", "BTCUSDT", frame, source="synthetic")
    part = lake.read("candles_1m", "BTCUSDT", start_ms=FEB - HOUR, end_ms=FEB + HOUR)
    assert part["ts"].iat[0] == FEB - HOUR
    assert part["ts"].iat[-1] == FEB + HOUR - 60_000
    assert len(part) == 120


def test_read_opens_only_the_months_it_needs(lake: Lake) -> None:
    lake.write("candles_1m", "BTCUSDT", _across_months(), source="synthetic")
    (lake.root / "candles_1m" / "symbol=BTCUSDT" / "2024-01.parquet").write_bytes(b"not parquet")
    assert len(lake.read("candles_1m", "BTCUSDT", start_ms=FEB)) == 120
    with pytest.raises(Exception):  # noqa: B017 (the corrupted month is opened when needed)
        lake.read("candles_1m", "BTCUSDT", start_ms=JAN)


def _labels(start_ms: int, end_ms: int) -> dict[str, np.ndarray]:
    ts = np.arange(start_ms, end_ms, 60_000, dtype=np.int64)
    rng = np.random.default_rng(3)
    return {
        "ts": ts,
        "status": np.zeros(len(ts), np.int8),
        "long_y": rng.integers(-1, 2, len(ts)).astype(np.int8),
        "long_ret_net": rng.normal(0, 0.01, len(ts)),
    }


def test_label_datasets_are_partitioned_by_year(lake: Lake) -> None:
    dec_31 = JAN - 24 * HOUR
    labels = _labels(dec_31, FEB + HOUR)
    result = lake.write("labels_1m", "BTCUSDT", labels, source="labels")
    root = lake.root / "labels_1m" / "symbol=BTCUSDT"
    assert sorted(p.name for p in root.iterdir()) == ["2023.parquet", "2024.parquet"]
    assert len(result.files_written) == 2
    assert pq.ParquetFile(root / "2024.parquet").metadata.num_rows == (FEB + HOUR - JAN) // 60_000
    whole = lake.read("labels_1m", "BTCUSDT")
    np.testing.assert_array_equal(whole["ts"].to_numpy(), labels["ts"])
    np.testing.assert_array_equal(whole["long_ret_net"].to_numpy(), labels["long_ret_net"])
    window = lake.read("labels_1m", "BTCUSDT", start_ms=JAN + HOUR, end_ms=FEB)
    assert window["ts"].iloc[0] == JAN + HOUR and window["ts"].iloc[-1] == FEB - 60_000
    assert lake.coverage("labels_1m", "BTCUSDT") == Coverage(
        int(labels["ts"][0]), int(labels["ts"][-1]), len(labels["ts"])
    )
    assert set(lake.sources("labels_1m", "BTCUSDT")) == {"2023", "2024"}


def test_monthly_label_files_of_the_older_layout_are_superseded(lake: Lake) -> None:
    root = lake.root / "labels_1m" / "symbol=BTCUSDT"
    root.mkdir(parents=True)
    lake.write("candles_1m", "BTCUSDT", _across_months(), source="synthetic")  # a valid parquet file
    stale = root / "2024-01.parquet"
    stale.write_bytes((lake.root / "candles_1m" / "symbol=BTCUSDT" / "2024-01.parquet").read_bytes())
    assert lake.read("labels_1m", "BTCUSDT").empty  # not part of the yearly layout: never read
    lake.write("labels_1m", "BTCUSDT", _labels(JAN, JAN + HOUR), source="labels")
    assert sorted(p.name for p in root.iterdir()) == ["2024.parquet"]
    assert len(lake.read("labels_1m", "BTCUSDT")) == 60


def test_merge_keeps_old_rows_and_new_rows_win_on_equal_ts(lake: Lake) -> None:
    frame = _across_months()
    lake.write("candles_1m", "BTCUSDT", frame.iloc[:150], source="binance-dump")
    update = frame.iloc[100:].copy()
    update.loc[update.index[:50], "close"] = update["close"].iloc[:50] * 1.01
    update.loc[update.index[:50], "high"] = np.maximum(update["high"].iloc[:50], update["close"].iloc[:50])
    lake.write("candles_1m", "BTCUSDT", update, source="binance-rest")
    merged = lake.read("candles_1m", "BTCUSDT")
    assert merged["ts"].tolist() == frame["ts"].tolist()
    assert merged.iloc[:100].equals(frame.iloc[:100])
    assert merged.iloc[100:].reset_index(drop=True).equals(update.reset_index(drop=True))
    assert lake.sources("candles_1m", "BTCUSDT") == {
        "2024-01": ("binance-dump", "binance-rest"),
        "2024-02": ("binance-dump", "binance-rest"),
    }


def test_writing_the_same_frame_twice_leaves_identical_files(lake: Lake) -> None:
    frame = _across_months()
    lake.write("candles_1m", "BTCUSDT", frame, source="synthetic")
    before = {p: p.read_bytes() for p in files_under(lake.root)}
    again = lake.write("candles_1m", "BTCUSDT", frame, source="synthetic")
    assert again.files_written == () and len(again.files_unchanged) == 2
    assert {p: p.read_bytes() for p in files_under(lake.root)} == before


def test_rewriting_a_month_gives_the_same_bytes_as_writing_it_once(tmp_path: Path) -> None:
    frame = _across_months()
    once, twice = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    once.write("candles_1m", "BTCUSDT", frame, source="synthetic")
    twice.write("candles_1m", "BTCUSDT", frame.iloc[:60], source="synthetic")
    twice.write("candles_1m", "BTCUSDT", frame, source="synthetic")
    for a, b in zip(files_under(once.root), files_under(twice.root), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_symbols_files_coverage_and_sources(lake: Lake) -> None:
    lake.write("candles_1m", "ETHUSDT", _across_months(), source="synthetic")
    lake.write(
        "candles_1m", "BTCUSDT", random_candles(MAR, MAR + HOUR, 60_000, seed=2), source="import:/x.parquet"
    )
    assert lake.symbols("candles_1m") == ["BTCUSDT", "ETHUSDT"]
    assert lake.symbols("mark_1m") == []
    assert lake.datasets() == ["candles_1m"]
    files = lake.files("candles_1m")
    assert [Path(f).parent.name + "/" + Path(f).name for f in files] == [
        "symbol=BTCUSDT/2024-03.parquet",
        "symbol=ETHUSDT/2024-01.parquet",
        "symbol=ETHUSDT/2024-02.parquet",
    ]
    assert all(Path(f).is_absolute() for f in files)
    assert lake.files("candles_1m", symbols=["ETHUSDT"]) == files[1:]
    assert lake.coverage("candles_1m", "ETHUSDT") == Coverage(FEB - 2 * HOUR, FEB + 2 * HOUR - 60_000, 240)
    assert lake.coverage("candles_1m", "SOLUSDT") is None
    first_ts, last_ts, rows = lake.coverage("candles_1m", "BTCUSDT")
    assert (first_ts, last_ts, rows) == (MAR, MAR + HOUR - 60_000, 60)
    assert lake.sources("candles_1m", "BTCUSDT") == {"2024-03": ("import:/x.parquet",)}


def test_files_read_as_a_hive_dataset_with_the_symbol_column(lake: Lake) -> None:
    lake.write("candles_1m", "ETHUSDT", _across_months(), source="synthetic")
    lake.write("candles_1m", "BTCUSDT", random_candles(MAR, MAR + HOUR, 60_000, seed=2), source="synthetic")
    dataset = ds.dataset(lake.root / "candles_1m", format="parquet", partitioning="hive")
    table = dataset.to_table()
    counts = table.group_by("symbol").aggregate([("ts", "count")]).to_pydict()
    assert dict(zip(counts["symbol"], counts["ts_count"], strict=True)) == {"ETHUSDT": 240, "BTCUSDT": 60}


def test_optional_columns_missing_in_newer_rows_become_null(lake: Lake) -> None:
    frame = random_candles(MAR, MAR + HOUR, 60_000, seed=3)
    lake.write("candles_1m", "BTCUSDT", frame.iloc[:30], source="binance-dump")
    lake.write(
        "candles_1m", "BTCUSDT", frame.iloc[30:][["ts", "open", "high", "low", "close", "volume"]], source="x"
    )
    out = lake.read("candles_1m", "BTCUSDT")
    assert len(out) == 60
    assert out["quote_volume"].iloc[:30].tolist() == frame["quote_volume"].iloc[:30].tolist()
    assert out["quote_volume"].iloc[30:].isna().all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["close"]), "candles_1m/BTCUSDT: candles_1m: missing column"),
        (lambda f: f.assign(ts=f["ts"] // 1000), "not epoch milliseconds"),
        (lambda f: pd.concat([f, f.iloc[:2]]), "2 duplicate ts"),
        (lambda f: f.assign(ts=f["ts"] + 1), "off the 60000 ms grid"),
        (lambda f: f.assign(close=np.where(f.index == 3, np.nan, f["close"])), "column close has 1 NaN"),
        (lambda f: f.assign(open="x"), "column open is not float64"),
    ],
)
def test_bad_frames_are_refused_naming_dataset_symbol_and_problem(lake: Lake, change, message: str) -> None:
    frame = change(random_candles(MAR, MAR + HOUR, 60_000, seed=4))
    with pytest.raises(DataQualityError, match=message) as info:
        lake.write("candles_1m", "BTCUSDT", frame, source="synthetic")
    assert "candles_1m/BTCUSDT" in str(info.value)
    assert files_under(lake.root) == []


def test_bad_symbol_or_unknown_dataset_is_refused(lake: Lake) -> None:
    frame = random_candles(MAR, MAR + HOUR, 60_000, seed=4)
    with pytest.raises(DataQualityError, match="candles_1m/btcusdt: .*upper case"):
        lake.write("candles_1m", "btcusdt", frame, source="synthetic")
    with pytest.raises(DataQualityError, match="unknown dataset 'candles_7m'"):
        lake.write("candles_7m", "BTCUSDT", frame, source="synthetic")


def test_funding_has_no_grid_and_read_of_absent_data_is_empty(lake: Lake) -> None:
    funding = pd.DataFrame({"ts": [MAR + 1, MAR + 8 * HOUR + 2], "funding_rate": [0.0001, -0.0002]})
    lake.write("funding", "BTCUSDT", funding, source="binance-rest")
    assert lake.read("funding", "BTCUSDT")["ts"].tolist() == [MAR + 1, MAR + 8 * HOUR + 2]
    empty = lake.read("funding", "ETHUSDT")
    assert len(empty) == 0 and list(empty.columns) == ["ts", "funding_rate"]


@pytest.mark.ray
def test_ray_data_reads_lake_files_with_symbol_from_the_path(lake: Lake, ray_session: None) -> None:
    import ray

    lake.write("candles_1m", "ETHUSDT", _across_months(), source="synthetic")
    lake.write("candles_1m", "BTCUSDT", random_candles(MAR, MAR + HOUR, 60_000, seed=2), source="synthetic")
    rows = ray.data.read_parquet(lake.files("candles_1m")).take_all()
    assert len(rows) == 300
    assert {r["symbol"] for r in rows} == {"BTCUSDT", "ETHUSDT"}
    by_symbol = sorted((r["symbol"], r["ts"]) for r in rows)
    assert by_symbol[0] == ("BTCUSDT", MAR)
