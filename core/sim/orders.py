"""What a market order by quantity did to the book (``FillSimulator.fill_order``), the book's last exit
fill, and the maintenance terms of an open position that the paper exchange shows besides ``Position``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OrderFill:
    """One market order by quantity: refused (``codes``, nothing changed) or filled.

    ``closed_qty`` reduced the opposite position, ``opened_qty`` opened or added on the order's side
    (both: a flip); ``price`` is the fill, ``fee_usdt`` the taker fee of the whole order and
    ``realized_pnl_usdt`` the closed part's ``position side · qty · (fill − entry)``, before fees.
    A dry run fills in what the order would do.
    """

    codes: tuple[str, ...]
    side: int
    closed_qty: float
    opened_qty: float
    price: float
    fee_usdt: float
    realized_pnl_usdt: float

    @property
    def filled(self) -> bool:
        return not self.codes


@dataclass(frozen=True, slots=True)
class ExitFill:
    """The last exit fill of the book: a close, a part of one, a trigger or a liquidation."""

    symbol: str
    side: int  # of the fill: −1 sells a long, +1 buys back a short
    qty: float
    price: float
    fee_usdt: float  # a liquidation's is the clearance fee
    realized_pnl_usdt: float  # position side · qty · (fill − entry), before fees
    reason: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class MarginTerms:
    """An open position's maintenance terms: its leverage bracket's rate and amount.

    Maintenance margin at mark M: ``qty · M · maint_margin_rate − maint_amount_usdt``.
    """

    maint_margin_rate: float
    maint_amount_usdt: float  # Binance "cum"
