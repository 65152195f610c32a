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
