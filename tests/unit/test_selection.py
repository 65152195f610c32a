"""Research data selection by coverage (``pipelines.selection.select_data``): the share of the period's
minutes with a candle decides, not where the first and last candles are; a gap in the lake is named.

Synthetic lakes reproduce the case a user met (two months a year apart: three symbols had both, the rest
one); the real 1m bars of ../shared/data/binance_um, read in place, check the rule on real history with
a hole cut into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS, parse_utc
from pipelines.selection import MIN_COVERAGE, select_data
from storage.lake import Lake

MONTH_A = parse_utc("2024-05-01")  # 31 days, three symbols
MONTH_B = parse_utc("2025-04-01")  # 35 days, five symbols
HOLE_DAYS = (MONTH_B - (MONTH_A + 31 * DAY_MS)) / DAY_MS  # 304: ten months


def _candles(lake: Lake, symbol: str, start_ms: int, days: float) -> None:
    n = int(days * DAY_MS // MINUTE_MS)
    close = 100.0 + np.sin(np.arange(n) / 500.0)
    lake.write(
        "candles_1m", symbol,
        {"ts": start_ms + MINUTE_MS * np.arange(n, dtype=np.int64), "open": close, "high": close + 0.1,
         "low": close - 0.1, "close": close, "volume": np.ones(n)},
        source=f"import:/x/{symbol}.parquet",
    )  # fmt: skip


@pytest.fixture
def two_months_a_year_apart(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for symbol in ("ETHUSDT", "SOLUSDT", "XRPUSDT"):
        _candles(lake, symbol, MONTH_A, 31)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT"):
        _candles(lake, symbol, MONTH_B, 35)
    return lake


def test_lake_with_a_ten_month_hole_uses_the_longest_stretch_and_names_the_gap(two_months_a_year_apart):
    sel = select_data(two_months_a_year_apart)
    # not the three symbols whose first and last candles are a year apart at 17% coverage
    assert sel.symbols == ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    assert (sel.start_ms, sel.end_ms) == (MONTH_B, MONTH_B + 35 * DAY_MS) and sel.days == 35.0
    assert sel.coverage == dict.fromkeys(sel.symbols, 1.0)
    assert "100% of the period's minutes" in sel.describe()
    (warning,) = sel.warnings
    assert f"no candles 2024-06-01 00:00 → 2025-04-01 00:00 UTC ({HOLE_DAYS:.1f} days)" in warning
    assert "leaves out 2024-05-01 00:00 → 2024-06-01 00:00 (31.0 days)" in warning


def test_a_period_given_across_the_hole_is_refused_naming_the_gap(two_months_a_year_apart):
    with pytest.raises(
        ConfigError, match=r"gap inside .*no candles 2024-06-01 00:00 → 2025-04-01 00:00 UTC \(304.0 days\)"
    ):
        select_data(two_months_a_year_apart, start_ms=MONTH_A)
    with pytest.raises(
        ConfigError, match=r"ETHUSDT, SOLUSDT have a gap .*no candles for ETHUSDT, SOLUSDT 2024-06-01"
    ):
        select_data(two_months_a_year_apart, ["ETHUSDT", "SOLUSDT"], start_ms=MONTH_A)
    # either side of it is fine
    sel = select_data(two_months_a_year_apart, end_ms=MONTH_A + 31 * DAY_MS)
    assert sel.symbols == ("ETHUSDT", "SOLUSDT", "XRPUSDT") and sel.days == 31.0 and not sel.warnings


def test_explicit_symbols_take_the_longest_stretch_they_all_cover(two_months_a_year_apart):
    sel = select_data(two_months_a_year_apart, ["ETHUSDT", "XRPUSDT"])
    assert sel.symbols == ("ETHUSDT", "XRPUSDT") and sel.start_ms == MONTH_B
    assert "no candles for ETHUSDT, XRPUSDT 2024-06-01 00:00" in sel.warnings[0]


def test_symbols_are_chosen_by_the_share_of_minutes_present_not_by_their_first_and_last_candle(tmp_path):
    lake = Lake(tmp_path)
    _candles(lake, "BTCUSDT", MONTH_A, 365)  # the whole year
    _candles(lake, "ETHUSDT", MONTH_A, 31)  # first and last month only: first and last candle at the ends
    _candles(lake, "ETHUSDT", MONTH_A + 334 * DAY_MS, 31)
    _candles(lake, "SOLUSDT", MONTH_A + 10 * DAY_MS, 355)  # starts 10 days late: 97% of the year
    sel = select_data(lake)
    assert sel.symbols == ("BTCUSDT", "SOLUSDT")
    assert (sel.start_ms, sel.end_ms) == (MONTH_A + 10 * DAY_MS, MONTH_A + 365 * DAY_MS)  # narrowed
    why = sel.skipped["ETHUSDT"]
    assert "17.0% of the period's minutes (< 95%)" in why
    assert "largest hole 2024-06-01 00:00 → 2025-03-31 00:00 UTC (303.0 days)" in why
    with pytest.raises(ConfigError, match=r"no candles for ETHUSDT 2024-06-01 00:00 → 2025-03-31 00:00 UTC"):
        select_data(lake, ["BTCUSDT", "ETHUSDT"], start_ms=MONTH_A, end_ms=MONTH_A + 365 * DAY_MS)
    with pytest.raises(
        ConfigError, match=r"SOLUSDT: candles cover 2024-05-11 00:00 → 2024-05-21 00:00 with 50.0%"
    ):
        select_data(lake, ["BTCUSDT", "SOLUSDT"], start_ms=MONTH_A, end_ms=MONTH_A + 20 * DAY_MS)


def test_a_lake_of_other_candle_intervals_says_research_needs_1m(tmp_path):
    lake = Lake(tmp_path)
    ts = parse_utc("2025-01-01") + 3_600_000 * np.arange(48, dtype=np.int64)
    ones = np.ones(len(ts))
    lake.write("candles_1h", "BTCUSDT", {"ts": ts, "open": ones, "high": ones, "low": ones, "close": ones,
                                          "volume": ones}, source="import:/x")  # fmt: skip
    with pytest.raises(ConfigError, match="no candles_1m \\(it has candles_1h; research needs 1m candles\\)"):
        select_data(lake)


def _real(lake: Lake, shared_data: Path, symbol: str, drop: tuple[int, int] | None = None) -> None:
    table = pq.read_table(shared_data / "binance_um" / "klines_1m" / f"{symbol}.parquet")
    cols = {c: table.column(c).to_numpy() for c in ("open_time", "open", "high", "low", "close", "volume")}
    keep = np.ones(len(cols["open_time"]), dtype=bool)
    if drop is not None:
        keep = (cols["open_time"] < drop[0]) | (cols["open_time"] >= drop[1])
    cols = {("ts" if c == "open_time" else c): v[keep] for c, v in cols.items()}
    lake.write("candles_1m", symbol, cols, source=f"import:{symbol}.parquet")


def test_real_bars_with_a_hole_spliced_in_are_chosen_by_coverage_and_the_hole_is_named(shared_data, tmp_path):
    lake = Lake(tmp_path)
    hole = (parse_utc("2025-05-20"), parse_utc("2025-05-22"))  # 2 of 51 days: ETH keeps 96%
    _real(lake, shared_data, "BTCUSDT")
    _real(lake, shared_data, "ETHUSDT", drop=hole)
    _real(lake, shared_data, "ADAUSDT")  # from 2025-05-09: 90% of the BTC/ETH span
    _real(lake, shared_data, "LINKUSDT")  # 2025-05-04 → 06-03: 59%
    sel = select_data(lake)
    assert sel.symbols == ("BTCUSDT", "ETHUSDT")
    assert sel.coverage["BTCUSDT"] == 1.0 and MIN_COVERAGE <= sel.coverage["ETHUSDT"] < 0.97
    assert sel.bars["ETHUSDT"] == sel.bars["BTCUSDT"] - 2 * 1440
    assert set(sel.skipped) == {"ADAUSDT", "LINKUSDT"}
    assert "89.9% of the period's minutes" in sel.skipped["ADAUSDT"]
    (warning,) = sel.warnings
    assert warning.startswith("ETHUSDT has no candles 2025-05-20 00:00 → 2025-05-22 00:00 UTC (2.0 days)")
    # a hole longer than ETH can afford: left out, the hole named
    lake2 = Lake(tmp_path / "b")
    _real(lake2, shared_data, "BTCUSDT")
    _real(lake2, shared_data, "ETHUSDT", drop=(parse_utc("2025-05-20"), parse_utc("2025-05-25")))
    sel = select_data(lake2)
    assert sel.symbols == ("BTCUSDT",)
    assert "largest hole 2025-05-20 00:00 → 2025-05-25 00:00 UTC (5.0 days)" in sel.skipped["ETHUSDT"]
