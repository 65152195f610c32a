"""Benchmark of the portfolio backtest (spec 001 §10–11, §14): one account over a universe of 1m bars.

Synthetic market (core.synthetic), 50 symbols × 30 days of 1m bars by default (2.16M symbol-bars),
with its mark candles (SL/TP and liquidation trigger on the mark) and its 4 h / 8 h funding. Random
entry signals (a share ``--density`` of symbol-bars, long or short, 10% of equity at 3×, SL/TP at
1.0/1.5 ATR from the decision close as the policy sets them, 360-bar time limit), the preset
RiskConfig (§21.3) checked on every entry, real leverage brackets and exchange filters for the
symbols Binance lists (shared/data payloads). Timed: ``core.sim.run_backtest`` end to end (kernel
and the result frames), best of ``--repeat``; the panel build is reported apart. Also the event
path: ``FillSimulator.step_bar`` (one bar of the whole book per call, as the RL env and replays use
it). Last line: JSON with the figures.

    python bench/backtest.py [--symbols 50] [--days 30] [--density 0.002] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import RiskConfig
from core.signals import empty_signals
from core.sim import (
    FillSimulator,
    SimConfig,
    SymbolRules,
    panel_from_market,
    parse_leverage_brackets,
    parse_symbol_filters,
    run_backtest,
)
from core.synthetic import _REFERENCE, generate_market
from core.time import parse_utc

START = parse_utc("2024-01-01")
PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "data" / "payloads" / "rest"


def universe(count: int) -> list[str]:
    names = list(_REFERENCE)
    names += [f"SYN{k:03d}USDT" for k in range(max(0, count - len(names)))]
    return names[:count]


def venue_rules(symbols: list[str]) -> dict[str, SymbolRules]:
    """Real brackets and filters where Binance lists the symbol (else the defaults)."""
    if not PAYLOADS.is_dir():
        return {}
    brackets = parse_leverage_brackets(json.loads((PAYLOADS / "leverage_brackets.json").read_text()))
    filters = parse_symbol_filters(json.loads((PAYLOADS / "exchange_info_2025-12.json").read_text()))
    out = {}
    for s in symbols:
        if s in brackets and s in filters:
            out[s] = SymbolRules(filters[s], brackets[s])
    return out


def main() -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--density", type=float, default=0.002, help="share of symbol-bars with an entry signal")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    symbols = universe(args.symbols)
    t = time.perf_counter()
    market = generate_market(symbols, START, args.days * 1440, args.seed)
    generate_s = time.perf_counter() - t
    t = time.perf_counter()
    panel = panel_from_market(market)
    panel_s = time.perf_counter() - t
    del market
    n, m = panel.shape
    total = n * m

    rng = np.random.default_rng(args.seed)
    sig = empty_signals((n, m))
    d = np.where(rng.random((n, m)) < args.density, rng.choice([-1, 1], (n, m)), 0).astype(np.int8)
    sig.direction[:] = d
    sig.size_fraction[:] = np.where(d != 0, 0.1, 0.0)
    sig.leverage[:] = np.where(d != 0, 3, 0)
    sig.sl_price[:] = np.where(d != 0, panel.close - d * 1.0 * panel.atr, np.nan)
    sig.tp_price[:] = np.where(d != 0, panel.close + d * 1.5 * panel.atr, np.nan)
    cfg = SimConfig(max_hold_bars=360)
    risk = RiskConfig()
    rules = venue_rules(symbols)

    run_backtest(panel, sig, cfg, risk, rules)  # compile or load the numba cache
    times = []
    result = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        result = run_backtest(panel, sig, cfg, risk, rules)
        times.append(time.perf_counter() - t)
    assert result is not None
    best = min(times)
    rate = total / best
    again = run_backtest(panel, sig, cfg, risk, rules)
    deterministic = again.trades.equals(result.trades) and again.equity.equals(result.equity)

    # event path: the whole book one bar per call, for one day
    sim = FillSimulator(panel.symbols, cfg, risk, rules)
    exits = np.zeros(m, np.int8)
    steps = min(n, 1440)
    t = time.perf_counter()
    for j in range(steps):
        bar = {"open": panel.open[j], "close": panel.close[j], "mark_open": panel.mark_open[j],
               "mark_high": panel.mark_high[j], "mark_low": panel.mark_low[j], "mark_close": panel.mark_close[j],
               "quote_volume": panel.quote_volume[j], "funding_rate": panel.funding_rate[j]}  # fmt: skip
        decision = None
        if j:
            decision = {"direction": sig.direction[j - 1], "exits": exits, "size": sig.size_fraction[j - 1],
                        "sl": sig.sl_price[j - 1], "tp": sig.tp_price[j - 1], "leverage": sig.leverage[j - 1],
                        "close": panel.close[j - 1], "atr": panel.atr[j - 1],
                        "quote_volume": panel.quote_volume[j - 1]}  # fmt: skip
        sim.step_bar(int(panel.ts[j]), bar, decision)
    step_us = (time.perf_counter() - t) / steps * 1e6

    trades = result.trades
    entries = int(np.count_nonzero(d[:-1]))
    blocked = result.risk_events[result.risk_events["symbol"] != ""]
    codes = blocked["codes"].str.split(",").explode().value_counts()
    print(f"{m} symbols × {n:,} 1m bars = {total:,} symbol-bars; data generated in {generate_s:.1f} s, "
          f"panel built in {panel_s:.2f} s (not timed)")  # fmt: skip
    print(f"entry signals {entries:,}; trades {len(trades):,}; entries blocked by risk {len(blocked):,}; "
          f"exits {({k: int(v) for k, v in trades['exit_reason'].value_counts().items()})}")  # fmt: skip
    print(f"block codes { ({k: int(v) for k, v in codes.items()}) }")
    print(f"final equity {result.account['equity']:,.2f} USDT from {cfg.initial_equity_usdt:,.0f}; "
          f"fees {result.account['fees']:,.2f}, slippage {result.account['slippage']:,.2f}, "
          f"funding {result.account['funding']:,.2f}")  # fmt: skip
    print(f"run_backtest (kernel + frames): {best * 1e3:.1f} ms → {rate:,.0f} symbol-bars/s "
          f"(best of {args.repeat}; median {total / float(np.median(times)):,.0f}); deterministic: {deterministic}")  # fmt: skip
    print(f"event path FillSimulator.step_bar: {step_us:.1f} µs per bar of {m} symbols "
          f"({step_us / m * 1e3:.0f} ns per symbol-bar)")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}")
    out: dict[str, object] = {
        "symbol_bars_per_s": round(rate),
        "median_symbol_bars_per_s": round(total / float(np.median(times))),
        "symbol_bars": total,
        "trades": len(trades),
        "entry_signals": entries,
        "risk_blocked": len(blocked),
        "step_bar_us": round(step_us, 1),
        "deterministic": deterministic,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
