"""Growable event logs of the simulator and their conversion to frames (``core.metrics`` contract)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.sim import kernel as _k


class SimLogs:
    """The kernel's append-only trade, fill and risk-event arrays; grown by doubling when full."""

    def __init__(self, capacity: int = 1024) -> None:
        self.trades = np.full((capacity, _k.TRADE_LEN), np.nan)
        self.fills = np.full((2 * capacity, _k.FILL_LEN), np.nan)  # an entry and an exit per trade
        self.events = np.full((capacity, _k.EVENT_LEN), np.nan)

    def ensure_room(self, acct: np.ndarray, n_symbols: int) -> None:
        """Grow the logs until one more bar of ``n_symbols`` symbols fits (``kernel.has_room``)."""
        while not _k.has_room(acct, self.trades, self.fills, self.events, n_symbols):
            self.trades = _grow(self.trades)
            self.fills = _grow(self.fills)
            self.events = _grow(self.events)


def decode_risk_mask(mask: int) -> tuple[str, ...]:
    """Return the risk reason codes set in ``mask``, in bit order (``core.risk``); () for 0."""
    return tuple(name for b, name in enumerate(_k.RISK_NAMES) if int(mask) >> b & 1)


def _grow(a: np.ndarray) -> np.ndarray:
    out = np.full((max(2 * len(a), 16), a.shape[1]), np.nan)
    out[: len(a)] = a
    return out


def trades_frame(trades: np.ndarray, n: int, symbols: Sequence[str]) -> pd.DataFrame:
    """Return the first ``n`` trade rows as the ``core.metrics`` trade list plus simulator columns.

    Contract columns: symbol, side, entry_ts, exit_ts, entry_price, exit_price (fills, slippage
    included), qty, notional (entry), exit_reason, fees (both fills; a liquidation's clearance fee
    included), slippage (both fills vs their reference prices), funding (paid; < 0 received), pnl
    (``side·qty·(exit − entry) − fees − funding``), return (pnl / notional). Extra: position_id,
    entry/exit_reference_price, leverage, initial_margin, liquidation_price (at the exit),
    sl_price, tp_price, gross_pnl (at reference prices), bars_held. In the order they closed.
    """
    t = trades[:n]
    names = np.asarray(list(symbols) or [""], dtype=object)
    reasons = np.asarray(_k.REASON_NAMES, dtype=object)
    notional = t[:, _k.T_NOTIONAL]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = t[:, _k.T_PNL] / notional
    return pd.DataFrame(
        {
            "symbol": names[t[:, _k.T_SYMBOL].astype(np.int64)],
            "side": t[:, _k.T_SIDE].astype(np.int8),
            "entry_ts": t[:, _k.T_ENTRY_TS].astype(np.int64),
            "exit_ts": t[:, _k.T_EXIT_TS].astype(np.int64),
            "entry_price": t[:, _k.T_ENTRY_PRICE],
            "exit_price": t[:, _k.T_EXIT_PRICE],
            "qty": t[:, _k.T_QTY],
            "notional": notional,
            "exit_reason": reasons[t[:, _k.T_REASON].astype(np.int64)],
            "fees": t[:, _k.T_FEES],
            "slippage": t[:, _k.T_SLIPPAGE],
            "funding": t[:, _k.T_FUNDING],
            "pnl": t[:, _k.T_PNL],
            "return": ret,
            "position_id": t[:, _k.T_ID].astype(np.int64),
            "entry_reference_price": t[:, _k.T_ENTRY_REF],
            "exit_reference_price": t[:, _k.T_EXIT_REF],
            "leverage": t[:, _k.T_LEVERAGE],
            "initial_margin": t[:, _k.T_INITIAL_MARGIN],
            "liquidation_price": t[:, _k.T_LIQ],
            "sl_price": t[:, _k.T_SL],
            "tp_price": t[:, _k.T_TP],
            "gross_pnl": t[:, _k.T_GROSS],
            "bars_held": t[:, _k.T_BARS_HELD].astype(np.int64),
        }
    )


def fills_frame(fills: np.ndarray, n: int, symbols: Sequence[str]) -> pd.DataFrame:
    """Return the first ``n`` fills: position_id, symbol, ts, side (+1 buy, −1 sell), qty, price,
    reference_price, fee (USDT; a liquidation's is the clearance fee), reason (ENTRY or the exit's)."""
    f = fills[:n]
    names = np.asarray(list(symbols) or [""], dtype=object)
    reasons = np.asarray(_k.REASON_NAMES, dtype=object)
    return pd.DataFrame(
        {
            "position_id": f[:, _k.F_ID].astype(np.int64),
            "symbol": names[f[:, _k.F_SYMBOL].astype(np.int64)],
            "ts": f[:, _k.F_TS].astype(np.int64),
            "side": f[:, _k.F_SIDE].astype(np.int8),
            "qty": f[:, _k.F_QTY],
            "price": f[:, _k.F_PRICE],
            "reference_price": f[:, _k.F_REF],
            "fee": f[:, _k.F_FEE],
            "reason": reasons[f[:, _k.F_REASON].astype(np.int64)],
        }
    )


