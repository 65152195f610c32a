"""Resampling 1m candles to 15m/1h against a plain pandas reference, and causal alignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import DataQualityError
from core.resample import resample_candles
from core.ta import last_closed_index as latest_closed_index
from core.time import HOUR_MS, MINUTE_MS

START = 1_717_200_000_000  # 2024-06-01 00:00 UTC
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume", "trade_count")


def _random_candles(rng: np.random.Generator, n_slots: int, keep_share: float, offset_min: int) -> dict:
    present = rng.random(n_slots) < keep_share
    ts = START + (offset_min + np.flatnonzero(present).astype(np.int64)) * MINUTE_MS
    n = len(ts)
    o, c = rng.uniform(90, 110, n), rng.uniform(90, 110, n)
    volume = rng.exponential(5.0, n)
    return {
        "ts": ts, "open": o, "close": c,
        "high": np.maximum(o, c) + rng.exponential(1.0, n), "low": np.minimum(o, c) - rng.exponential(1.0, n),
        "volume": volume, "quote_volume": volume * rng.uniform(90, 110, n),
        "taker_buy_volume": volume * rng.random(n), "trade_count": rng.integers(0, 500, n),
    }  # fmt: skip


def _pandas_reference(cols: dict, to_ms: int, complete_only: bool) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    df["bucket"] = df["ts"] - df["ts"] % to_ms
    agg = {k: f for k, f in {
        "open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
        "quote_volume": "sum", "taker_buy_volume": "sum", "trade_count": "sum",
    }.items() if k in cols}  # fmt: skip
    out = df.groupby("bucket").agg(**{k: (k, f) for k, f in agg.items()}, n=("ts", "size"))
    if complete_only:
        out = out[out["n"] == to_ms // MINUTE_MS]
    return out.drop(columns="n").reset_index().rename(columns={"bucket": "ts"})


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_slots=st.integers(0, 400),
    keep_share=st.sampled_from([1.0, 0.99, 0.9, 0.5]),
    offset_min=st.integers(0, 120),
    to_ms=st.sampled_from([15 * MINUTE_MS, HOUR_MS, 5 * MINUTE_MS]),
    complete_only=st.booleans(),
    mark_only=st.booleans(),
)
def test_resample_matches_pandas_reference(
    seed, n_slots, keep_share, offset_min, to_ms, complete_only, mark_only
):
    cols = _random_candles(np.random.default_rng(seed), n_slots, keep_share, offset_min)
    if mark_only:
        cols = {k: cols[k] for k in ("ts", "open", "high", "low", "close")}
    got = resample_candles(cols, MINUTE_MS, to_ms, complete_only=complete_only)
    ref = _pandas_reference(cols, to_ms, complete_only)
    assert set(got) == set(cols)
    np.testing.assert_array_equal(got["ts"], ref["ts"].to_numpy(np.int64))
    for k in cols:
        if k == "ts":
            continue
        assert got[k].dtype == cols[k].dtype, k
        if k in ("open", "high", "low", "close", "trade_count"):
            np.testing.assert_array_equal(got[k], ref[k].to_numpy(got[k].dtype), err_msg=k)
        else:
            np.testing.assert_allclose(got[k], ref[k].to_numpy(), rtol=1e-12, err_msg=k)
    assert np.all(got["ts"] % to_ms == 0)


def test_complete_only_drops_a_bucket_missing_one_bar():
    rng = np.random.default_rng(0)
    cols = _random_candles(rng, 60, 1.0, 0)  # one full hour = four 15m buckets
    cols = {k: np.delete(v, 20) for k, v in cols.items()}  # 00:20 is missing → 00:15 bucket incomplete
    got = resample_candles(cols, MINUTE_MS, 15 * MINUTE_MS)
    np.testing.assert_array_equal(got["ts"], START + np.array([0, 30, 45]) * MINUTE_MS)
    partial = resample_candles(cols, MINUTE_MS, 15 * MINUTE_MS, complete_only=False)
    assert len(partial["ts"]) == 4
    assert partial["trade_count"][1] == cols["trade_count"][15:29].sum()


def test_values_of_one_15m_bar():
    cols = {
        "ts": START + MINUTE_MS * np.arange(15, dtype=np.int64),
        "open": np.arange(15.0) + 100, "close": np.arange(15.0) + 101,
        "high": np.arange(15.0) + 102, "low": np.arange(15.0) + 99,
        "volume": np.ones(15), "trade_count": np.full(15, 3, dtype=np.int64),
    }  # fmt: skip
    got = resample_candles(cols, MINUTE_MS, 15 * MINUTE_MS)
    expected = {"ts": [START], "open": [100.0], "close": [115.0], "high": [116.0], "low": [99.0],
                "volume": [15.0], "trade_count": [45]}  # fmt: skip
    assert {k: v.tolist() for k, v in got.items()} == expected


def test_buckets_align_to_the_utc_grid_not_to_the_first_bar():
    ts = START + MINUTE_MS * np.arange(7, 7 + 60, dtype=np.int64)  # starts at 00:07
    cols = {"ts": ts, "open": np.ones(60), "high": np.ones(60), "low": np.ones(60), "close": np.ones(60)}
    got = resample_candles(cols, MINUTE_MS, 15 * MINUTE_MS)
    np.testing.assert_array_equal(
        got["ts"], START + np.array([15, 30, 45]) * MINUTE_MS
    )  # 00:00 and 01:00 partial


def test_empty_input_gives_empty_output():
    cols = {"ts": np.array([], np.int64), "open": np.array([]), "trade_count": np.array([], np.int64)}
    got = resample_candles(cols, MINUTE_MS, HOUR_MS)
    assert {k: (v.dtype, len(v)) for k, v in got.items()} == {
        "ts": (np.int64, 0),
        "open": (np.float64, 0),
        "trade_count": (np.int64, 0),
    }


@pytest.mark.parametrize(
    ("ts", "match"),
    [
        ([START, START], "strictly increasing"),
        ([START + MINUTE_MS, START], "strictly increasing"),
        ([START, START + 1], "grid"),
    ],
)
def test_bad_timestamps_are_rejected(ts, match):
    cols = {"ts": np.array(ts, dtype=np.int64), "close": np.ones(len(ts))}
    with pytest.raises(DataQualityError, match=match):
        resample_candles(cols, MINUTE_MS, HOUR_MS)


def test_bad_columns_and_intervals_are_rejected():
    ts = START + MINUTE_MS * np.arange(3, dtype=np.int64)
    with pytest.raises(DataQualityError, match="symbol"):
        resample_candles({"ts": ts, "symbol": np.array(["X"] * 3)}, MINUTE_MS, HOUR_MS)
    with pytest.raises(DataQualityError, match="shape"):
        resample_candles({"ts": ts, "close": np.ones(2)}, MINUTE_MS, HOUR_MS)
    with pytest.raises(DataQualityError, match="ts"):
        resample_candles({"close": np.ones(3)}, MINUTE_MS, HOUR_MS)
    with pytest.raises(DataQualityError, match="integer"):
        resample_candles({"ts": ts.astype(float), "close": np.ones(3)}, MINUTE_MS, HOUR_MS)
    with pytest.raises(ValueError, match="multiple"):
        resample_candles({"ts": ts}, MINUTE_MS, 90_000)


def test_resample_is_fast_on_a_month_of_bars():
    import time

    cols = _random_candles(np.random.default_rng(1), 30 * 1440, 1.0, 0)
    t0 = time.perf_counter()
    for _ in range(10):
        resample_candles(cols, MINUTE_MS, 15 * MINUTE_MS)
    assert (time.perf_counter() - t0) / 10 < 0.05


# --- causal alignment ----------------------------------------------------------------------------


def test_latest_closed_index_uses_only_closed_coarse_bars():
    fine = START + MINUTE_MS * np.arange(40, dtype=np.int64)
    coarse = START + 15 * MINUTE_MS * np.arange(3, dtype=np.int64)
    idx = latest_closed_index(fine, MINUTE_MS, coarse, 15 * MINUTE_MS)
    # the 00:00 bar closes at 00:15, i.e. with the close of the 00:14 1m bar
    assert idx[:14].tolist() == [-1] * 14
    assert idx[14:29].tolist() == [0] * 15 and idx[29:].tolist() == [1] * 11


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), keep_share=st.sampled_from([1.0, 0.95, 0.7]))
def test_latest_closed_index_never_looks_ahead(seed, keep_share):
    cols = _random_candles(np.random.default_rng(seed), 300, keep_share, 3)
    coarse = resample_candles(cols, MINUTE_MS, 15 * MINUTE_MS)
    idx = latest_closed_index(cols["ts"], MINUTE_MS, coarse["ts"], 15 * MINUTE_MS)
    fine_close = cols["ts"] + MINUTE_MS
    used = idx >= 0
    assert np.all(coarse["ts"][idx[used]] + 15 * MINUTE_MS <= fine_close[used])
    nxt = idx + 1 < len(coarse["ts"])
    assert np.all(coarse["ts"][idx[nxt] + 1] + 15 * MINUTE_MS > fine_close[nxt])
    # truncating the fine data at any bar reproduces the same coarse bars up to that point
    if len(cols["ts"]) == 0:
        return
    for cut in np.random.default_rng(seed).integers(1, len(cols["ts"]) + 1, 5):
        head = resample_candles({k: v[:cut] for k, v in cols.items()}, MINUTE_MS, 15 * MINUTE_MS)
        assert len(head["ts"]) == idx[cut - 1] + 1
        for name in head:
            np.testing.assert_array_equal(head[name], coarse[name][: len(head["ts"])])
