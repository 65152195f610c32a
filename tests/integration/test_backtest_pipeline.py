"""pipelines.backtest on a temporary lake: the panel it loads, the mark proxy, a run from a signal table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import RiskConfig
from core.metrics import check_equity, check_trades
from core.sim import SimConfig, panel_from_market, run_backtest
from core.synthetic import generate_market
from core.time import DAY_MS, MINUTE_MS, parse_utc
from pipelines.backtest import backtest_lake, load_panel
from pipelines.market import write_synthetic_market
from storage.lake import Lake

START = parse_utc("2024-03-30")  # spans a month boundary of the lake's files
SYMBOLS = ("BTCUSDT", "ETHUSDT", "ENAUSDT")  # ENA funds every 4 h


@pytest.fixture(scope="module")
def market():
    return generate_market(SYMBOLS, START, 3 * 1440, seed=5)


@pytest.fixture
def lake(tmp_path: Path, market) -> Lake:
    lake = Lake(tmp_path / "lake")
    write_synthetic_market(market, lake)
    return lake


def test_load_panel_equals_the_in_memory_panel(lake, market):
    got = load_panel(lake, SYMBOLS)
    want = panel_from_market(market)
    for name in ("ts", "open", "close", "mark_open", "mark_high", "mark_low", "mark_close", "quote_volume",
                 "funding_rate", "atr"):  # fmt: skip
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.funding_rate[:, 2].astype(bool).sum() == 18  # 4 h funding over 3 days


def test_a_window_reads_a_warm_up_so_the_atr_is_ready_at_its_first_bar(lake, market):
    start, end = START + 2 * DAY_MS, START + 3 * DAY_MS
    got = load_panel(lake, SYMBOLS, start, end)
    full = panel_from_market(market)
    rows = slice((start - START) // MINUTE_MS, (end - START) // MINUTE_MS)
    assert got.ts[0] == start and len(got.ts) == 1440
    assert np.isfinite(got.atr).all()
    # Wilder's ATR is recursive: the warm-up's seed is forgotten to within (13/14)^126 ≈ 1e-4
    np.testing.assert_allclose(got.atr, full.atr[rows], rtol=2e-3)
    np.testing.assert_array_equal(got.close, full.close[rows])
    np.testing.assert_array_equal(got.funding_rate, full.funding_rate[rows])


def test_missing_mark_candles_fall_back_to_last_price_or_interpolated_basis(lake, market):
    # ETH loses the mark candles of its second day; the other symbols keep theirs
    mark = pd.DataFrame(dict(market.mark_1m["ETHUSDT"]))
    shutil.rmtree(lake.root / "mark_1m" / "symbol=ETHUSDT")
    lake.write("mark_1m", "ETHUSDT", mark[(mark["ts"] < START + DAY_MS) | (mark["ts"] >= START + 2 * DAY_MS)],
               source="synthetic")  # fmt: skip
    last = load_panel(lake, SYMBOLS, mark_proxy="last")
    interp = load_panel(lake, SYMBOLS, mark_proxy="interpolate")
    gap = slice(1440, 2880)
    np.testing.assert_array_equal(last.mark_close[gap, 1], last.close[gap, 1])
    np.testing.assert_array_equal(last.mark_high[gap, 1], market.candles_1m["ETHUSDT"]["high"][gap])
    np.testing.assert_array_equal(last.mark_close[:1440, 1], mark["close"][:1440])
    np.testing.assert_array_equal(last.mark_close[:, 0], market.mark_1m["BTCUSDT"]["close"])
    # interpolate: the mark/last ratio of the closes, linear in time across the hole
    ratio = interp.mark_close[gap, 1] / interp.close[gap, 1]
    before = mark["close"].iloc[1439] / last.close[1439, 1]
    after = mark["close"].iloc[2880] / last.close[2880, 1]
    expected = before + (after - before) * np.arange(1, 1441) / 1441
    np.testing.assert_allclose(ratio, expected, rtol=1e-12)
    np.testing.assert_allclose(interp.mark_low[gap, 1], market.candles_1m["ETHUSDT"]["low"][gap] * expected,
                               rtol=1e-12)  # fmt: skip
    # no mark candle at all: the last-price candles are the mark
    shutil.rmtree(lake.root / "mark_1m")
    none = load_panel(lake, SYMBOLS, mark_proxy="interpolate")
    highs = np.stack([market.candles_1m[s]["high"] for s in SYMBOLS], axis=1)
    np.testing.assert_array_equal(none.mark_high, highs)


def test_backtest_from_a_signal_table_meets_the_metrics_contract(lake, market):
    panel = load_panel(lake, SYMBOLS)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(panel.ts) - 1, 60, replace=False))
    frame = pd.DataFrame({
        "ts": panel.ts[rows], "symbol": rng.choice(SYMBOLS, 60), "direction": rng.choice([-1, 1], 60),
        "size_fraction": 0.1, "leverage": 3,
    }).drop_duplicates(["ts", "symbol"])  # fmt: skip
    k = frame["symbol"].map({s: i for i, s in enumerate(SYMBOLS)}).to_numpy()
    r = (frame["ts"].to_numpy() - panel.ts[0]) // MINUTE_MS
    atr = np.nan_to_num(panel.atr[r, k], nan=panel.close[r, k] * 0.002)
    frame["sl_price"] = panel.close[r, k] - frame["direction"] * atr
    frame["tp_price"] = panel.close[r, k] + frame["direction"] * 1.5 * atr
    result = backtest_lake(lake, SYMBOLS, frame, config=SimConfig(max_hold_bars=360), risk=RiskConfig())
    check_trades(result.trades)
    check_equity(result.equity)
    assert len(result.trades) > 10 and len(result.equity) == len(panel.ts)
    assert result.equity["equity"].iloc[-1] == pytest.approx(10_000 + result.trades["pnl"].sum(), abs=1e-6)
    again = run_backtest(panel, _signals(frame, panel), SimConfig(max_hold_bars=360), RiskConfig())
    pd.testing.assert_frame_equal(again.trades, result.trades, check_exact=True)


def _signals(frame, panel):
    from core.sim import signals_from_frame

    return signals_from_frame(frame, panel)
