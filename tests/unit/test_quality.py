from __future__ import annotations

import numpy as np

from core.quality import REASONS, check_candles


def _rows(**overrides):
    base = {
        "ts": np.array([0, 60_000, 120_000], dtype=np.int64),
        "open": np.array([10.0, 10.5, 10.2]),
        "high": np.array([11.0, 10.9, 10.6]),
        "low": np.array([9.5, 10.1, 10.0]),
        "close": np.array([10.5, 10.2, 10.4]),
        "volume": np.array([5.0, 0.0, 3.0]),
    }
    for k, (i, v) in overrides.items():
        base[k] = base[k].copy()
        base[k][i] = v
    return base


SYMS = np.array(["BTCUSDT"] * 3, dtype=object)


def test_clean_rows_all_pass():
    ok, rej = check_candles(SYMS, _rows(), 60_000, {"BTCUSDT"})
    assert ok.all() and rej == []


def test_each_defect_is_rejected_with_its_reason():
    cases = {
        "non_finite_price": _rows(close=(1, np.nan)),
        "non_positive_price": _rows(low=(1, 0.0)),
        "high_below_low": _rows(high=(1, 9.0)),
        "ohlc_outside_range": _rows(open=(1, 11.5)),
        "negative_volume": _rows(volume=(1, -1.0)),
        "non_finite_volume": _rows(volume=(1, np.inf)),
        "off_interval_grid": _rows(ts=(1, 60_001)),
    }
    for reason, cols in cases.items():
        ok, rej = check_candles(SYMS, cols, 60_000, {"BTCUSDT"})
        assert ok.tolist() == [True, False, True], reason
        assert [(r.index, r.reason) for r in rej] == [(1, reason)]
        assert "BTCUSDT" in rej[0].detail


def test_infinite_price_is_non_finite_not_out_of_range():
    ok, rej = check_candles(SYMS, _rows(high=(0, np.inf)), 60_000, None)
    assert [r.reason for r in rej] == ["non_finite_price"]


def test_unknown_symbol_rejected_and_none_means_any():
    syms = np.array(["BTCUSDT", "FOOUSDT", "BTCUSDT"], dtype=object)
    ok, rej = check_candles(syms, _rows(), 60_000, {"BTCUSDT"})
    assert ok.tolist() == [True, False, True] and rej[0].reason == "unknown_symbol"
    ok, rej = check_candles(syms, _rows(), 60_000, None)
    assert ok.all()


def test_a_row_gets_only_its_first_reason():
    ok, rej = check_candles(SYMS, _rows(close=(2, -5.0), volume=(2, -1.0)), 60_000, None)
    assert [(r.index, r.reason) for r in rej] == [(2, "non_positive_price")]
    assert REASONS.index("non_positive_price") < REASONS.index("negative_volume")


def test_empty_input_is_fine():
    empty = {k: np.array([], dtype=np.int64 if k == "ts" else np.float64) for k in _rows()}
    ok, rej = check_candles(np.array([], dtype=object), empty, 60_000, {"BTCUSDT"})
    assert ok.shape == (0,) and rej == []


T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def _bars(n: int) -> dict[str, np.ndarray]:
    return {
        "ts": T0 + 60_000 * np.arange(n, dtype=np.int64),
        "open": np.full(n, 10.0),
        "high": np.full(n, 11.0),
        "low": np.full(n, 9.0),
        "close": np.full(n, 10.5),
        "volume": np.full(n, 2.0),
    }


def test_rows_repeating_a_ts_with_the_same_values_keep_the_first_and_with_other_values_none() -> None:
    from core.quality import check_rows

    bars = _bars(6)
    bars["ts"][3] = bars["ts"][1]  # identical to row 1: a harmless repeat
    bars["ts"][5] = bars["ts"][4] = bars["ts"][2]
    bars["close"][5] = 10.9  # same ts as rows 2 and 4, another close: a conflict
    keep, rejections = check_rows("candles_1m", "BTCUSDT", bars, 60_000)
    assert keep.tolist() == [True, True, False, False, False, False]
    assert [(r.index, r.reason) for r in rejections] == [
        (2, "conflicting_ts"),
        (3, "duplicate_ts"),
        (4, "conflicting_ts"),
        (5, "conflicting_ts"),
    ]
    assert rejections[0].detail == f"BTCUSDT ts={T0 + 120_000} appears more than once with different values"


def test_premium_may_be_negative_but_funding_must_be_finite() -> None:
    from core.quality import check_rows

    premium = {k: v for k, v in _bars(2).items() if k != "volume"}
    for k in ("open", "high", "low", "close"):
        premium[k] = premium[k] - 20.0  # all below zero: fine for a premium index
    keep, rejections = check_rows("premium_1m", "BTCUSDT", premium, 60_000)
    assert keep.all() and rejections == []
    funding = {"ts": np.array([T0, T0 + 28_800_000]), "funding_rate": np.array([0.0001, np.nan])}
    keep, rejections = check_rows("funding", "BTCUSDT", funding, None)
    assert keep.tolist() == [True, False] and [r.reason for r in rejections] == ["non_finite_funding_rate"]
