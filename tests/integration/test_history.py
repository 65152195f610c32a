"""``raytrade history`` against a local dump server (zips + CHECKSUM) and the replay venue for REST."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from history_fixtures import (
    DumpServer,
    closed_port,
    files_under,
    funding_csv,
    kline_csv,
    random_candles,
    random_funding,
)
from typer.testing import CliRunner

from core.time import parse_utc
from exchange.binance.rest import BinanceRest
from exchange.dump_client import DumpClient
from exchange.dumps import daily_file, monthly_file, parse_klines_csv
from exchange.venue import BackgroundServer, create_app
from pipelines.history import HistoryReport, download_history, parse_datasets
from storage.lake import Lake

SYMBOL = "ALGOUSDT"
FEB = parse_utc("2026-02-01")
MAR = parse_utc("2026-03-01")
NOW = parse_utc("2026-03-05T12:34:56")
LAST_CLOSED_MINUTE = parse_utc("2026-03-05T12:33")
MINUTE = 60_000
DAY = 86_400_000
KLINE_KINDS = {"klines": "candles_1m", "markPriceKlines": "mark_1m", "premiumIndexKlines": "premium_1m"}
DATASETS = parse_datasets("klines/1m,markPriceKlines/1m,premiumIndexKlines/1m,fundingRate")
PUBLISHED_DAYS = ("2026-03-01", "2026-03-02", "2026-03-03")  # 2026-03-04 is not published yet


@dataclass
class Market:
    frames: dict[str, pd.DataFrame]
    truth: Lake


@pytest.fixture(scope="module")
def market(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Market:
    """The exchange's truth: real ALGOUSDT February candles, generated March, mark, premium, funding."""
    real = parse_klines_csv((shared_data / "payloads" / "dumps" / "ALGOUSDT-1m-2026-02.csv").read_bytes())
    march = random_candles(MAR, MAR + 6 * DAY, MINUTE, seed=1, price=0.0879)
    premium = random_candles(FEB, MAR + 6 * DAY, MINUTE, seed=3, price=0.001)
    for column in ("open", "high", "low", "close"):
        premium[column] = np.round(premium[column] - 0.0011, 8)  # premium index: around zero, mostly negative
    frames = {
        "candles_1m": pd.concat([real, march], ignore_index=True),
        "mark_1m": random_candles(FEB, MAR + 6 * DAY, MINUTE, seed=2)[["ts", "open", "high", "low", "close"]],
        "premium_1m": premium[["ts", "open", "high", "low", "close"]],
        "funding": random_funding(FEB, MAR + 6 * DAY, seed=4),
    }
    truth = Lake(tmp_path_factory.mktemp("truth") / "lake")
    for dataset, frame in frames.items():
        truth.write(dataset, SYMBOL, frame, source="synthetic")
    return Market(frames, truth)


def _serve_dumps(server: DumpServer, market: Market, shared_data: Path) -> None:
    real_csv = (shared_data / "payloads" / "dumps" / "ALGOUSDT-1m-2026-02.csv").read_text()
    server.add_dump(monthly_file("klines", SYMBOL, "2026-02", "1m"), real_csv)
    for kind in ("markPriceKlines", "premiumIndexKlines"):
        frame = market.frames[KLINE_KINDS[kind]]
        feb = frame[(frame["ts"] >= FEB) & (frame["ts"] < MAR)]
        server.add_dump(monthly_file(kind, SYMBOL, "2026-02", "1m"), kline_csv(feb, MINUTE, header=False))
    for kind, dataset in KLINE_KINDS.items():
        frame = market.frames[dataset]
        for day in PUBLISHED_DAYS:
            lo = parse_utc(day)
            part = frame[(frame["ts"] >= lo) & (frame["ts"] < lo + DAY)]
            server.add_dump(daily_file(kind, SYMBOL, day, "1m"), kline_csv(part, MINUTE))
    funding = market.frames["funding"]
    server.add_dump(monthly_file("fundingRate", SYMBOL, "2026-02"), funding_csv(funding[funding["ts"] < MAR]))


