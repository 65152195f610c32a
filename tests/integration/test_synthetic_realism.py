"""The synthetic market against real Binance 1m data (../shared/data/binance_um, May–June 2025).

Checks scale, not shape: 1m return volatility within a factor 2 of real data for the same kind of
symbol (BTC against BTC; alts as a group against the real alts), and the clustering of |returns|
within a factor 2 of BTC's. The real files are required: a missing file fails the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.symbols import DEFAULT_UNIVERSE
from core.synthetic import METAL_SYMBOLS, generate_market
from core.time import parse_utc

DAYS = 30


def _real_returns(shared_data: Path, symbol: str) -> np.ndarray:
    path = shared_data / "binance_um" / "klines_1m" / f"{symbol}.parquet"
    assert path.is_file(), f"real data file {path} is missing"
    close = pd.read_parquet(path, columns=["close"])["close"].to_numpy(np.float64)
    return np.diff(np.log(close))


@pytest.fixture(scope="module")
def synthetic():
    return generate_market(DEFAULT_UNIVERSE, parse_utc("2025-05-05"), DAYS * 1440, seed=2025)


def _syn_returns(market, symbol: str) -> np.ndarray:
    return np.diff(np.log(market.candles_1m[symbol]["close"]))


def test_btc_1m_volatility_within_factor_two_of_real(shared_data, synthetic):
    real = _real_returns(shared_data, "BTCUSDT").std()
    syn = _syn_returns(synthetic, "BTCUSDT").std()
    assert 0.5 < syn / real < 2.0, f"synthetic {syn * 1e4:.2f} bp vs real {real * 1e4:.2f} bp"


def test_btc_abs_return_clustering_within_factor_two_of_real(shared_data, synthetic):
    def acf1(r: np.ndarray) -> float:
        a = np.abs(r)
        return float(np.corrcoef(a[:-1], a[1:])[0, 1])

    real, syn = acf1(_real_returns(shared_data, "BTCUSDT")), acf1(_syn_returns(synthetic, "BTCUSDT"))
    assert 0.5 < syn / real < 2.0, (syn, real)


def test_alt_1m_volatility_within_factor_two_of_real_alts(shared_data, synthetic):
    folder = shared_data / "binance_um" / "klines_1m"
    real_alts = sorted(p.stem for p in folder.glob("*.parquet") if p.stem != "BTCUSDT")
    assert len(real_alts) >= 10, f"expected the real alt files in {folder}"
    real = np.array([_real_returns(shared_data, s).std() for s in real_alts])
    alts = [s for s in DEFAULT_UNIVERSE if s != "BTCUSDT" and s not in METAL_SYMBOLS]
    syn = np.array([_syn_returns(synthetic, s).std() for s in alts])
    assert 0.5 < np.median(syn) / np.median(real) < 2.0, (np.median(syn), np.median(real))
    outside = [
        (s, round(v * 1e4, 2))
        for s, v in zip(alts, syn, strict=True)
        if not real.min() / 2 < v < real.max() * 2
    ]
    assert not outside, f"outside [{real.min() / 2 * 1e4:.2f}, {real.max() * 2e4:.2f}] bp: {outside}"
