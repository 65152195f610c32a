"""The rule-based baseline strategies on lake data, through the one portfolio backtester."""

from __future__ import annotations

from collections.abc import Sequence

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.signals import SIGNAL_DTYPES, BarSignals, empty_signals, stack_signals
from core.sim import BacktestResult, MarketPanel, SimConfig, run_backtest
from core.strategies import BASELINES
from core.time import DAY_MS
from storage.lake import Lake

#: History read before the backtest window so the slowest indicator (50 × 1h EMA) is warm.
WARM_UP_MS = 5 * DAY_MS


def strategy_signals(
    lake: Lake,
    panel: MarketPanel,
    name: str,
    *,
    policy: PolicyConfig | None = None,
    label_spec: LabelSpec | None = None,
) -> BarSignals:
    """Run baseline ``name`` on each symbol's 1m candles (with warm-up) and align it to the panel grid.

    Bars of the warm-up and bars the panel lacks carry no signal. Uses data up to each bar's close.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    fn, cfg = BASELINES[name]
    start, end = int(panel.ts[0]), int(panel.ts[-1]) + panel.bar_ms
    per_symbol = []
    for symbol in panel.symbols:
        candles = lake.read_arrays("candles_1m", symbol, ("open", "high", "low", "close", "volume"))
        keep = (candles["ts"] >= start - WARM_UP_MS) & (candles["ts"] < end)
        candles = {k: v[keep] for k, v in candles.items()}
        sig = fn(candles, cfg, policy=policy, label_spec=label_spec)
        out = empty_signals((len(panel.ts),))
        pos = (candles["ts"] - start) // panel.bar_ms
        inside = (pos >= 0) & (pos < len(panel.ts))
        for field in SIGNAL_DTYPES:
            getattr(out, field)[pos[inside]] = getattr(sig, field)[inside]
        per_symbol.append(out)
    return stack_signals(per_symbol)


def run_baselines(
    lake: Lake,
    panel: MarketPanel,
    names: Sequence[str] = tuple(BASELINES),
    *,
    sim: SimConfig | None = None,
    risk: RiskConfig | None = None,
    policy: PolicyConfig | None = None,
    label_spec: LabelSpec | None = None,
) -> dict[str, BacktestResult]:
    """Backtest each named baseline on the same panel and configs; deterministic."""
    results = {}
    for name in names:
        signals = strategy_signals(lake, panel, name, policy=policy, label_spec=label_spec)
        results[name] = run_backtest(panel, signals, sim, risk)
    return results