@pytest.fixture
def dump_server(market: Market, shared_data: Path) -> Iterator[tuple[DumpServer, str]]:
    server = DumpServer()
    _serve_dumps(server, market, shared_data)
    with server.running() as url:
        yield server, url


@pytest.fixture
def venue(market: Market) -> Iterator[str]:
    with BackgroundServer(create_app(market.truth, lambda: NOW)) as url:
        yield url


def _run(lake: Lake, dumps_url: str, rest_url: str, **kwargs) -> HistoryReport:
    with BinanceRest(rest_url, max_attempts=2, backoff_s=0.0, sleep=lambda s: None) as rest:
        return download_history(
            lake,
            [SYMBOL],
            kwargs.pop("datasets", DATASETS),
            kwargs.pop("start_ms", FEB),
            NOW + DAY,
            NOW,
            dumps=DumpClient(dumps_url, attempts=2, backoff_s=0.0),
            rest=rest,
            progress=False,
            **kwargs,
        )


def _expected(market: Market, dataset: str, start_ms: int = FEB) -> pd.DataFrame:
    frame = market.frames[dataset]
    stop = NOW if dataset == "funding" else LAST_CLOSED_MINUTE + MINUTE
    return frame[(frame["ts"] >= start_ms) & (frame["ts"] < stop)].reset_index(drop=True)


def test_monthly_daily_and_rest_tail_stitch_without_gaps_or_duplicates(
    tmp_path: Path, market: Market, dump_server: tuple[DumpServer, str], venue: str
) -> None:
    server, dumps_url = dump_server
    lake = Lake(tmp_path / "lake")
    seen: list[tuple[str, str, pd.DataFrame]] = []
    report = _run(lake, dumps_url, venue, on_frame=lambda d, s, f: seen.append((d, s, f)))

    assert report.ok, report.failure_message()
    for dataset in ("candles_1m", "mark_1m", "premium_1m"):
        stored = lake.read(dataset, SYMBOL)
        ts = stored["ts"].to_numpy()
        assert ts[0] == FEB and ts[-1] == LAST_CLOSED_MINUTE, dataset
        assert (np.diff(ts) == MINUTE).all(), f"{dataset}: gap or duplicate"
        assert stored.equals(_expected(market, dataset)), dataset
    funding = lake.read("funding", SYMBOL)
    expected_funding = _expected(market, "funding")
    assert funding["ts"].tolist() == expected_funding["ts"].tolist()
    assert funding["funding_rate"].tolist() == expected_funding["funding_rate"].tolist()
    assert funding["mark_price"].isna().tolist() == (expected_funding["ts"] < MAR).tolist()  # dumps have none

    assert lake.sources("candles_1m", SYMBOL) == {
        "2026-02": ("binance-dump",),
        "2026-03": ("binance-dump", "binance-rest"),
    }
    assert report.downloaded == 4 + 3 * 3  # four monthly files, three days of three kline kinds
    assert sorted(report.absent) == ["ALGOUSDT-1m-2026-03-04.zip"] * 3
    assert report.rest_ranges == 4
    by_dataset: dict[str, list[pd.DataFrame]] = {}
    for dataset, symbol, frame in seen:
        assert symbol == SYMBOL
        by_dataset.setdefault(dataset, []).append(frame)
    for dataset, frames in by_dataset.items():
        combined = pd.concat(frames).drop_duplicates("ts", keep="last").sort_values("ts")
        assert combined["ts"].tolist() == lake.read(dataset, SYMBOL)["ts"].tolist()
    assert report.rows == {(d, SYMBOL): sum(len(f) for f in frames) for d, frames in by_dataset.items()}
    assert not list(lake.root.rglob("*.part"))


def test_rerun_after_a_complete_run_downloads_nothing_and_changes_nothing(
    tmp_path: Path, dump_server: tuple[DumpServer, str], venue: str
) -> None:
    server, dumps_url = dump_server
    lake = Lake(tmp_path / "lake")
    assert _run(lake, dumps_url, venue).ok
    before = {p: p.read_bytes() for p in files_under(lake.root) if p.suffix == ".parquet"}
    server.requests.clear()
    again = _run(lake, dumps_url, venue)
    assert again.ok
    assert server.downloads() == []
    assert again.skipped == 13 and again.downloaded == 0
    assert {p: p.read_bytes() for p in files_under(lake.root) if p.suffix == ".parquet"} == before


