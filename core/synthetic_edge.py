"""The oracle of a synthetic market's planted edge: its strength as a Sharpe ratio after costs.

``core.synthetic`` plants a lead-lag drift from BTC into every other symbol (``edge_strength``). The
oracle knows that drift exactly: at each bar t's close it takes ``E_t`` (``core.synthetic.
expected_drift``: the planted drift of the next ``LabelSpec.h_bars`` bars known at t, a log return)
and asks for an entry in the direction of ``E_t`` when

    ``|E_t| > cost_multiple · (2 · fee_rate + 2 · slippage_k · ATR_t / close_t)``,

the round trip's fees and ATR slippage (``core.costs``; the simulator's small square-root impact is
left out of the rule, not out of the fills). Entries are the policy's (``PolicyConfig``: notional
``position_notional_pct`` of equity, ``leverage``) with the label preset's barriers: SL at
``close − d·k_sl·ATR``, TP at ``close + d·k_tp·ATR``, time exit after ``h_bars``, ATR the labels'
15m ATR at t's close (``MarketPanel.atr``). They run through the one simulator
(``core.sim.run_backtest``): an entry waits for the symbol to be flat, fills at t + 1's open with
slippage, and pays fees and funding. The oracle's Sharpe is ``core.metrics.summarize``'s: per-minute
equity returns, annualised.

The oracle fits nothing, so every window is out of sample for it. Run on the edge-free market with a
planted strength (``strength=``), it trades noise and pays costs: the negative control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.metrics import summarize
from core.signals import BarSignals, empty_signals
from core.sim import BacktestResult, MarketPanel, panel_from_market, run_backtest, sim_config_for
from core.synthetic import SyntheticMarket, btc_factor_returns, edge_loading, expected_drift
from core.time import MINUTE_MS

#: The oracle enters when the known drift exceeds this many round-trip costs.
ORACLE_COST_MULTIPLE = 3.0


@dataclass(frozen=True, slots=True)
class OracleResult:
    """The oracle's backtest: the edge strength it assumed, its Sharpe and headline metrics."""

    strength: float
    sharpe: float
    summary: dict[str, float]
    backtest: BacktestResult

    @property
    def trades(self) -> int:
        return len(self.backtest.trades)

    @property
    def trade_sharpe(self) -> float:
        """Mean over sd (ddof 1) of the trades' net returns; NaN with fewer than 2 trades."""
        r = self.backtest.trades["return"].to_numpy(np.float64)
        sd = float(r.std(ddof=1)) if len(r) > 1 else math.nan
        return float(r.mean()) / sd if sd > 0 else math.nan


def oracle_expected_moves(
    market: SyntheticMarket, *, strength: float | None = None, horizon_bars: int | None = None
) -> dict[str, np.ndarray]:
    """Return per symbol ``E_t``: the planted drift of bars t + 1 .. t + horizon_bars known at t's close.

    ``strength`` defaults to the market's ``edge_strength`` (0: all zeros); ``horizon_bars`` to the
    label preset's ``h_bars``. Log returns, one per bar of the market. Uses data up to t's close.
    """
    params = (
        market.params if strength is None else market.params.model_copy(update={"edge_strength": strength})
    )
    horizon = LabelSpec().h_bars if horizon_bars is None else horizon_bars
    f = btc_factor_returns(market)
    return {s: expected_drift(f, edge_loading(market.meta[s], params), horizon) for s in market.symbols}


def oracle_signals(
    market: SyntheticMarket,
    panel: MarketPanel,
    *,
    strength: float | None = None,
    label: LabelSpec | None = None,
    policy: PolicyConfig | None = None,
    cost_multiple: float = ORACLE_COST_MULTIPLE,
) -> BarSignals:
    """Return the oracle's entry intents on ``panel`` (a window of ``market``'s bars, its symbols).

    Enters in the direction of the known drift ``E_t`` when ``|E_t|`` exceeds ``cost_multiple``
    round-trip costs (module docstring); SL/TP from the panel's close and ATR. Uses data up to t's close.
    """
    label = label or LabelSpec()
    policy = policy or PolicyConfig()
    if cost_multiple < 0:
        raise ValueError(f"cost_multiple must be ≥ 0, got {cost_multiple}")
    rows = (panel.ts - market.start_ms) // MINUTE_MS
    if len(rows) and (rows[0] < 0 or rows[-1] >= market.n_minutes):
        raise ValueError("oracle: the panel's bars are outside the market's span")
    moves = oracle_expected_moves(market, strength=strength, horizon_bars=label.h_bars)
    expected = np.stack([moves[s][rows] for s in panel.symbols], axis=1)
    with np.errstate(invalid="ignore"):
        cost = 2 * label.fee_rate + 2 * label.slippage_k * panel.atr / panel.close
        enter = (np.abs(expected) > cost_multiple * cost) & (panel.atr > 0) & (panel.close > 0)
    d = np.where(enter, np.sign(expected), 0.0)
    out = empty_signals(panel.shape)
    out.direction[:] = d.astype(np.int8)
    out.size_fraction[enter] = policy.position_notional_pct
    out.leverage[enter] = policy.leverage
    out.sl_price[enter] = (panel.close - d * label.k_sl * panel.atr)[enter]
    out.tp_price[enter] = (panel.close + d * label.k_tp * panel.atr)[enter]
    return out


def oracle_backtest(
    market: SyntheticMarket,
    *,
    strength: float | None = None,
    label: LabelSpec | None = None,
    policy: PolicyConfig | None = None,
    risk: RiskConfig | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    cost_multiple: float = ORACLE_COST_MULTIPLE,
) -> OracleResult:
    """Backtest the oracle on ``market``'s bars in [start_ms, end_ms) (default: all) and return its Sharpe.

    The simulator is the label preset's (``core.sim.sim_config_for``: fee, slippage, ``h_bars`` time
    exit) with the policy's leverage; marks are the market's mark candles; ATR is warm from the bars
    before ``start_ms``. ``risk`` None: venue and book checks only. ``strength`` defaults to the
    market's own (the null market's oracle never trades: Sharpe NaN).
    """
    label = label or LabelSpec()
    policy = policy or PolicyConfig()
    panel = panel_from_market(
        market,
        atr_timeframe=label.atr_timeframe,
        atr_period=label.atr_period,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    signals = oracle_signals(
        market, panel, strength=strength, label=label, policy=policy, cost_multiple=cost_multiple
    )
    config = sim_config_for(label, policy)
    result = run_backtest(panel, signals, config, risk)
    summary = summarize(result.trades, result.equity)
    used = market.params.edge_strength if strength is None else float(strength)
    return OracleResult(strength=used, sharpe=summary["sharpe"], summary=summary, backtest=result)