def events_frame(events: np.ndarray, n: int, symbols: Sequence[str]) -> pd.DataFrame:
    """Return the first ``n`` risk events: ts, symbol ("" for an account event such as the daily
    loss limit firing), side, mask and codes (comma-separated ``core.risk`` reason codes)."""
    e = events[:n]
    names = np.asarray([*symbols, ""], dtype=object)  # index −1: account event
    masks = e[:, _k.E_MASK].astype(np.int64)
    codes = [",".join(decode_risk_mask(int(m))) for m in masks]
    return pd.DataFrame(
        {
            "ts": e[:, _k.E_TS].astype(np.int64),
            "symbol": names[e[:, _k.E_SYMBOL].astype(np.int64)],
            "side": e[:, _k.E_SIDE].astype(np.int8),
            "mask": masks,
            "codes": np.asarray(codes, dtype=object),
        }
    )


def curve_frame(curve: np.ndarray) -> pd.DataFrame:
    """Return the equity curve: the ``core.metrics`` columns (ts = bar close, equity, wallet,
    unrealized, used_margin, open_positions) plus total/long/short notional, daily_pnl,
    trading_enabled and consecutive_losses, one row per bar."""
    c = curve
    return pd.DataFrame(
        {
            "ts": c[:, _k.K_TS].astype(np.int64),
            "equity": c[:, _k.K_EQUITY],
            "wallet": c[:, _k.K_WALLET],
            "unrealized": c[:, _k.K_UNREALIZED],
            "used_margin": c[:, _k.K_USED_MARGIN],
            "open_positions": c[:, _k.K_OPEN_POSITIONS].astype(np.int64),
            "total_notional": c[:, _k.K_TOTAL_NOTIONAL],
            "long_notional": c[:, _k.K_LONG_NOTIONAL],
            "short_notional": c[:, _k.K_SHORT_NOTIONAL],
            "daily_pnl": c[:, _k.K_DAILY_PNL],
            "trading_enabled": c[:, _k.K_TRADING_ENABLED] != 0,
            "consecutive_losses": c[:, _k.K_CONSECUTIVE_LOSSES].astype(np.int64),
        }
    )


@dataclass(frozen=True, slots=True)
class Position:
    """An open position as the simulator holds it (USDT, base-asset qty, epoch ms)."""

    symbol: str
    side: int
    qty: float
    entry_price: float
    entry_ts_ms: int
    sl_price: float
    tp_price: float
    liquidation_price: float
    margin_usdt: float  # isolated margin now (initial margin minus funding paid)
    initial_margin_usdt: float
    leverage: float
    mark_price: float
    unrealized_pnl_usdt: float
    funding_paid_usdt: float
    bars_held: int
    position_id: int
    entry_reference_price: float  # the entry's reference (ask/bid or next open), before slippage
    entry_fee_usdt: float  # taker fee of the entry fill
    entry_slippage_usdt: float  # side·qty·(entry_price − entry_reference_price)


@dataclass(frozen=True, slots=True)
class BookState:
    """A copy of a simulator's book, what a restarted shadow book restores (``FillSimulator.restore_book``).

    ``account`` is the account vector and ``positions`` the position table (one row per symbol, in
    ``symbols`` order), float64 with NaN where unset. The trade, fill and event logs are not part of
    it: a restored book reports only the trades it closes itself.
    """

    symbols: tuple[str, ...]
    account: np.ndarray
    positions: np.ndarray


def position_from_row(symbol: str, row: np.ndarray) -> Position:
    """Return the Position of one row of the kernel's position table (which must be open)."""
    side = int(row[_k.P_SIDE])
    return Position(
        symbol=symbol,
        side=side,
        qty=float(row[_k.P_QTY]),
        entry_price=float(row[_k.P_ENTRY_PRICE]),
        entry_ts_ms=int(row[_k.P_ENTRY_TS]),
        sl_price=float(row[_k.P_SL]),
        tp_price=float(row[_k.P_TP]),
        liquidation_price=float(row[_k.P_LIQ]),
        margin_usdt=float(row[_k.P_MARGIN]),
        initial_margin_usdt=float(row[_k.P_INITIAL_MARGIN]),
        leverage=float(row[_k.P_LEVERAGE]),
        mark_price=float(row[_k.P_MARK]),
        unrealized_pnl_usdt=float(side * row[_k.P_QTY] * (row[_k.P_MARK] - row[_k.P_ENTRY_PRICE])),
        funding_paid_usdt=float(row[_k.P_FUNDING]),
        bars_held=int(row[_k.P_BARS_HELD]),
        position_id=int(row[_k.P_ID]),
        entry_reference_price=float(row[_k.P_ENTRY_REF]),
        entry_fee_usdt=float(row[_k.P_ENTRY_FEE]),
        entry_slippage_usdt=float(row[_k.P_ENTRY_SLIPPAGE]),
    )
