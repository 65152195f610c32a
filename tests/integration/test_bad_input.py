"""Bad input at every door (issue 14 §1, §2): nothing wrong gets in, nothing good is lost.

Each test states the stores before and after (row counts and checksums of the lake and of the
database, real SQLite and PostgreSQL) and the message the user sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest
import sqlalchemy as sa
from history_fixtures import DumpServer, closed_port, kline_csv, random_candles
from typer.testing import CliRunner

from core.time import ms_to_text, parse_utc
from exchange.dumps import monthly_file
from raytrade.cmd_history import run_history
from raytrade.settings import Settings, load_settings
from storage import schema
from storage.candle_door import REJECTED_CANDLE_KIND
from storage.instruments import sync_universe
from storage.lake import Lake

SYMBOL = "ALGOUSDT"
FEB = parse_utc("2026-02-01")
NOW = parse_utc("2026-03-20T00:00")
MINUTE = 60_000
ROWS = 600  # the dump's rows: ten hours of February


# Stores -------------------------------------------------------------------------------------------
def _lake_state(lake: Lake, dataset: str = "candles_1m", symbol: str = SYMBOL) -> tuple[int, str]:
    frame = lake.read(dataset, symbol, columns=["open", "high", "low", "close"])
    return len(frame), hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]


def _frame_state(frame: pd.DataFrame) -> tuple[int, str]:
    part = frame[["ts", "open", "high", "low", "close"]].reset_index(drop=True)
    return len(part), hashlib.sha256(part.to_csv(index=False).encode()).hexdigest()[:16]


def _db_state(engine: sa.Engine) -> tuple[int, str, int]:
    """(candle rows, checksum of ts/open/high/low/close, events rows)."""
    c = schema.candles_1m.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.ts, c.open, c.high, c.low, c.close).order_by(c.ts)).all()
        events = conn.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar_one()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["ts", "open", "high", "low", "close"])
    frame["ts"] = frame["ts"].astype(np.int64)
    return (*_frame_state(frame), int(events)) if len(frame) else (0, "", int(events))


def _events(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            {"kind": r.kind, "symbol": r.symbol, **r.payload}
            for r in conn.execute(sa.select(schema.events).order_by(schema.events.c.id))
        ]


# Fixtures -----------------------------------------------------------------------------------------
def _candles(seed: int = 1) -> pd.DataFrame:
    return random_candles(FEB, FEB + ROWS * MINUTE, MINUTE, seed=seed, price=0.0879)


@pytest.fixture
def served() -> Iterator[tuple[DumpServer, str]]:
    server = DumpServer()
    with server.running() as url:
        yield server, url


def _settings(tmp_path: Path, dumps_url: str, db_url: str, lake: str = "lake") -> Settings:
    return load_settings(
        environ={},
        data_dir=tmp_path / "data",
        lake_path=tmp_path / lake,
        history_base_url=dumps_url,
        fapi_url=f"http://127.0.0.1:{closed_port()}",
        universe=SYMBOL,
        db_url=db_url,
    )


def _history(settings: Settings, capsys: pytest.CaptureFixture[str], **kwargs) -> str:
    capsys.readouterr()
    run_history(
        settings, kwargs.pop("symbols", None), "klines/1m", "2026-02-01", "2026-03-01",
        progress=False, now_ms=NOW, **kwargs,
    )  # fmt: skip
    return capsys.readouterr().err


# §1 One door for every write ---------------------------------------------------------------------
def test_history_refuses_bad_candles_before_the_lake_and_records_each_as_an_event(
    tmp_path: Path, served: tuple[DumpServer, str], engine: sa.Engine, db_url: str, capsys
) -> None:
    server, url = served
    candles = _candles()
    bad = candles.copy()
    high, low = float(bad.loc[10, "high"]), float(bad.loc[10, "low"])
    bad.loc[10, "high"], bad.loc[10, "low"] = low, high  # high < low
    bad.loc[20, "close"] = 0.0
    bad.loc[30, "open"] = -0.05
    server.add_dump(monthly_file("klines", SYMBOL, "2026-02", "1m"), kline_csv(bad, MINUTE))
    settings = _settings(tmp_path, url, db_url)
    sync_universe(engine, [SYMBOL], now_ms=NOW)
    lake = Lake(settings.lake_root)
    assert _lake_state(lake)[0] == 0 and _db_state(engine) == (0, "", 0)

    out = _history(settings, capsys, to_db=True)

    good = candles.drop(index=[10, 20, 30])
    assert _lake_state(lake) == _frame_state(good)  # the lake holds exactly the good rows
    assert _db_state(engine) == (*_frame_state(good), 3)  # and the database the same, plus 3 events
    events = _events(engine)
    assert [(e["kind"], e["reason"], e["row"]["ts"]) for e in events] == [
        (REJECTED_CANDLE_KIND, "high_below_low", FEB + 10 * MINUTE),
        (REJECTED_CANDLE_KIND, "non_positive_price", FEB + 20 * MINUTE),
        (REJECTED_CANDLE_KIND, "non_positive_price", FEB + 30 * MINUTE),
    ]
    assert events[1]["row"]["close"] == 0.0 and events[2]["row"]["open"] == -0.05
    assert events[0]["row"]["high"] == bad.loc[10, "high"] < events[0]["row"]["low"]
    assert "refused 3 row(s) at the data-quality door (high_below_low 1, non_positive_price 2)" in out
    assert "events: 3 refused row(s) recorded as data-quality events, 0 recorded before" in out
    assert f"database: {ROWS - 3:,} candle row(s) and 0 other row(s) written" in out


def test_history_without_a_database_still_keeps_bad_candles_out_of_the_lake(
    tmp_path: Path, served: tuple[DumpServer, str], capsys
) -> None:
    server, url = served
    bad = _candles()
    bad.loc[5, "close"] = 0.0
    server.add_dump(monthly_file("klines", SYMBOL, "2026-02", "1m"), kline_csv(bad, MINUTE))
    settings = _settings(tmp_path, url, f"sqlite:///{tmp_path / 'unmigrated.db'}")
    out = _history(settings, capsys)
    assert _lake_state(Lake(settings.lake_root)) == _frame_state(bad.drop(index=[5]))
    assert (
        "1 refused row(s) not recorded as events: the database is not migrated: run `raytrade db upgrade`"
        in out
    )


def test_to_db_outside_the_universe_counts_what_the_stores_hold_and_a_rerun_records_nothing_twice(
    tmp_path: Path, served: tuple[DumpServer, str], engine: sa.Engine, db_url: str, capsys
) -> None:
    server, url = served
    candles = _candles()
    server.add_dump(monthly_file("klines", SYMBOL, "2026-02", "1m"), kline_csv(candles, MINUTE))
    sync_universe(engine, ["BTCUSDT"], now_ms=NOW)
    first = _settings(tmp_path, url, db_url, lake="lake1")
    assert _db_state(engine) == (0, "", 0)

    out = _history(first, capsys, to_db=True)

    assert "KeyError" not in out and "Could not fetch" not in out and "Nothing partial" not in out
    assert f"{ROWS:,} row(s) stored in the lake" in out
    assert _lake_state(Lake(first.lake_root)) == _frame_state(candles)  # valid rows: the lake keeps them
    assert _db_state(engine) == (0, "", ROWS)  # no candle of an unknown symbol; one event per row
    assert {e["reason"] for e in _events(engine)} == {"unknown_symbol"}
    assert (
        f"database: 0 candle row(s) and 0 other row(s) written; {ROWS:,} candle row(s) refused as "
        f"data-quality events ({ROWS:,} recorded now, 0 recorded before)"
    ) in out

    second = _settings(tmp_path, url, db_url, lake="lake2")  # a fresh lake: everything again
    out = _history(second, capsys, to_db=True)
    assert _db_state(engine) == (0, "", ROWS)  # nothing recorded twice
    assert f"({0:,} recorded now, {ROWS:,} recorded before)" in out


# §2 Good data is never silently replaced or dropped ----------------------------------------------
def _write_feather(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.rename(columns={"ts": "open_time"}), preserve_index=False)
    feather.write_feather(table, path)
    return path


def _import(tmp_path: Path, db_url: str, *args: str):
    from raytrade import cmd_history

    app = __import__("typer").Typer()
    cmd_history.register(app)
    env = {"RAYTRADE_DATA_DIR": str(tmp_path / "data"), "RAYTRADE_DB_URL": db_url}
    return CliRunner().invoke(app, ["import", *args], env=env)


def test_rows_that_differ_from_the_lake_are_refused_with_their_timestamps_unless_replace(
    tmp_path: Path, engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lake = Lake(tmp_path / "data" / "lake")
    original = _candles()[:100]
    first = _import(
        tmp_path, db_url, str(_write_feather(tmp_path / "a" / "klines_1m" / f"{SYMBOL}.feather", original))
    )
    assert first.exit_code == 0, first.output
    stored = _lake_state(lake)
    assert stored == _frame_state(original)

    overlap = pd.concat([original[50:], _candles()[100:110]], ignore_index=True)
    scaled = overlap.copy()
    for column in ("open", "high", "low", "close"):
        scaled.loc[5:9, column] *= 10  # prices ×10 on five stored timestamps
    path = _write_feather(tmp_path / "b" / "klines_1m" / f"{SYMBOL}.feather", scaled)
    refused = _import(tmp_path, db_url, str(path))

    assert refused.exit_code == 1, refused.output
    first_ts = ", ".join(ms_to_text(FEB + (55 + i) * MINUTE) for i in range(3))
    assert (
        f"refused 5 conflicting row(s) of {path}: candles_1m {SYMBOL}: 5 row(s) differ from what the lake "
        f"holds (first ts: {first_ts} … (5 in all)); kept the stored rows. Pass --replace to take the new values."
    ) in refused.output.replace("\n", "")
    expected = pd.concat([original, _candles()[100:110]], ignore_index=True)
    assert _lake_state(lake) == _frame_state(expected)  # stored rows kept, new rows added
    assert _db_state(engine) == (0, "", 0)

    replaced = _import(tmp_path, db_url, str(path), "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert "replaced 5 stored row(s)" in replaced.output
    expected = pd.concat([original[:50], scaled], ignore_index=True)
    assert _lake_state(lake) == _frame_state(expected)

    again = _import(tmp_path, db_url, str(path))  # identical overlap: idempotent, nothing refused
    assert again.exit_code == 0 and "conflicting" not in again.output
    assert _lake_state(lake) == _frame_state(expected)


def test_rows_sharing_a_timestamp_with_different_values_are_all_refused_and_recorded(
    tmp_path: Path, engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    candles = _candles()[:20]
    twin = candles.iloc[[7]].copy()
    twin["close"] *= 1.5  # +50 %: which row is right cannot be told
    twin["high"] = twin["close"]
    frame = pd.concat([candles, twin], ignore_index=True)
    path = _write_feather(tmp_path / "in" / "klines_1m" / f"{SYMBOL}.feather", frame)
    assert _db_state(engine) == (0, "", 0)

    result = _import(tmp_path, db_url, str(path))

    assert result.exit_code == 0, result.output
    assert "rejected 2 row(s)" in result.output and "conflicting_ts 2" in result.output
    assert _lake_state(Lake(tmp_path / "data" / "lake")) == _frame_state(candles.drop(index=[7]))
    events = _events(engine)
    assert [(e["reason"], e["row"]["ts"], e["row"]["close"]) for e in events] == [
        ("conflicting_ts", int(candles.loc[7, "ts"]), candles.loc[7, "close"]),
        ("conflicting_ts", int(candles.loc[7, "ts"]), twin["close"].iloc[0]),
    ]
    assert "events: 2 refused row(s) recorded as data-quality events, 0 recorded before" in result.output
    rerun = _import(tmp_path, db_url, str(path))
    assert "events: 0 refused row(s) recorded as data-quality events, 2 recorded before" in rerun.output
    assert _db_state(engine) == (0, "", 2)


def test_a_malformed_line_costs_only_that_line_and_is_recorded_with_its_text(
    tmp_path: Path, served: tuple[DumpServer, str], engine: sa.Engine, db_url: str, capsys
) -> None:
    server, url = served
    candles = _candles()
    lines = kline_csv(candles, MINUTE).splitlines()
    bad_line = lines[41].replace(lines[41].split(",")[2], "abc", 1)  # row 40: text in the high
    lines[41] = bad_line
    lines[81] = ",".join(lines[81].split(",")[:5])  # row 80: a short row
    server.add_dump(monthly_file("klines", SYMBOL, "2026-02", "1m"), "\n".join(lines) + "\n")
    settings = _settings(tmp_path, url, db_url)
    assert _db_state(engine) == (0, "", 0)

    out = _history(settings, capsys)

    assert _lake_state(Lake(settings.lake_root)) == _frame_state(candles.drop(index=[40, 80]))
    events = _events(engine)
    assert [(e["reason"], e["row"]["line"]) for e in events] == [
        ("malformed_line", 42),
        ("malformed_line", 82),
    ]
    assert events[0]["row"]["text"] == bad_line and "high='abc' is not a number" in events[0]["detail"]
    assert "refused 2 row(s) at the data-quality door (malformed_line 2)" in out
    assert _db_state(engine) == (0, "", 2)


def test_a_folder_import_that_stops_on_a_bad_file_names_the_files_stored(
    tmp_path: Path, engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in" / "klines_1m"
    _write_feather(folder / "AAAUSDT.feather", _candles()[:30])
    _write_feather(folder / "BBBUSDT.feather", _candles()[:30].drop(columns=["close"]))
    _write_feather(folder / "CCCUSDT.feather", _candles()[:30])
    result = _import(tmp_path, db_url, str(tmp_path / "in"))
    assert result.exit_code == 1
    text = result.output.replace("\n", "")
    assert "BBBUSDT.feather: candles_1m needs column(s) close" in text
    assert "already stored in the lake: AAAUSDT.feather (30 rows)" in text
    lake = Lake(tmp_path / "data" / "lake")
    assert lake.symbols("candles_1m") == ["AAAUSDT"] and _lake_state(lake, symbol="AAAUSDT")[0] == 30


def test_a_csv_file_gets_a_message_about_csv(tmp_path: Path, db_url: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "BTCUSDT.csv"
    _candles()[:5].to_csv(path, index=False)
    result = _import(tmp_path, db_url, str(path), "--dataset", "candles_1m")
    assert result.exit_code == 1
    text = result.output.replace("\n", "")
    assert "CSV files are not imported (only .parquet, .feather, .arrow)" in text and "Feather" not in text
    assert not (tmp_path / "data" / "lake").exists()
    bare = _import(tmp_path, db_url, str(path))  # no --dataset: the format is still what is wrong
    assert bare.exit_code == 1
    assert "CSV files are not imported" in bare.output.replace("\n", "") and "--dataset" not in bare.output
    assert not (tmp_path / "data" / "lake").exists()


def test_a_symbol_binance_does_not_list_is_refused_by_the_instrument_list(
    tmp_path: Path, served: tuple[DumpServer, str], shared_data: Path, capsys
) -> None:
    import typer

    server, url = served
    info = shared_data / "payloads" / "rest" / "exchange_info_2025-12.json"
    server.files["/fapi/v1/exchangeInfo"] = info.read_bytes()
    settings = load_settings(
        environ={}, data_dir=tmp_path / "data", history_base_url=url, fapi_url=url, universe=SYMBOL
    )
    with pytest.raises(typer.BadParameter) as refused:
        _history(settings, capsys, symbols="ZZZZUSDT,BTCUSDT")
    assert str(refused.value) == (
        "not a Binance USDⓈ-M instrument: ZZZZUSDT; exchangeInfo lists 660 symbol(s)"
    )
    assert not (tmp_path / "data").exists()  # nothing fetched, nothing stored
    assert [p for p in server.requests if not p.startswith("/fapi/v1/exchangeInfo")] == []


def test_history_refuses_rows_that_differ_from_the_lake_unless_replace(
    tmp_path: Path, served: tuple[DumpServer, str], capsys
) -> None:
    import typer

    server, url = served
    dump = monthly_file("klines", SYMBOL, "2026-02", "1m")
    candles = _candles()
    server.add_dump(dump, kline_csv(candles, MINUTE))
    settings = _settings(tmp_path, url, f"sqlite:///{tmp_path / 'none.db'}")
    lake = Lake(settings.lake_root)
    _history(settings, capsys)
    assert _lake_state(lake) == _frame_state(candles)

    scaled = candles.copy()
    for column in ("open", "high", "low", "close"):
        scaled.loc[5:9, column] *= 10
    server.add_dump(dump, kline_csv(scaled, MINUTE))
    (settings.lake_root / "_downloads" / "manifest.jsonl").unlink()  # as if fetched afresh
    with pytest.raises(typer.Exit):
        _history(settings, capsys)
    out = capsys.readouterr().err
    first_ts = ", ".join(ms_to_text(FEB + (5 + i) * MINUTE) for i in range(3))
    assert (
        f"candles_1m {SYMBOL}: 5 row(s) differ from what the lake holds (first ts: {first_ts} … (5 in all)); "
        "kept the stored rows. Pass --replace to take the new values."
    ) in out
    assert "The lake kept the rows stored before 1 of these failed" in out and "Nothing partial" not in out
    assert _lake_state(lake) == _frame_state(candles)  # good data not replaced

    out = _history(settings, capsys, replace=True)  # the item was not marked finished: fetched again
    assert "replaced 5 stored row(s)" in out
    assert _lake_state(lake) == _frame_state(scaled)
