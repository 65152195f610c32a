"""Hard risk guard (spec 001 §14, seed 003 §4): reason codes that block an entry, never an exception.

The rules are one numba function, ``core.sim.kernel.risk_mask`` (kept in the simulator's kernel file
so that numba's cache sees every edit of them); it returns a bitmask, which the portfolio backtest
checks on every entry and ``check_risk`` here decodes into names. Codes, in bit order:

- ``INVALID_ORDER``: side not ±1, price not a positive number, leverage < 1 (reported alone).
- ``KILL_SWITCH``: the kill-switch is on. ``TRADING_DISABLED``: the daily loss limit fired today
  (entries stay off until the next UTC day; the book was asked to flatten).
- ``DAILY_LOSS_LIMIT``: equity is ``daily_loss_limit_pct`` or more below the day's starting equity.
- ``POSITION_OPEN``: the symbol already holds a position (one-way, no pyramiding).
- ``MAX_POSITIONS``: open positions + 1 > ``max_positions``.
- ``MAX_USED_MARGIN``: (used margin + new margin) / equity > ``max_used_margin_pct``.
- ``INSUFFICIENT_MARGIN``: new margin + entry fee > wallet − used margin (available balance).
- ``MAX_TOTAL_NOTIONAL`` / ``MAX_DIRECTIONAL_NOTIONAL`` / ``MAX_SYMBOL_NOTIONAL``: (exposure + new
  notional) / equity above ``max_total_notional_pct`` / ``max_directional_notional_pct`` (same side)
  / ``max_symbol_notional_pct``. Exposure is |qty| · last mark.
- ``MAX_BTC_BETA_NOTIONAL``: the entry raises |Σ side · β · notional| above ``max_btc_beta_notional_pct``
  of equity (β: ``SymbolRules.btc_beta``); an entry that lowers it is never blocked.
- ``ORDER_RATE_SECOND`` / ``ORDER_RATE_DAY``: orders already sent in the request's second / UTC day
  + 1 above ``max_orders_per_s`` / ``max_orders_per_day``. Market orders we send count (entries and
  SIGNAL/TIME/FLATTEN exits); the SL/TP conditional orders do not.
- ``MAX_SLIPPAGE``: |expected fill − reference price| > ``max_slippage_pct`` · reference.
- ``FILTER_MIN_NOTIONAL``: qty · mark < the symbol's MIN_NOTIONAL. ``FILTER_MARKET_LOT_SIZE``: qty
  (floored to MARKET_LOT_SIZE's step) is 0, below minQty or above maxQty. ``FILTER_PRICE``: an SL or
  TP trigger price outside PRICE_FILTER's [minPrice, maxPrice] or ≤ 0.
- ``LEVERAGE_BRACKET``: leverage above the bracket's initial leverage for the notional, or the
  notional beyond the symbol's last bracket.
- ``NO_PROTECTION``: no stop-loss price, or one on the winning side of the fill. Never a naked
  position (DESIGN.md): an entry without a valid stop is refused.

The venue and book checks (``INVALID_ORDER``, ``KILL_SWITCH``, ``POSITION_OPEN``,
``INSUFFICIENT_MARGIN``, the filters, ``LEVERAGE_BRACKET``, ``NO_PROTECTION``) always apply; the others only with a
``RiskConfig`` (``risk_limits(None)`` turns them off).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.config import RiskConfig
from core.sim import kernel as _k
from core.sim.account import AccountSnapshot
from core.sim.config import risk_vector as risk_limits
from core.sim.rules import SymbolRules, bracket_for
from core.sim.state import decode_risk_mask
from core.time import DAY_MS

#: Reason codes in bit order: code ``RISK_CODES[b]`` is bit ``1 << b`` of a mask.
RISK_CODES: tuple[str, ...] = _k.RISK_NAMES
RISK_BITS: dict[str, int] = {name: 1 << b for b, name in enumerate(RISK_CODES)}
__all__ = ["RISK_BITS", "RISK_CODES", "AccountSnapshot", "EntryRequest", "check_risk", "decode_risk_mask",
           "encode_risk_codes", "risk_limits"]  # fmt: skip


def encode_risk_codes(codes: tuple[str, ...] | list[str]) -> int:
    """Return the mask of reason codes (inverse of ``decode_risk_mask``)."""
    return sum(RISK_BITS[c] for c in set(codes))


@dataclass(frozen=True, slots=True)
class EntryRequest:
    """A market entry to be checked: quantity already floored to the step, prices in USDT."""

    symbol: str
    side: int  # +1 long, −1 short
    qty: float
    price: float  # expected fill price
    leverage: float
    ts_ms: int
    reference_price: float = math.nan  # price the decision saw; NaN: no slippage check
    mark_price: float = math.nan  # for MIN_NOTIONAL; NaN: ``price``
    sl_price: float = math.nan
    tp_price: float = math.nan


def check_risk(
    request: EntryRequest,
    account: AccountSnapshot,
    cfg: RiskConfig | None,
    rules: Mapping[str, SymbolRules] | None = None,
    fee_rate: float = 0.0004,
) -> tuple[str, ...]:
    """Return the reason codes that block ``request``; () means allowed. Never raises on bad values.

    The same rules as the backtest's (``risk_mask``); ``rules`` gives each symbol's filters, brackets
    and BTC beta (defaults: no filter, ``DEFAULT_BRACKETS``, beta 1); ``fee_rate`` prices the entry
    fee for the margin check.
    """
    rules = rules or {}
    try:
        acct, req = _pack(request, account, rules, fee_rate)
    except (TypeError, ValueError, OverflowError):
        return ("INVALID_ORDER",)
    return decode_risk_mask(int(_k.risk_mask(risk_limits(cfg), acct, req)))


def _pack(
    request: EntryRequest, account: AccountSnapshot, rules: Mapping[str, SymbolRules], fee_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    rule = rules.get(request.symbol, SymbolRules())
    ts = int(request.ts_ms)
    acct = _k.new_account(float(account.wallet_usdt))
    acct[_k.A_EQUITY] = account.equity_usdt
    acct[_k.A_USED_MARGIN] = account.used_margin_usdt
    acct[_k.A_DAY] = ts // DAY_MS
    acct[_k.A_DAY_START_EQUITY] = account.day_start_equity_usdt
    acct[_k.A_TRADING_ENABLED] = 1.0 if account.trading_enabled else 0.0
    acct[_k.A_KILL_SWITCH] = 1.0 if account.kill_switch else 0.0
    acct[_k.A_ORDER_SECOND] = ts // 1000
    acct[_k.A_ORDERS_IN_SECOND] = account.orders_this_second
    acct[_k.A_ORDERS_TODAY] = account.orders_today
    for symbol, signed in account.positions.items():
        beta = rules.get(symbol, SymbolRules()).btc_beta
        acct[_k.A_OPEN_POSITIONS] += 1
        acct[_k.A_TOTAL_NOTIONAL] += abs(signed)
        acct[_k.A_LONG_NOTIONAL if signed > 0 else _k.A_SHORT_NOTIONAL] += abs(signed)
        acct[_k.A_NET_BETA_NOTIONAL] += beta * signed
    f = rule.filters
    notional = float(request.qty) * float(request.price)
    bracket = bracket_for(rule.brackets, notional) if math.isfinite(notional) else None
    req = np.empty(_k.REQ_LEN)
    req[_k.R_SIDE] = request.side
    req[_k.R_QTY] = request.qty
    req[_k.R_PRICE] = request.price
    req[_k.R_REFERENCE_PRICE] = request.reference_price
    req[_k.R_MARK_PRICE] = request.mark_price
    req[_k.R_LEVERAGE] = request.leverage
    req[_k.R_MAX_LEVERAGE] = bracket.max_leverage if bracket is not None else math.nan
    req[_k.R_SL] = request.sl_price
    req[_k.R_TP] = request.tp_price
    req[_k.R_TS] = ts
    req[_k.R_BETA] = rule.btc_beta
    req[_k.R_SYMBOL_NOTIONAL] = abs(account.positions.get(request.symbol, 0.0))
    req[_k.R_HAS_POSITION] = 1.0 if request.symbol in account.positions else 0.0
    req[_k.R_FEE_RATE] = fee_rate
    req[_k.R_MIN_PRICE] = f.min_price
    req[_k.R_MAX_PRICE] = f.max_price
    req[_k.R_MIN_QTY] = f.min_qty
    req[_k.R_MAX_QTY] = f.max_qty
    req[_k.R_MIN_NOTIONAL] = f.min_notional_usdt
    return acct, req