def test_resume_after_an_interruption_skips_finished_files(
    tmp_path: Path, market: Market, dump_server: tuple[DumpServer, str], venue: str
) -> None:
    server, dumps_url = dump_server
    lake = Lake(tmp_path / "lake")
    calls = []

    def interrupt_on_the_third_frame(dataset: str, symbol: str, frame: pd.DataFrame) -> None:
        calls.append(dataset)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(lake, dumps_url, venue, on_frame=interrupt_on_the_third_frame)
    manifest = [
        json.loads(line) for line in (lake.root / "_downloads" / "manifest.jsonl").read_text().splitlines()
    ]
    finished = {"/" + entry["key"] for entry in manifest}
    assert len(finished) == 2
    assert not list(lake.root.rglob("*.part"))

    server.requests.clear()
    report = _run(lake, dumps_url, venue)
    assert report.ok, report.failure_message()
    assert report.skipped == 2
    assert finished.isdisjoint(server.downloads())
    assert len(server.downloads()) == 13 - 2
    for dataset in ("candles_1m", "mark_1m", "premium_1m"):
        assert lake.read(dataset, SYMBOL).equals(_expected(market, dataset)), dataset


def test_checksum_mismatch_is_rejected_with_a_message_and_nothing_stored(
    tmp_path: Path, market: Market, shared_data: Path, venue: str
) -> None:
    server = DumpServer()
    _serve_dumps(server, market, shared_data)
    bad = monthly_file("klines", SYMBOL, "2026-02", "1m")
    server.files["/" + bad.path + ".CHECKSUM"] = f"{'0' * 64}  {bad.filename}\n".encode()
    lake = Lake(tmp_path / "lake")
    with server.running() as dumps_url:
        report = _run(lake, dumps_url, venue)

    assert not report.ok
    [failure] = report.failures
    assert (failure.symbol, failure.dataset, failure.what) == (SYMBOL, "klines/1m", "monthly 2026-02")
    assert "checksum mismatch for ALGOUSDT-1m-2026-02.zip" in failure.reason
    assert "ALGOUSDT klines/1m: monthly 2026-02" in report.failure_message()
    assert server.downloads().count("/" + bad.path) == 2  # one retry, then reported
    candles = lake.read("candles_1m", SYMBOL)
    assert candles["ts"].min() == MAR  # February was not stored, and REST did not paper over it
    manifest = (lake.root / "_downloads" / "manifest.jsonl").read_text()
    assert bad.path not in manifest
    assert not list(lake.root.rglob("*.part"))


def test_missing_monthly_dump_falls_back_to_daily_dumps(tmp_path: Path, market: Market, venue: str) -> None:
    server = DumpServer()
    candles = market.frames["candles_1m"]
    for day in ("2026-02-26", "2026-02-27", "2026-02-28"):
        lo = parse_utc(day)
        server.add_dump(
            daily_file("klines", SYMBOL, day, "1m"),
            kline_csv(candles[(candles["ts"] >= lo) & (candles["ts"] < lo + DAY)], MINUTE),
        )
    lake = Lake(tmp_path / "lake")
    start = parse_utc("2026-02-26")
    with server.running() as dumps_url:
        report = _run(lake, dumps_url, venue, datasets=parse_datasets("klines/1m"), start_ms=start)
    assert report.ok, report.failure_message()
    assert "ALGOUSDT-1m-2026-02.zip" in report.absent
    assert report.downloaded == 3
    assert lake.read("candles_1m", SYMBOL).equals(_expected(market, "candles_1m", start))
    assert lake.sources("candles_1m", SYMBOL)["2026-02"] == ("binance-dump",)


