"""The baselines on real Binance 1m data (../shared/data/binance_um), through the one simulator."""

from __future__ import annotations

import math

import numpy as np

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.metrics import summarize
from core.sim import SimConfig
from core.strategies import BASELINES
from pipelines.backtest import load_panel
from pipelines.baselines import run_baselines
from pipelines.importer import import_path
from storage.lake import Lake

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def test_baselines_trade_real_btc_and_eth_with_costs_and_funding(shared_data, tmp_path):
    lake = Lake(tmp_path / "lake")
    for dataset in ("klines_1m", "funding"):
        for symbol in SYMBOLS:
            import_path(lake, shared_data / "binance_um" / dataset / f"{symbol}.parquet")
    panel = load_panel(lake, SYMBOLS)
    assert panel.shape[0] > 70_000  # ~51 days of 1m bars
    # real funding times land on bars: 8 h events over ~51 days for each symbol
    assert (panel.funding_rate != 0).sum(axis=0).min() >= 140
    spec = LabelSpec()
    results = run_baselines(lake, panel, sim=SimConfig(fee_rate=spec.fee_rate, slippage_k=spec.slippage_k,
                            max_hold_bars=spec.h_bars), risk=RiskConfig(), policy=PolicyConfig(), label_spec=spec)  # fmt: skip
    assert set(results) == set(BASELINES)
    for name, r in results.items():
        m = summarize(r.trades, r.equity)
        assert m["trades"] > 10, name
        assert m["fees"] > 0 and m["slippage"] > 0, name
        assert math.isfinite(m["max_drawdown"]) and 0 <= m["max_drawdown"] < 1, name
        # equity = start + realised PnL of closed trades (everything is closed at the end)
        assert np.isclose(r.equity["equity"].iloc[-1], 10_000 + r.trades["pnl"].sum(), rtol=0, atol=1e-6), (
            name
        )
        assert (r.trades["funding"] != 0).any(), (
            name
        )  # trades held across real funding times paid or received
