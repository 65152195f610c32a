"""Fill simulator (spec 001 §10–11, §14): one set of rules for the backtest, shadow trading and RL.

Book. One USDT account, one-way isolated positions (at most one per symbol, no pyramiding).
Quantities in base asset, prices and money in USDT, times epoch ms; side d = +1 long, −1 short.

Entry (a market order, taker). Reference price: the open of the bar after the decision (backtest),
or the ask for a long / bid for a short (realtime). Fill ``ref · (1 + d·s)`` with the slippage
fraction ``s = slippage_k · ATR / P + impact_k · sqrt(min(1, N / V))``: the first part is the labels'
``core.costs.slippage_fraction`` (ATR and price P of the decision bar; fixed for the trade, exits
reuse it), the second a square-root market impact of the order's notional N against the quote
volume V of the last closed bar (unknown volume: participation 1). ``impact_k = 0`` gives exactly
the labels' fills. Quantity ``N / fill`` floored to MARKET_LOT_SIZE's step; SL/TP trigger prices
(given, or the labels' distances from the fill) rounded to the tick towards the fill. Isolated margin
``qty · fill / leverage`` moves from the available balance into the position; the taker fee
``fee_rate · qty · fill`` leaves the wallet. Every entry first passes the risk guard
(``core.risk``; a blocked one is a recorded risk event with its reason codes).

Exits. SL and TP are STOP_MARKET / TAKE_PROFIT_MARKET orders triggered by the mark price:

- Per 1m bar (backtest): the mark's high/low decide. Adverse and favourable touch in one bar → SL.
  A triggered order fills at its trigger price, or — when the mark opened beyond the trigger (a gap)
  — at the worse of trigger and the bar's last-price open; then slippage ``exit = ref · (1 − d·s)``
  (s with the exit bar's volume). For TP the worse of trigger and open is always the trigger, as in
  the labels. Trigger exits are timed at the bar's close (``ts + 1m``).
- Per mark tick (realtime): the mark at or beyond a trigger fills a market exit at the touch (bid
  for a long, ask for a short) with slippage.
- Time limit (``max_hold_bars``, the labels' horizon): exit at the close of the last held bar.
- SIGNAL (the strategy's exit flag, at the next open), FLATTEN (daily loss limit, at the next open;
  or ``FillSimulator.flatten``), END (end of the backtest, at the last close): market exits with
  slippage. Every exit pays the taker fee.

Liquidation (isolated, one-way). Bracket of the entry notional (``core.sim.rules``: maintenance
margin rate MMR and amount cum; fixed for the position). Liquidation price
``(margin + cum − d·qty·entry) / (qty·MMR − d·qty)``, where the mark leaves only maintenance margin
``qty·mark·MMR − cum``; recomputed when funding changes the margin. Per bar the position is
liquidated when the mark reaches it before the stop: the bar opens beyond it, it lies no further
from the entry than the stop, or the stop is not touched. The liquidation fills at the liquidation
price whatever the gap (the insurance fund takes the rest) with a clearance fee equal to the margin
left there: the trade loses its isolated margin and its entry fee, no more.

Funding. At each real funding time F of the symbol's funding history (4 h or 8 h or irregular,
never a fixed grid) a position pays ``d · qty · mark_F · rate`` (a long pays positive rates), taken
from its isolated margin. In bars, F belongs to the bar with ``ts < F ≤ ts + 1m`` and is settled
before that bar's triggers at its mark close: a position entered at the bar's open pays it, one
closed inside the bar pays it too (held to the bar's close, the labels' rule); one closed at the
open (SIGNAL, FLATTEN) does not.

Account. ``wallet`` = initial + Σ realized PnL − fees − funding paid; ``unrealized`` = Σ d·qty·
(mark − entry) at the last marks; ``equity = wallet + unrealized``; ``used margin`` = Σ isolated
margins. Daily PnL is equity minus the equity at the start of the UTC day; the daily loss limit
disables entries for the rest of that day and flattens at the next open. Consecutive losses count
trades with pnl < 0 since the last one ≥ 0. A trade's ``pnl = d·qty·(exit − entry) − fees −
funding`` = gross PnL at reference prices − fees − slippage − funding.
"""

from core.sim.config import SimConfig, sim_config_for
from core.sim.portfolio import (
    BacktestResult,
    MarketPanel,
    build_panel,
    panel_from_market,
    run_backtest,
    signals_from_frame,
)
from core.sim.rules import (
    DEFAULT_BRACKETS,
    LeverageBracket,
    SymbolFilters,
    SymbolRules,
    parse_leverage_brackets,
    parse_symbol_filters,
)
from core.sim.simulator import FillSimulator
from core.sim.state import BookState, Position

__all__ = [
    "DEFAULT_BRACKETS",
    "BacktestResult",
    "BookState",
    "FillSimulator",
    "LeverageBracket",
    "MarketPanel",
    "Position",
    "SimConfig",
    "SymbolFilters",
    "SymbolRules",
    "build_panel",
    "panel_from_market",
    "parse_leverage_brackets",
    "parse_symbol_filters",
    "run_backtest",
    "signals_from_frame",
    "sim_config_for",
]
