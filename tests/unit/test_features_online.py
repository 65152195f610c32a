"""Incremental (FeatureEngine, one call per 1m close) equals batch (compute_features), bar by bar."""

from __future__ import annotations

import numpy as np
import pytest
from feature_samples import START_MS, replay, synthetic_group, with_gaps

from core.errors import DataQualityError
from core.features import (
    INPUT_COLUMNS,
    FeatureEngine,
    SymbolInputs,
    build_inputs,
    compute_features,
    compute_features_for_symbol,
)
from core.features_kernel import BAD_VALUES, FUTURE_FUNDING, NOT_CLOSED, OFF_GRID, OK, OUT_OF_ORDER
from core.features_schema import FEATURE_NAMES
from core.synthetic import generate_market
from core.time import MINUTE_MS


def assert_same(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9) -> None:
    """Equal to ``rtol`` relative (absolute below 1e-300) with NaN at the same places, per column."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    bad = np.flatnonzero((nan_a != nan_b).any(axis=0))
    assert not len(bad), f"NaN differs in {[FEATURE_NAMES[j] for j in bad]}"
    ok = ~nan_a
    diff = np.abs(a[ok] - b[ok]) > rtol * np.maximum(np.abs(a[ok]), np.abs(b[ok])) + 1e-300
    assert not diff.any(), f"{diff.sum()} values differ"


@pytest.fixture(scope="module")
def group():
    return synthetic_group(days=25)


@pytest.fixture(scope="module")
def batch(group):
    return compute_features(group)


def test_incremental_equals_batch_at_every_bar_for_every_symbol_and_timeframe(group, batch):
    online = replay(group)
    for s in group:
        assert_same(online[s], batch[s].values)
        assert np.array_equal(online[s], batch[s].values, equal_nan=True)  # same kernel: bit for bit
    # the comparison covers values, not only NaN: every feature has values on every timeframe
    eth = batch["ETHUSDT"].values
    assert np.isfinite(eth).any(axis=0).all(), [
        n for n, ok in zip(FEATURE_NAMES, np.isfinite(eth).any(axis=0), strict=True) if not ok
    ]


def test_parallel_batch_equals_serial_batch(group, batch):
    par = compute_features(group, parallel=True)
    for s in group:
        assert np.array_equal(par[s].values, batch[s].values, equal_nan=True)


def test_incremental_equals_batch_with_missing_bars_including_btc():
    full = synthetic_group(days=4)
    gappy = {s: with_gaps(x, 0.02, seed=i) for i, (s, x) in enumerate(full.items())}
    online = replay(gappy)
    batch = compute_features(gappy)
    for s in gappy:
        assert np.array_equal(online[s], batch[s].values, equal_nan=True)
    # a 15m bucket with a missing 1m bar never completes: 15m features stay as they were
    eth = gappy["ETHUSDT"]
    assert len(eth) < len(full["ETHUSDT"])


def test_engine_warmed_on_history_continues_like_a_full_batch(group, batch):
    cut = 20 * 1440 + 7  # mid-bucket of 15m and 1h
    head = {s: x.until(x.ts_ms[cut]) for s, x in group.items()}
    tail = {
        s: SymbolInputs(x.ts_ms[cut + 1 :], np.ascontiguousarray(x.values[cut + 1 :]))
        for s, x in group.items()
    }
    engine, frames = FeatureEngine.from_history(head)
    for s in group:
        assert np.array_equal(frames[s].values, batch[s].values[: cut + 1], equal_nan=True)
    restored = FeatureEngine.restore(engine.snapshot())
    rows = replay(tail, restored)
    for s in group:
        assert np.array_equal(rows[s], batch[s].values[cut + 1 :], equal_nan=True)


def test_rejected_bars_change_no_state_and_say_why():
    group = synthetic_group(days=1)
    engine = FeatureEngine(list(group))
    syms = engine.symbols
    x = np.stack([group[s].values for s in syms], axis=1)
    ts = group["BTCUSDT"].ts_ms
    closed = np.ones(len(syms), bool)
    for i in range(100):
        engine.update(int(ts[i]), np.ascontiguousarray(x[i]), closed)
    snap = engine.snapshot()
    t = int(ts[100])
    bad = np.ascontiguousarray(x[100])
    k = engine.index("ETHUSDT")
    cases = {
        OUT_OF_ORDER: (int(ts[99]), lambda b: b),
        OFF_GRID: (t + 1, lambda b: b),
        BAD_VALUES: (t, lambda b: b.__setitem__((k, INPUT_COLUMNS.index("close")), np.nan)),
        FUTURE_FUNDING: (
            t,
            lambda b: b.__setitem__((k, INPUT_COLUMNS.index("funding_time_ms")), t + 2 * MINUTE_MS),
        ),
    }
    for expected, (when, spoil) in cases.items():
        b = bad.copy()
        spoil(b)
        only = np.zeros(len(syms), bool)
        only[k] = True
        rows, status = engine.update(when, b, only)
        assert status[k] == expected and np.isnan(rows[k]).all()
        assert status[engine.index("BTCUSDT")] == NOT_CLOSED
        assert np.array_equal(engine.snapshot()["states"], snap["states"], equal_nan=True)
    rows, status = engine.update(t, bad, closed)
    assert (status == OK).all() and np.isfinite(rows[:, 0]).all()


def test_batch_refuses_bad_bars_naming_symbol_and_row():
    group = synthetic_group(days=1)
    eth = group["ETHUSDT"]
    values = eth.values.copy()
    values[10, INPUT_COLUMNS.index("high")] = values[10, INPUT_COLUMNS.index("low")] / 2
    with pytest.raises(DataQualityError, match=r"ETHUSDT: bar 10 .*high < low"):
        compute_features({"ETHUSDT": SymbolInputs(eth.ts_ms, values)})
    with pytest.raises(DataQualityError, match="not strictly increasing"):
        SymbolInputs(eth.ts_ms[::-1].copy(), values)


def test_without_btc_the_cross_features_are_nan_and_the_rest_unchanged(group, batch):
    alone = compute_features({"ETHUSDT": group["ETHUSDT"]})["ETHUSDT"].values
    btc_cols = [i for i, n in enumerate(FEATURE_NAMES) if "_btc_" in n]
    other = [i for i in range(len(FEATURE_NAMES)) if i not in btc_cols]
    assert np.isnan(alone[:, btc_cols]).all()
    assert np.array_equal(alone[:, other], batch["ETHUSDT"].values[:, other], equal_nan=True)


def test_compute_features_for_symbol_needs_only_btc_candles_for_the_cross_features():
    m = generate_market(("BTCUSDT", "ETHUSDT"), START_MS, 2 * 1440, seed=3)
    full = {s: build_inputs(m.candles_1m[s], m.mark_1m[s], m.premium_1m[s], m.funding[s]) for s in m.symbols}
    eth = compute_features_for_symbol("ETHUSDT", m.candles_1m["ETHUSDT"], mark=m.mark_1m["ETHUSDT"],
                                      premium=m.premium_1m["ETHUSDT"], funding=m.funding["ETHUSDT"],
                                      btc_candles=m.candles_1m["BTCUSDT"])  # fmt: skip
    assert np.array_equal(eth.values, compute_features(full)["ETHUSDT"].values, equal_nan=True)
