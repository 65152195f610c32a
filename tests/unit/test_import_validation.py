"""Row validation of ``raytrade import``: every bad row gets a reason, good rows are kept."""

from __future__ import annotations

import numpy as np

from pipelines.importer import validate_rows

T0 = 1746372780000  # 2025-05-04 15:33 UTC, on the 1m grid


def _candles(n: int) -> dict[str, np.ndarray]:
    return {
        "ts": T0 + 60_000 * np.arange(n, dtype=np.int64),
        "open": np.full(n, 100.0),
        "high": np.full(n, 101.0),
        "low": np.full(n, 99.0),
        "close": np.full(n, 100.5),
        "volume": np.full(n, 5.0),
    }


def test_clean_candles_are_all_kept() -> None:
    keep, reasons, examples = validate_rows("candles_1m", "BTCUSDT", _candles(50))
    assert keep.all() and reasons == [] and examples == []


def test_each_bad_candle_is_rejected_with_its_reason() -> None:
    c = _candles(9)
    c["open"][1] = np.nan  # non-finite price
    c["low"][2] = 0.0  # non-positive price
    c["high"][3] = 100.2  # high below close
    c["low"][4] = 100.7  # low above open/close
    c["volume"][5] = -1.0
    c["ts"][6] += 30_000  # off the 1m grid
    c["ts"][7] = c["ts"][0]  # duplicate of row 0
    c["ts"][8] = 1_700_000_000  # seconds, not ms
    keep, reasons, examples = validate_rows("candles_1m", "BTCUSDT", c)
    assert keep.tolist() == [True] + [False] * 8
    assert reasons == [
        "non_finite_price",
        "non_positive_price",
        "ohlc_outside_range",
        "ohlc_outside_range",
        "negative_volume",
        "off_interval_grid",
        "duplicate_ts",
        "ts_out_of_range",
    ]
    assert any("duplicate_ts: BTCUSDT" in e for e in examples)


def test_mark_prices_without_volume_are_checked_like_candles() -> None:
    c = _candles(3)
    del c["volume"]
    c["high"][2] = 50.0
    keep, reasons, _ = validate_rows(
        "mark_8h", "BTCUSDT", {**c, "ts": c["ts"] - c["ts"] % (8 * 3_600_000) + np.arange(3) * 8 * 3_600_000}
    )
    assert keep.tolist() == [True, True, False]
    assert reasons == ["high_below_low"]


def test_premium_index_may_be_negative_but_must_be_consistent() -> None:
    c = _candles(3)
    del c["volume"]
    for k in ("open", "high", "low", "close"):
        c[k] = c[k] - 100.2  # around zero, partly negative
    c["close"][2] = 5.0  # above high
    keep, reasons, _ = validate_rows("premium_1m", "BTCUSDT", c)
    assert keep.tolist() == [True, True, False]
    assert reasons == ["ohlc_outside_range"]


def test_funding_needs_a_finite_rate_but_no_grid() -> None:
    funding = {
        "ts": np.array([T0, T0 + 14_400_000 + 3, T0 + 28_800_000], dtype=np.int64),
        "funding_rate": np.array([0.0001, -0.0002, np.inf]),
    }
    keep, reasons, _ = validate_rows("funding", "BTCUSDT", funding)
    assert keep.tolist() == [True, True, False]
    assert reasons == ["non_finite_funding_rate"]
