"""Feature schema v1 on real Binance data (../shared/data/binance_um): BTCUSDT and ETHUSDT, ~51 days.

The set has last-price 1m klines and funding events only (no taker volume, 1m mark or premium),
so ATR is last-price based and the taker and basis features are NaN, as documented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_samples import (
    ATOL,
    assert_matches,
    higher_timeframe_inputs,
    replay,
    run_timeframe,
    talib_reference,
)

from core.features import INPUT_COLUMNS, build_inputs, compute_features
from core.features_kernel import FEATURES
from core.features_schema import FEATURE_NAMES
from core.time import HOUR_MS, MINUTE_MS

SYMBOLS = ("BTCUSDT", "ETHUSDT")
ABSENT = ("taker_buy_ratio", "taker_imbalance_15", "basis", "basis_z")


def _load(root: Path, symbol: str):
    k = pd.read_parquet(root / "klines_1m" / f"{symbol}.parquet")
    f = pd.read_parquet(root / "funding" / f"{symbol}.parquet")
    candles = {"ts": k["open_time"].to_numpy(np.int64), **{c: k[c].to_numpy(np.float64) for c in
               ("open", "high", "low", "close", "volume")}}  # fmt: skip
    funding = {
        "ts": f["funding_time"].to_numpy(np.int64),
        "funding_rate": f["funding_rate"].to_numpy(np.float64),
    }
    return build_inputs(candles, funding=funding)


@pytest.fixture(scope="module")
def real(shared_data: Path):
    root = shared_data / "binance_um"
    for s in SYMBOLS:
        for sub in ("klines_1m", "funding"):
            path = root / sub / f"{s}.parquet"
            if not path.exists():
                pytest.fail(f"real data file {path} is missing")
    return {s: _load(root, s) for s in SYMBOLS}


@pytest.fixture(scope="module")
def batch(real):
    return compute_features(real)


def test_real_incremental_equals_batch_at_every_bar(real, batch):
    online = replay(real)
    for s in SYMBOLS:
        assert len(batch[s]) > 70_000
        assert np.array_equal(online[s], batch[s].values, equal_nan=True), s


def test_real_features_have_values_after_warmup_except_the_absent_sources(real, batch):
    last_btc = real["BTCUSDT"].ts_ms[-1]
    for s in SYMBOLS:
        v = batch[s].values
        # past every warm-up (1h included), and with a BTC bar at every ts (ETH has one bar more)
        tail = v[(batch[s].ts_ms <= last_btc)][-20_000:]
        for j, name in enumerate(FEATURE_NAMES):
            if name.split("_", 2)[2] in ABSENT:
                assert np.isnan(v[:, j]).all(), name
            else:
                assert np.isfinite(tail[:, j]).all(), (s, name)
        rate = real[s].values[:, INPUT_COLUMNS.index("funding_rate")]
        assert np.array_equal(batch[s].column("f_1m_funding_rate"), rate, equal_nan=True)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_real_classic_indicators_equal_talib(real, batch, symbol):
    for name, expected in talib_reference(real[symbol].values).items():
        assert_matches(batch[symbol].column(f"f_1m_{name}"), expected, name, ATOL.get(name, 1e-9))
    for interval_ms in (15 * MINUTE_MS, HOUR_MS):
        bars = higher_timeframe_inputs(real[symbol], interval_ms)
        feats, _ = run_timeframe(bars)
        for name, expected in talib_reference(bars.values).items():
            assert_matches(
                feats[:, FEATURES.index(name)], expected, f"{interval_ms}:{name}", ATOL.get(name, 1e-9)
            )


def test_real_features_at_t_do_not_depend_on_later_data(real, batch):
    rng = np.random.default_rng(11)
    ts = real["ETHUSDT"].ts_ms
    for i in sorted(rng.integers(100, len(ts), 4)):
        t = int(ts[i])
        cut = compute_features({s: x.until(t) for s, x in real.items()})
        for s in SYMBOLS:
            j = int(np.searchsorted(real[s].ts_ms, t))
            assert np.array_equal(cut[s].values[-1], batch[s].values[j], equal_nan=True), (s, t)
