"""data.binance.vision dump URLs, checksums and CSV parsers (real ALGOUSDT dump, no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from history_fixtures import funding_csv, kline_csv, random_candles, random_funding, zip_bytes

from core.errors import DataQualityError
from exchange.dumps import (
    daily_file,
    lake_dataset,
    monthly_file,
    parse_checksum,
    parse_dump,
    parse_funding_csv,
    parse_klines_csv,
    read_zip,
    verify_checksum,
)

BASE = "https://data.binance.vision"
FEB_2026_MS = 1769904000000  # 2026-02-01 00:00 UTC
MAR_2026_MS = 1772323200000  # 2026-03-01 00:00 UTC


@pytest.fixture(scope="module")
def algo_csv(shared_data: Path) -> bytes:
    return (shared_data / "payloads" / "dumps" / "ALGOUSDT-1m-2026-02.csv").read_bytes()


def test_monthly_kline_url_matches_binance_layout() -> None:
    dump = monthly_file("klines", "BTCUSDT", "2024-01", "1m")
    assert dump.url(BASE) == f"{BASE}/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip"
    assert dump.checksum_url(BASE + "/") == dump.url(BASE) + ".CHECKSUM"


def test_daily_kline_url_matches_binance_layout() -> None:
    dump = daily_file("klines", "BTCUSDT", "2024-01-15", "1m")
    assert dump.url(BASE) == f"{BASE}/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-15.zip"


def test_mark_and_premium_urls_use_their_folders() -> None:
    mark = monthly_file("markPriceKlines", "ETHUSDT", "2025-06", "1m")
    premium = daily_file("premiumIndexKlines", "ETHUSDT", "2025-06-02", "1m")
    assert mark.path == "data/futures/um/monthly/markPriceKlines/ETHUSDT/1m/ETHUSDT-1m-2025-06.zip"
    assert premium.path == "data/futures/um/daily/premiumIndexKlines/ETHUSDT/1m/ETHUSDT-1m-2025-06-02.zip"
    assert (mark.dataset, premium.dataset) == ("mark_1m", "premium_1m")


def test_funding_rate_dump_is_monthly_only_without_interval_folder() -> None:
    dump = monthly_file("fundingRate", "BTCUSDT", "2024-01")
    assert (
        dump.url(BASE)
        == f"{BASE}/data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip"
    )
    assert lake_dataset("fundingRate", None) == "funding"
    with pytest.raises(ValueError, match="monthly only"):
        daily_file("fundingRate", "BTCUSDT", "2024-01-15", "1m")


def test_dump_periods_cover_month_and_day_including_december_rollover() -> None:
    december = monthly_file("klines", "BTCUSDT", "2024-12", "1m")
    assert december.start_ms == 1733011200000  # 2024-12-01
    assert december.end_ms == 1735689600000  # 2025-01-01
    day = daily_file("klines", "BTCUSDT", "2024-02-29", "1m")
    assert day.end_ms - day.start_ms == 86_400_000


def test_bad_month_symbol_or_interval_are_refused() -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        monthly_file("klines", "BTCUSDT", "2024-13", "1m")
    with pytest.raises(ValueError, match="interval"):
        monthly_file("klines", "BTCUSDT", "2024-01", "7m")
    with pytest.raises(ValueError, match="upper case"):
        monthly_file("klines", "btcusdt", "2024-01", "1m")


def test_parse_real_algousdt_dump_rows_first_last_and_grid(algo_csv: bytes) -> None:
    frame = parse_klines_csv(algo_csv, name="ALGOUSDT-1m-2026-02.csv")
    assert len(frame) == 28 * 1440 == 40320
    assert frame["ts"].iat[0] == FEB_2026_MS
    assert frame["ts"].iat[-1] == MAR_2026_MS - 60_000
    assert (np.diff(frame["ts"].to_numpy()) == 60_000).all()
    first = frame.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (0.1038, 0.1040, 0.1037, 0.1040)
    assert first["volume"] == 242160.4
    assert first["quote_volume"] == 25142.90126
    assert first["trade_count"] == 102
    assert first["taker_buy_volume"] == 126196.5
    assert list(frame.columns) == [
        "ts", "open", "high", "low", "close", "volume", "quote_volume", "trade_count", "taker_buy_volume",
    ]  # fmt: skip
    assert frame["ts"].dtype == np.int64 and frame["trade_count"].dtype == np.int64


def test_parse_headerless_variant_gives_the_same_frame(algo_csv: bytes) -> None:
    headerless = algo_csv.split(b"\n", 1)[1]
    assert headerless[:1].isdigit()
    assert parse_klines_csv(headerless).equals(parse_klines_csv(algo_csv))


def test_parse_microsecond_timestamps_are_converted_to_ms(algo_csv: bytes) -> None:
    lines = algo_csv.decode().splitlines()
    micro = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        fields[0] = fields[0] + "000"
        fields[6] = fields[6] + "999"
        micro.append(",".join(fields))
    assert parse_klines_csv("\n".join(micro)).equals(parse_klines_csv(algo_csv))


def test_parse_mark_price_dump_keeps_ohlc_and_drops_volumes(algo_csv: bytes) -> None:
    frame = parse_klines_csv(algo_csv, kind="markPriceKlines")
    assert list(frame.columns) == ["ts", "open", "high", "low", "close"]
    assert len(frame) == 40320


def test_parse_dump_reads_the_csv_inside_the_zip(algo_csv: bytes) -> None:
    dump = monthly_file("klines", "ALGOUSDT", "2026-02", "1m")
    data = zip_bytes("ALGOUSDT-1m-2026-02.csv", algo_csv.decode())
    assert read_zip(data) == algo_csv
    assert parse_dump(dump, data).equals(parse_klines_csv(algo_csv))


def test_parse_funding_csv_with_and_without_header() -> None:
    events = random_funding(FEB_2026_MS, MAR_2026_MS, seed=3)
    text = funding_csv(events)
    frame = parse_funding_csv(text)
    assert list(frame.columns) == ["ts", "funding_rate"]
    assert frame["ts"].tolist() == events["ts"].tolist()
    assert frame["funding_rate"].tolist() == events["funding_rate"].tolist()
    assert parse_funding_csv(text.split("\n", 1)[1]).equals(frame)


def test_generated_kline_csv_roundtrips_exactly() -> None:
    candles = random_candles(FEB_2026_MS, FEB_2026_MS + 3_600_000, 60_000, seed=1)
    assert parse_klines_csv(kline_csv(candles, 60_000)).equals(candles)


def test_wrong_column_count_is_rejected_naming_the_file() -> None:
    with pytest.raises(DataQualityError, match=r"X-1m-2024-01\.csv: 3 columns, expected 12"):
        parse_klines_csv("1,2,3\n", name="X-1m-2024-01.csv")


def test_unexpected_header_is_rejected_naming_the_file() -> None:
    with pytest.raises(DataQualityError, match="f.csv: header"):
        parse_funding_csv("time,rate,x\n1,2,3\n", name="f.csv")


def test_malformed_value_costs_only_its_line_which_is_kept_for_an_event(algo_csv: bytes) -> None:
    broken = algo_csv.replace(b"0.1038,0.1040", b"0.1038,abc", 1)
    good = parse_klines_csv(algo_csv)
    frame = parse_klines_csv(broken, name="bad.csv")
    [(reason, detail, raw)] = frame.attrs["rejected_lines"]
    assert (
        reason == "malformed_line"
        and detail.startswith("bad.csv line ")
        and "='abc' is not a number" in detail
    )
    assert raw["text"] in broken.decode() and "abc" in str(raw["text"])
    assert len(frame) == len(good) - 1
    kept = good[good["ts"].isin(frame["ts"])].reset_index(drop=True)
    assert kept.equals(frame)


def test_short_line_costs_only_its_line(algo_csv: bytes) -> None:
    lines = algo_csv.decode().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:4])
    frame = parse_klines_csv("\n".join(lines), name="short.csv")
    [(reason, detail, _)] = frame.attrs["rejected_lines"]
    assert (reason, detail) == ("malformed_line", "short.csv line 6: 4 fields, expected 12")
    assert len(frame) == len(parse_klines_csv(algo_csv)) - 1


def test_file_without_a_readable_line_is_refused_naming_the_file() -> None:
    with pytest.raises(DataQualityError, match="bad.csv: malformed CSV, no readable line"):
        parse_klines_csv("1,a,b,c,d,e,f,g,h,i,j,k\n", name="bad.csv")


def test_not_a_zip_is_rejected_naming_the_file() -> None:
    with pytest.raises(DataQualityError, match="X.zip: not a readable zip"):
        read_zip(b"<html>not found</html>", "X.zip")


def test_checksum_matches_and_returns_digest() -> None:
    data = b"payload"
    digest = hashlib.sha256(data).hexdigest()
    assert verify_checksum(data, f"{digest}  A.zip\n", "A.zip") == digest


def test_checksum_mismatch_names_the_file() -> None:
    text = f"{'0' * 64}  BTCUSDT-1m-2024-01.zip\n"
    with pytest.raises(DataQualityError, match=r"checksum mismatch for BTCUSDT-1m-2024-01\.zip"):
        verify_checksum(b"payload", text, "BTCUSDT-1m-2024-01.zip")


def test_checksum_file_for_another_file_or_malformed_is_rejected() -> None:
    with pytest.raises(DataQualityError, match="names another file"):
        parse_checksum(f"{'a' * 64}  OTHER.zip", "A.zip")
    with pytest.raises(DataQualityError, match="not '<sha256>  <filename>'"):
        parse_checksum("<Error>NoSuchKey</Error>", "A.zip")