def test_old_months_without_dumps_go_to_rest_without_probing_daily_files(
    tmp_path: Path, market: Market, venue: str
) -> None:
    server = DumpServer()  # nothing published at all: the REST venue has everything from February
    lake = Lake(tmp_path / "lake")
    with server.running() as dumps_url:
        report = _run(
            lake, dumps_url, venue, datasets=parse_datasets("klines/1m"), start_ms=parse_utc("2025-11-01")
        )
    assert report.ok, report.failure_message()
    old_months = {"ALGOUSDT-1m-2025-11.zip", "ALGOUSDT-1m-2025-12.zip", "ALGOUSDT-1m-2026-01.zip"}
    assert old_months <= set(report.absent)
    assert not [p for p in server.requests if "/daily/" in p and ("-2025-" in p or "-2026-01-" in p)]
    assert [p for p in server.requests if "/daily/" in p and "-2026-02-" in p]  # February just ended: probed
    assert lake.read("candles_1m", SYMBOL).equals(_expected(market, "candles_1m"))


def test_unreachable_servers_give_a_clear_message_and_nothing_half_written(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    dead = f"http://127.0.0.1:{closed_port()}"
    report = _run(lake, dead, dead)
    assert not report.ok
    assert all(f.unreachable for f in report.failures)
    text = report.failure_message()
    assert (
        "ALGOUSDT klines/1m: monthly 2026-02; daily 2026-03-01 … 2026-03-04 (4 days); REST 2026-03-05 00:00 → 2026-03-05 12:34"
        in text
    )
    assert "ALGOUSDT fundingRate: monthly 2026-02; REST 2026-03-01 00:00 → 2026-03-05 12:34" in text
    assert "connection refused" in text
    assert "rerun the same command later" in text and "raytrade import PATH" in text
    assert "RAYTRADE_HISTORY_BASE_URL" in text
    assert files_under(lake.root) == []


def test_history_command_exits_1_with_the_message_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from raytrade import cmd_history

    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAYTRADE_HISTORY_BASE_URL", dead)
    monkeypatch.setenv("RAYTRADE_FAPI_URL", dead)
    app = typer.Typer()
    cmd_history.register(app)
    start = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-01")
    result = CliRunner().invoke(
        app, ["history", "--symbols", SYMBOL, "--datasets", "klines/1m", "--start", start, "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    assert "Could not fetch" in result.output and "RAYTRADE_HISTORY_BASE_URL" in result.output
    assert "Traceback" not in result.output
    assert files_under(tmp_path / "data") == []


def test_to_db_writes_candles_and_funding_to_the_database_too(
    tmp_path: Path, market: Market, dump_server: tuple[DumpServer, str], venue: str
) -> None:
    import sqlalchemy as sa

    from raytrade.cmd_history import run_history
    from raytrade.settings import load_settings
    from storage import db, schema
    from storage.instruments import sync_universe

    _, dumps_url = dump_server
    settings = load_settings(
        environ={}, data_dir=tmp_path / "data", history_base_url=dumps_url, fapi_url=venue, universe=SYMBOL
    )
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    sync_universe(engine, settings.universe, now_ms=NOW)
    run_history(
        settings,
        None,
        "klines/1m,markPriceKlines/1m,fundingRate",
        "2026-03-01",
        None,
        to_db=True,
        progress=False,
        now_ms=NOW,
    )

    lake = Lake(settings.lake_root)
    with engine.connect() as connection:
        candles = connection.execute(
            sa.select(schema.candles_1m.c.ts, schema.candles_1m.c.close).order_by("ts")
        ).all()
        funding = connection.execute(
            sa.select(schema.funding_rates.c.ts, schema.funding_rates.c.funding_rate).order_by("ts")
        ).all()
    engine.dispose()
    stored = lake.read("candles_1m", SYMBOL)
    assert (
        [int(r[0]) for r in candles]
        == stored["ts"].tolist()
        == _expected(market, "candles_1m", MAR)["ts"].tolist()
    )
    assert [r[1] for r in candles] == stored["close"].tolist()
    assert [int(r[0]) for r in funding] == lake.read("funding", SYMBOL)["ts"].tolist()
    assert [r[1] for r in funding] == _expected(market, "funding", MAR)["funding_rate"].tolist()
