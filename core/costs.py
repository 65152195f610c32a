"""Trading-cost rules shared by the label kernel and the fill simulator (spec 001 §8.1, §10.1).

One definition of slippage, fill prices, fees and net return, so that a label's ``ret_net`` and a
simulated trade's PnL are computed by the same formulas. Every function is a numba ``njit`` function
and also callable from plain Python. Prices in USDT; fractions are of the entry fill's notional.

- Slippage fraction ``s = slippage_k · ATR / price``: each fill moves price against us by
  ``slippage_k`` ATRs (volatility-proportional; the ATR is the one the barriers use, taken at the
  decision bar). Preset ``slippage_k = 0.15`` with the 15m ATR is a few bps on BTC: conservative.
- Entry fill ``ref · (1 + d·s)``, exit fill ``ref · (1 − d·s)`` with ``d = +1`` long, ``−1`` short.
- Fees: taker on both fills, ``fee_rate · (entry + exit) / entry``.
- Funding: ``d · Σ rate_k`` over the funding times crossed while holding, as a fraction of the entry
  notional (a long pays positive rates). Using entry notional instead of the mark price at each
  funding time is off by rate × price change, below 1e-6 for any realistic holding.
"""

from __future__ import annotations

import numba as nb


@nb.njit(cache=True)
def slippage_fraction(slippage_k: float, atr: float, price: float) -> float:
    """Return the adverse price move of one fill, as a fraction of price: ``slippage_k · atr / price``."""
    return slippage_k * atr / price


@nb.njit(cache=True)
def entry_fill_price(reference_price: float, direction: int, slippage: float) -> float:
    """Return the fill price of an entry at ``reference_price``: worse by ``slippage`` (a fraction)."""
    return reference_price * (1.0 + direction * slippage)


@nb.njit(cache=True)
def exit_fill_price(reference_price: float, direction: int, slippage: float) -> float:
    """Return the fill price of an exit at ``reference_price``: worse by ``slippage`` (a fraction)."""
    return reference_price * (1.0 - direction * slippage)


@nb.njit(cache=True)
def net_return(
    direction: int, entry_price: float, exit_price: float, fee_rate: float, funding_rate_sum: float
) -> float:
    """Return the net return of a round trip, as a fraction of the entry notional.

    ``d·(exit − entry)/entry − fee_rate·(entry + exit)/entry − d·funding_rate_sum``; prices are fills
    (slippage included), ``funding_rate_sum`` the sum of the funding rates crossed while holding.
    """
    gross = direction * (exit_price - entry_price) / entry_price
    fees = fee_rate * (entry_price + exit_price) / entry_price
    return gross - fees - direction * funding_rate_sum
