"""Planning of the history download (which dumps, which REST gaps) and its failure report."""

from __future__ import annotations

import pytest

from core.time import DAY_MS, parse_utc
from pipelines.history_plan import (
    Failure,
    HistoryDataset,
    HistoryReport,
    month_starts,
    parse_datasets,
    plan_daily,
    plan_monthly,
    uncovered,
)

KLINES = HistoryDataset("klines", "1m")
FUNDING = HistoryDataset("fundingRate", None)
NOW = parse_utc("2026-03-05T12:34:56")


def test_month_starts_lists_every_touched_month() -> None:
    assert month_starts(parse_utc("2025-11-15"), parse_utc("2026-02-01")) == ["2025-11", "2025-12", "2026-01"]
    assert month_starts(parse_utc("2025-11-15"), parse_utc("2025-11-15")) == []


def test_plan_monthly_takes_whole_past_months_only() -> None:
    files = plan_monthly(KLINES, "BTCUSDT", parse_utc("2025-12-20"), NOW + DAY_MS, NOW)
    assert [f.date for f in files] == ["2025-12", "2026-01", "2026-02"]
    assert all(f.period == "monthly" for f in files)


def test_plan_daily_takes_current_month_days_before_today() -> None:
    files = plan_daily(KLINES, "BTCUSDT", parse_utc("2025-12-20"), NOW + DAY_MS, NOW)
    assert [f.date for f in files] == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def test_plan_daily_respects_start_and_end() -> None:
    files = plan_daily(KLINES, "BTCUSDT", parse_utc("2026-03-02T06:00"), parse_utc("2026-03-04"), NOW)
    assert [f.date for f in files] == ["2026-03-02", "2026-03-03"]


def test_plan_daily_fallback_covers_a_past_month() -> None:
    files = plan_daily(KLINES, "BTCUSDT", parse_utc("2026-02-26"), NOW, NOW, month="2026-02")
    assert [f.date for f in files] == ["2026-02-26", "2026-02-27", "2026-02-28"]


def test_funding_has_monthly_dumps_but_no_daily() -> None:
    assert [f.date for f in plan_monthly(FUNDING, "BTCUSDT", parse_utc("2026-02-01"), NOW, NOW)] == [
        "2026-02"
    ]
    assert plan_daily(FUNDING, "BTCUSDT", parse_utc("2026-02-01"), NOW, NOW) == []


def test_end_in_the_past_needs_no_daily_files() -> None:
    end = parse_utc("2026-01-01")
    assert [f.date for f in plan_monthly(KLINES, "BTCUSDT", parse_utc("2025-11-01"), end, NOW)] == [
        "2025-11",
        "2025-12",
    ]
    assert plan_daily(KLINES, "BTCUSDT", parse_utc("2025-11-01"), end, NOW) == []


def test_uncovered_returns_the_gaps_merged_and_sorted() -> None:
    assert uncovered(0, 100, [(10, 20), (15, 30), (50, 60)]) == [(0, 10), (30, 50), (60, 100)]
    assert uncovered(0, 100, [(-5, 200)]) == []
    assert uncovered(0, 100, []) == [(0, 100)]
    assert uncovered(50, 50, []) == []


def test_parse_datasets_accepts_dump_names_and_lake_names() -> None:
    assert parse_datasets("klines/1m, fundingRate,mark_8h,funding") == (
        KLINES,
        FUNDING,
        HistoryDataset("markPriceKlines", "8h"),
    )
    assert parse_datasets(["premiumIndexKlines:1m"])[0].lake_dataset == "premium_1m"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trades/1m", "unknown dataset"),
        ("klines", "needs an interval"),
        ("klines/5m", "no lake dataset"),
        ("", "no datasets"),
    ],
)
def test_parse_datasets_rejects_what_it_cannot_store(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_datasets(text)


def test_failure_message_lists_what_is_missing_and_how_to_proceed() -> None:
    failures = tuple(
        [
            Failure(
                "BTCUSDT", "klines/1m", "monthly 2026-01", "cannot reach http://x: connection refused", True
            )
        ]
        + [
            Failure(
                "BTCUSDT", "klines/1m", f"daily 2026-03-0{d}", "not attempted: http://x is unreachable", True
            )
            for d in (1, 2, 3)
        ]
        + [
            Failure(
                "ETHUSDT", "fundingRate", "REST 2026-03-01 00:00 → 2026-03-05 12:34", "cannot reach", True
            )
        ]
    )
    report = HistoryReport(0, 0, (), 0, {}, failures)
    text = report.failure_message()
    assert not report.ok
    assert "BTCUSDT klines/1m: monthly 2026-01; daily 2026-03-01 … 2026-03-03 (3 days)" in text
    assert "ETHUSDT fundingRate: REST 2026-03-01 00:00 → 2026-03-05 12:34" in text
    assert "connection refused" in text
    assert "rerun the same command later" in text
    assert "raytrade import PATH" in text
    assert "RAYTRADE_HISTORY_BASE_URL" in text


def test_report_without_failures_is_ok_and_has_no_failure_message() -> None:
    report = HistoryReport(3, 1, ("X.zip",), 2, {("candles_1m", "BTCUSDT"): 10}, ())
    assert report.ok
    assert report.failure_message() == ""
    assert (
        "3 dump file(s) downloaded, 1 already done, 1 not published, 2 REST range(s); 10 row(s)"
        in report.summary()
    )
